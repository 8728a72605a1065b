"""A bounded cache of encoded media, by the file's content: a picture or clip met again (the
same file in several prompts, a prompt scored again) is decoded and preprocessed once per
worker process and input builder.

Media files in Quorum are content-addressed, but a key made of the bytes themselves also holds
for any other path (the playground's, tests', a file rewritten in place): hashing a file costs
a small fraction of decoding it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_MEDIA_CACHE_BYTES", "MEDIA_CACHE", "MediaCache", "file_digest"]

DEFAULT_MEDIA_CACHE_BYTES = 256 * 2**20


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """The BLAKE2b digest of a file's bytes; `None` when it cannot be read (the loader then
    reports why)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").hexdigest()
    except OSError:
        return None


def _nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes held by the tensors and arrays of `value` (a dataclass, list or dict of them)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v, seen) for v in value.values())
    return 0


class MediaCache:
    """Least-recently-used values by key, bounded by the bytes of their tensors.

    Values are shared between the callers that get them: they must not be changed in place
    (the input builder's visuals are only read, and batches copy their pixels).

    Args:
        max_bytes (`int`): Bound on the tensors' bytes held; 0 disables the cache. A value
            larger than the bound is not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEDIA_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Any, Future] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any) -> Any | None:
        """The value stored under `key` (now the most recently used), or `None`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The value under `key`, computed by `compute()` on a miss. Threads asking for a key
        that another thread is computing wait for its value (or its exception): a file is
        decoded once however many prefetch threads meet it at the same time."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
                self.misses += 1
            else:
                self.hits += 1
        if not owner:
            return pending.result()
        try:
            value = compute()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            self.put(key, value)
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                del self._pending[key]

    def put(self, key: Any, value: Any) -> None:
        """Store `value`, evicting the least recently used entries beyond `max_bytes`."""
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._entries[key] = (value, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.nbytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


# The worker process's cache, shared by the input builders of every model version it loads
# (each builder keys its entries with a scope of its own): one bound for the process.
MEDIA_CACHE = MediaCache()
