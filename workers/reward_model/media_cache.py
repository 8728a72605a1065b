"""Encoded media kept by the file's content, in two tiers.

- :class:`MediaCache`: a bounded LRU in each worker process: a picture or clip met again (the
  same file in several prompts, a prompt scored again) is decoded and preprocessed once per
  worker process and input builder.
- :class:`MediaStore`: a directory of decoded frames, already resized to the model's size
  (uint8, zlib-compressed), by file content and the builder's preprocessing settings: filled
  by the first scoring of a file, read by every later scoring run and every worker process
  sharing the directory (the workers use ``<QUORUM_DATA_DIR>/cache/media``). What it saves is
  the decoding and resizing (nine tenths of a media file's preprocessing); rescaling,
  normalising and patchifying are redone from the stored pixels, so the model gets the same
  values bit for bit. Anything in it can be deleted at any time. It is bounded
  (``max_bytes``, the workers' ``QUORUM_MEDIA_STORE_MB``): past the bound, the entries used
  longest ago are deleted (an entry's modification time is its last use: reading an entry
  touches it, so the eviction does not depend on the file system recording access times).

Media files in Quorum are content-addressed, but a key made of the bytes themselves also holds
for any other path (the playground's, tests', a file rewritten in place): hashing a file costs
a small fraction of decoding it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.media import STORE_MAGIC, store_entry, write_store_file

try:
    # ISA-L's inflate (the `isal` package, `zlib`'s interface; pinned in requirements.txt): the
    # same bytes out of an entry's zlib stream, in about two thirds of zlib's time. Without the
    # package, zlib.
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - depends on what is installed
    _inflater = zlib

# What a damaged entry's inflating raises (isal's errors are not `zlib.error`).
_INFLATE_ERRORS = (zlib.error, _inflater.error)

__all__ = [
    "DEFAULT_MEDIA_CACHE_BYTES",
    "DEFAULT_MEDIA_STORE_BYTES",
    "MEDIA_CACHE",
    "MEDIA_STORE",
    "MediaCache",
    "MediaStore",
    "file_digest",
]

logger = logging.getLogger(__name__)

DEFAULT_MEDIA_CACHE_BYTES = 256 * 2**20
DEFAULT_MEDIA_STORE_BYTES = 4 * 2**30


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """The BLAKE2b digest of a file's bytes; `None` when it cannot be read (the loader then
    reports why)."""
    try:
        # Unbuffered: one read of the whole file needs no buffer of the reader's own.
        with open(path, "rb", buffering=0) as handle:
            if os.fstat(handle.fileno()).st_size <= _READ_WHOLE_BYTES:
                # One read: `hashlib.file_digest` allocates a 256 KiB buffer per call, which
                # costs more than hashing a demo picture (the same digest either way).
                return hashlib.blake2b(handle.read()).hexdigest()
            return hashlib.file_digest(handle, "blake2b").hexdigest()
    except OSError:
        return None


# Files up to this size are hashed from one read (`file_digest`).
_READ_WHOLE_BYTES = 2**20

# Values `_nbytes` counts as holding no tensor, without recursing.
_SCALARS = (str, int, float, bool, bytes, type(None))


def _nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes held by the tensors and arrays of `value` (a dataclass, list or dict of them)."""
    if isinstance(value, _SCALARS):
        return 0  # nothing to count, and nothing to keep in `seen` (a visual's numbers)
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = getattr(value, "__dict__", None)
        if fields is None:  # a dataclass with slots
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _nbytes_of(fields.values(), seen)
    if isinstance(value, (list, tuple)):
        return _nbytes_of(value, seen)
    if isinstance(value, dict):
        return _nbytes_of(value.values(), seen)
    return 0


def _nbytes_of(values: Any, seen: set[int]) -> int:
    # Scalars skipped here, not in a call each (a visual's grid, kind and numbers).
    return sum(_nbytes(v, seen) for v in values if not isinstance(v, _SCALARS))


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

    def __contains__(self, key: Any) -> bool:
        """Whether `key` is held or being computed (neither counted nor made recent)."""
        with self._lock:
            return key in self._entries or key in self._pending

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


class MediaStore:
    """Decoded frames on disk, by (the builder's settings, kind, the file's digest).

    An entry is the frames a builder resized for the model, ``(T, H, W, 3)`` uint8, and a few
    numbers it needs besides (a clip's sampling rate, its frame times) as JSON. Files are
    written whole and renamed into place, so concurrent workers never read half an entry; an
    unreadable entry is a miss (and is written again). Failures to write are logged, never
    raised: the store only saves time.

    The store holds at most about `max_bytes`: when the entries this process knows of (the
    folder's size at its last sweep, plus what it wrote since) pass the bound, it sweeps the
    folder and deletes the least recently used entries (oldest modification time: a read
    touches its entry) down to `LOW_WATER` of the bound. Several processes sharing the
    folder sweep in turn (a lock on the folder); each also sweeps after writing a `SWEEP_SHARE` of
    the bound, so what the others wrote is counted too.

    Args:
        directory (`str` or `os.PathLike`, *optional*): Where entries live; `None` turns the
            store off.
        max_bytes (`int`): Bound on the entries' bytes on disk; 0 turns the store off.
    """

    _MAGIC = STORE_MAGIC
    LOW_WATER = 0.9
    SWEEP_SHARE = 1 / 8
    # Left-over temporary files (a process killed mid-write) older than this are deleted.
    STALE_TEMPORARY_SECONDS = 3600

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MEDIA_STORE_BYTES,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.evictions = 0
        self._warned = False
        self._lock = threading.Lock()
        self._known_bytes: int | None = None  # the folder's size at the last sweep
        self._written = 0  # bytes written by this process since then
        self._made: set[Path] = set()
        self.max_bytes = max_bytes
        self.directory = None if directory is None else Path(directory)

    def configure(self, directory: str | os.PathLike[str] | None, max_bytes: int) -> None:
        """Point the store at `directory` with bound `max_bytes` (0: off); a change of folder
        forgets what this process knew of the old one."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        directory = None if directory is None or not max_bytes else Path(directory)
        with self._lock:
            if directory != self.directory:
                self._known_bytes, self._written = None, 0
                self._made.clear()
            self.directory, self.max_bytes = directory, max_bytes

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.max_bytes > 0

    def _path(self, scope: str, kind: str, digest: str) -> Path:
        return Path(self._where(scope, kind, digest))

    def _where(self, scope: str, kind: str, digest: str) -> str:
        """`_path` as a string (a read or a lookup needs no `Path`: three joins cost about a
        tenth of reading a small entry)."""
        assert self.directory is not None
        return f"{self.directory}{os.sep}{scope}{os.sep}{digest[:2]}{os.sep}{digest}.{kind}"

    def contains(self, scope: str, kind: str, digest: str) -> bool:
        """Whether an entry is there (not whether it reads: `read` says)."""
        return self.enabled and os.path.isfile(self._where(scope, kind, digest))

    def read(self, scope: str, kind: str, digest: str) -> tuple[np.ndarray, dict] | None:
        """The frames and the numbers stored for the file, or `None` (then decode it)."""
        if not self.enabled:
            return None
        path = self._where(scope, kind, digest)
        try:
            with open(path, "rb", buffering=0) as handle:  # read whole: no buffer of its own
                data = handle.read()
        except OSError:
            self.misses += 1
            return None
        try:
            if not data.startswith(self._MAGIC):
                raise ValueError("not a media store entry")
            end = data.index(b"\n", len(self._MAGIC))
            header = json.loads(data[len(self._MAGIC) : end].decode())
            shape = tuple(int(v) for v in header["shape"])
            # Inflated straight into a buffer of the frames' size (zlib's default, 16 KiB,
            # grows several times for a clip); no copy of the compressed bytes.
            raw = _inflater.decompress(
                memoryview(data)[end + 1 :], bufsize=max(1, math.prod(shape))
            )
            frames = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(shape)
            meta = dict(header["meta"])
        except (ValueError, KeyError, TypeError, *_INFLATE_ERRORS) as exc:
            logger.warning("media store: %s unreadable (%s), decoding the file again", path, exc)
            self.misses += 1
            return None
        # Its last use, for the eviction (access times are often not kept); an entry evicted
        # meanwhile, or a read-only store, was read all the same.
        with contextlib.suppress(OSError):
            os.utime(path)
        self.hits += 1
        return frames, meta

    def write(self, scope: str, kind: str, digest: str, frames: np.ndarray, meta: dict) -> None:
        """Store the frames a builder made from the file (best effort)."""
        if not self.enabled:
            return
        data = store_entry(frames, meta)
        try:
            write_store_file(self._path(scope, kind, digest), data, made=self._made)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("media store: cannot write under %s (%s)", self.directory, exc)
            return
        self.account(len(data))

    def path_for(self, scope: str, kind: str, digest: str) -> str | None:
        """Where the entry goes, for a decoding process that writes it itself (then
        `account`); `None` when the store is off."""
        return str(self._path(scope, kind, digest)) if self.enabled else None

    def account(self, size: int) -> None:
        """Count an entry of `size` bytes written (here, or by a decoding process for this
        store): the bound is kept with it."""
        self.writes += 1
        self._wrote(size)

    def _wrote(self, size: int) -> None:
        with self._lock:
            self._written += size
            due = (
                self._known_bytes is None
                or self._known_bytes + self._written > self.max_bytes
                or self._written > self.max_bytes * self.SWEEP_SHARE
            )
        if due:
            self.sweep()

    def sweep(self) -> int:
        """Measure the folder and delete the least recently used entries while it holds more
        than `max_bytes` (down to `LOW_WATER` of it); returns the bytes it holds after. Another
        process sweeping the same folder at the time makes this one skip (returns -1)."""
        directory = self.directory
        if directory is None or not directory.is_dir():
            return 0
        try:
            # The folder itself is the lock between processes (flock on its descriptor).
            lock = os.open(directory, os.O_RDONLY)
        except OSError:
            return -1
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return -1  # another process is sweeping it
            entries: list[tuple[float, int, str]] = []
            stale = time.time() - self.STALE_TEMPORARY_SECONDS
            for root, _, names in os.walk(directory):
                for name in names:
                    path = os.path.join(root, name)
                    try:
                        info = os.stat(path)
                    except OSError:
                        continue
                    if name.startswith("."):
                        if info.st_mtime < stale:
                            Path(path).unlink(missing_ok=True)
                        continue
                    entries.append((info.st_mtime, info.st_size, path))
            total = sum(size for _, size, _ in entries)
            evicted = 0
            if total > self.max_bytes:
                target = self.max_bytes * self.LOW_WATER
                for _, size, path in sorted(entries):
                    if total <= target:
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    total -= size
                    evicted += 1
        finally:
            os.close(lock)  # releases the flock
        with self._lock:
            self._known_bytes, self._written = total, 0
            self.evictions += evicted
        if evicted:
            logger.info("media store: %d entries evicted, %d bytes kept", evicted, total)
        return total


# Off until the process says where (the gpu workers: scoring.scorer_for); shared by every
# builder of the process, each with a scope named after its preprocessing settings.
MEDIA_STORE = MediaStore()
