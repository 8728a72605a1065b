"""Building a scoring item's rows: in the scorer's threads, or in processes beside the model.

`prepare_item` is what `RewardScorer` does for each item before its forward pass: decode its
media, render the chat template, tokenise, patchify pictures and frames, lay out its rows and
say what its result must report (errors, layout, note). On a GPU that Python work costs about as
much CPU as the forward pass itself, which is launch-bound on the same interpreter; threads
doing it contend with the forward for the GIL, so nothing overlaps (bench/README.md, "GPU
training speed"). A [`RowBuildPool`] runs `prepare_item` in processes instead, each holding its
own copy of the input builder, and hands back rows that only need collating (by a thread of
the scoring process, `RewardScorer._score_collated`, so that the model's thread only launches
it): token ids and segments as int64 arrays, M-RoPE positions computed, pixel values as arrays
(pickled without torch's storage format). The rows, hence the scores, are the same as the
threads build.

The processes are started with ``spawn`` (never forked from a process running torch's threads) on
the pool's first use, import torch and transformers once (seconds, and a few hundred MB each),
run torch with one thread, decode their items' media themselves (the process's decode pool is
off there) and keep a media cache of their own; they read and write the same media store as the
scoring process. An item's arrays (pixel values above all: 5 MB a 448^2 picture) come back
through a file in ``/dev/shm`` the scoring process maps and deletes at once, so they are not
copied through a pipe and again out of a pickle on its interpreter. A process that dies (killed,
out of memory, a crashing decoder) fails the items in flight with [`RowBuildError`]; the pool
starts again, and the scorer builds those items again one at a time
(`RewardScorer._built_in_processes`): an item that kills its process fails alone. Processes that
cannot start (spawning fails, or every process ends before its start-up finished: an import
error, out of memory) raise [`RowBuildStartError`], with what the start-up said: nothing will
build, so the scorer fails the call's items at once instead of starting the pool per item.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import mmap
import multiprocessing
import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from workers.reward_model.inputs import RewardInputBuilder, _Row
from workers.reward_model.media_cache import MediaCache
from workers.reward_model.records import AttentionMode, ScoringItem, ScoringResult

__all__ = ["RowBuildError", "RowBuildPool", "RowBuildStartError", "prepare_item"]

logger = logging.getLogger(__name__)

# Seconds a pool whose processes could not start is not started again (each try costs a start:
# seconds with spawn); the scorer's threads build the rows meanwhile. Processes that started
# and then died are started again at the next call.
START_RETRY_S = 60.0
_clock = time.monotonic  # tests move it


def prepare_item(
    builder: RewardInputBuilder,
    item: ScoringItem,
    index: int,
    mode: AttentionMode,
    result: ScoringResult,
) -> dict[str, list[_Row]]:
    """Decode the media of `item` (number `index` of the call) and lay out its rows, by
    attention mode; what its result must say (errors, layout, note) is written to `result`."""
    rows: dict[str, list[_Row]] = {}
    encoded = builder.encode_item(item)
    result.errors = list(encoded.candidate_errors) or result.errors
    try:
        plan = builder.plan(index, encoded, mode)
    except ValueError as exc:
        result.error = str(exc)
        return rows
    result.error = plan.error
    result.layout, result.note = plan.layout, plan.note
    for candidate, message in plan.candidate_errors.items():
        result.errors[candidate] = message
    # Items that overflowed packed scoring have isolated rows (another attention mask).
    rows.setdefault("isolated" if plan.layout == "isolated" else mode, []).extend(plan.rows)
    return rows


class RowBuildError(RuntimeError):
    """A row-building process died while an item's rows were built (or the pool was gone)."""


class RowBuildStartError(RowBuildError):
    """The row-building processes could not start: spawning failed, or the processes ended
    before any of them had finished its start-up (an import error, out of memory)."""


@dataclass(frozen=True)
class _MediaSettings:
    """What the scoring process's media settings are at a call; a building process follows
    them (they may change between calls: a worker configures its store at each batch)."""

    store_directory: str | None
    store_bytes: int
    cache_bytes: int
    cache_epoch: int
    pixel_limit: int | None


# --- in a building process ------------------------------------------------------------------

_builder: RewardInputBuilder | None = None
_cache_key: tuple[int, int] | None = None


def _start_process(spec: bytes, reports: Any) -> None:
    """A building process's start-up; it says on `reports` (a SimpleQueue) that it started, or
    why it could not (and then ends, as any failed initializer ends its process)."""
    global _builder
    try:
        # The scoring process's model wants the cores; a process builds one item at a time.
        torch.set_num_threads(1)
        _builder = pickle.loads(spec)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            reports.put(("failed", f"{type(exc).__name__}: {exc}"[:1000]))
        raise
    with contextlib.suppress(Exception):
        reports.put(("started", os.getpid()))


def _follow(builder: RewardInputBuilder, media: _MediaSettings) -> None:
    global _cache_key
    Image.MAX_IMAGE_PIXELS = media.pixel_limit  # QUORUM_MAX_IMAGE_MEGAPIXELS, as the caller's
    key = (media.cache_bytes, media.cache_epoch)
    if key != _cache_key:
        builder.media_cache, _cache_key = MediaCache(media.cache_bytes), key
    builder.media_store.configure(media.store_directory, media.store_bytes)


class _RowPickler(pickle.Pickler):
    """Pickles CPU tensors as numpy arrays, whose bytes go out of band (`_hand_over`); torch's
    own pickling goes through its serialisation format (about 3x slower for pixel values)."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            type(obj) is torch.Tensor
            and obj.device.type == "cpu"
            and not obj.requires_grad
            and obj.dtype in _NUMPY_DTYPES
        ):
            return torch.from_numpy, (obj.numpy(),)
        return NotImplemented


_NUMPY_DTYPES = {torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool}


# Where an item's arrays are handed over: memory (tmpfs) where the system has it.
_SHARED_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
_ALIGN = 64


def _shared_prefix(pid: int) -> str:
    return f"quorum-rows-{pid}-"


def _hand_over(obj: Any) -> tuple[bytes, str | None, list[tuple[int, int]]]:
    """`obj` pickled, its arrays' bytes out of band in a shared file: (pickle, the file,
    each array's (offset, size) in it)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _RowPickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
    spans, end = [], 0
    for buffer in buffers:
        size = buffer.raw().nbytes
        spans.append((end, size))
        end += -(-size // _ALIGN) * _ALIGN
    if not end:
        return stream.getvalue(), None, spans
    fd, path = tempfile.mkstemp(prefix=_shared_prefix(os.getppid()), dir=_SHARED_DIR)
    with os.fdopen(fd, "wb") as file:
        for (start, _), buffer in zip(spans, buffers, strict=True):
            file.seek(start)
            file.write(buffer.raw())
    return stream.getvalue(), path, spans


def _map(path: str) -> memoryview:
    """The shared file mapped copy-on-write (its arrays writable), its pages populated at once
    (one call, without the GIL, instead of a fault per page where the model's thread first
    reads them: 5 ms per 10 MB), and deleted (the mapping lives as long as its arrays)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return memoryview(
            mmap.mmap(
                fd,
                0,
                flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0),
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        )
    finally:
        os.close(fd)
        os.unlink(path)


def _take_over(
    payload: tuple[bytes, str | None, list[tuple[int, int]]], mapped: memoryview | None = None
) -> Any:
    """What `_hand_over` pickled; its arrays are views of the file (`mapped`, when mapped
    already)."""
    data, path, spans = payload
    if path is None:
        return pickle.loads(data, buffers=[b""] * len(spans))
    mapped = _map(path) if mapped is None else mapped
    return pickle.loads(data, buffers=[mapped[start : start + size] for start, size in spans])


class _Handover:
    """A submitted item: its future and, once done, its shared file mapped by the executor's
    thread (the collating thread then only unpickles)."""

    def __init__(self, future: Future) -> None:
        self.future = future
        self.mapped: memoryview | None = None
        self.ready = threading.Event()
        future.add_done_callback(self._map)

    def _map(self, future: Future) -> None:
        try:
            if not future.cancelled() and future.exception() is None:
                path = future.result()[1]
                if path is not None:
                    self.mapped = _map(path)
        except OSError:
            logger.exception("mapping rows handed over failed: the collating thread maps them")
        finally:
            self.ready.set()


def _discard(future: Future) -> None:
    """Delete the shared file of a result nobody takes (a call that failed or stopped)."""
    if future.cancelled() or future.exception() is not None:
        return
    path = future.result()[1]
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _build_rows(
    item: ScoringItem, index: int, mode: AttentionMode, media: _MediaSettings
) -> tuple[bytes, str | None, list[tuple[int, int]]]:
    """`prepare_item` in a building process: the item's rows, ready for `collate`, and its
    result, handed over by `_hand_over`."""
    builder = _builder
    assert builder is not None, "the process was not started by RowBuildPool"
    _follow(builder, media)
    count = len(item.candidates)
    result = ScoringResult(scores=[None] * count, errors=[None] * count)
    rows = prepare_item(builder, item, index, mode, result)
    for mode_rows in rows.values():
        for row in mode_rows:
            row.positions = builder._row_positions(row.ids, row.visuals)
            row.ids = np.asarray(row.ids, dtype=np.int64)  # type: ignore[assignment]
            row.segments = np.asarray(row.segments, dtype=np.int64)  # type: ignore[assignment]
    return _hand_over((rows, result))


# --- in the scoring process -----------------------------------------------------------------


def _fingerprint(builder: RewardInputBuilder) -> tuple:
    """What a building process's copy of `builder` was made from: its settings by value, its
    tokenizer and processors by identity. A change starts the processes again."""
    skip = {*RewardInputBuilder.PROCESS_STATE, "_store_scope_name"}
    plain = (str, int, float, bool, type(None))
    return (id(builder),) + tuple(
        (key, value if isinstance(value, plain) else id(value))
        for key, value in sorted(vars(builder).items())
        if key not in skip
    )


class _Starts:
    """What the processes of one executor said at start-up (`_start_process`): how many
    started, and the first reason one could not."""

    def __init__(self, context: Any) -> None:
        self.reports = context.SimpleQueue()
        self.started = 0
        self.failure: str | None = None
        self._lock = threading.Lock()

    def failed(self, executor: ProcessPoolExecutor) -> str | None:
        """Why the processes of `executor` (broken) could not start; None if one started."""
        with self._lock:
            while not self.reports.empty():
                kind, detail = self.reports.get()
                if kind == "started":
                    self.started += 1
                elif self.failure is None:
                    self.failure = detail
            if self.started:
                return None
            if self.failure is not None:
                return self.failure
        # Ended without a word (killed, out of memory, os._exit): their exit codes, where known;
        # the executor's processes are terminated (SIGTERM) once one has died.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, -signal.SIGTERM)})
        shown = ", ".join(
            f"killed by signal {-code}" if code < 0 else f"exit code {code}" for code in codes
        )
        return f"a process ended during its start-up ({shown or 'no exit code'})"


class RowBuildPool:
    """Processes that run [`prepare_item`] for a [`RewardScorer`] while it runs the model.

    Processes that could not start are not started again for [`START_RETRY_S`] seconds
    (one warning each time): meanwhile `processes` reads 0 and the scorer's threads build the
    rows.

    Args:
        processes (`int`): How many; 0 (the default) turns the pool off (the scorer's threads
            build rows).
    """

    def __init__(self, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self._processes = processes
        # When and why processes last could not start (None: they did, or were not tried).
        self._start_failed: tuple[float, str] | None = None
        self._executor: ProcessPoolExecutor | None = None
        self._starts: _Starts | None = None
        self._fingerprint: tuple | None = None
        self._cache_epoch = 0
        self._lock = threading.Lock()

    def configure(self, processes: int) -> None:
        """Set the number of processes (0: off); running processes of another number stop."""
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        with self._lock:
            if processes != self._processes:
                self._stop(wait=False)
                self._start_failed = None
            self._processes = processes

    @property
    def processes(self) -> int:
        """How many processes build rows: the number set, or 0 while processes that could not
        start are remembered (`START_RETRY_S`)."""
        return 0 if self._backing_off() else self._processes

    def _backing_off(self) -> str | None:
        """Why processes could not start, while that is remembered; else None."""
        failed = self._start_failed
        if failed is None or _clock() - failed[0] >= START_RETRY_S:
            return None
        return failed[1]

    def _could_not_start(self, failure: str) -> RowBuildStartError:
        # Call holding self._lock: remembered (one warning a failed start, not one a call).
        self._start_failed = (_clock(), failure)
        logger.warning(
            "the row-building processes could not start (%s): rows are built in threads, "
            "and the processes not started again, for %.0f s",
            failure,
            START_RETRY_S,
        )
        return RowBuildStartError(f"the row-building processes could not start: {failure}")

    def clear_media_cache(self) -> None:
        """Empty the processes' media caches before their next item (their store stays)."""
        with self._lock:
            self._cache_epoch += 1

    def session(self, builder: RewardInputBuilder) -> _Session:
        """Submits a call's items, built by copies of `builder` (processes started, or started
        again for a builder that changed, here)."""
        if self._processes < 1:
            raise ValueError("the row-building pool is off")
        fingerprint = _fingerprint(builder)
        with self._lock:
            if self._executor is not None and fingerprint != self._fingerprint:
                self._stop(wait=False)
            if self._executor is None:
                failure = self._backing_off()
                if failure is not None:
                    raise RowBuildStartError(
                        f"the row-building processes could not start: {failure}"
                    )
                context = multiprocessing.get_context("spawn")
                spec = pickle.dumps(builder)
                try:
                    starts = _Starts(context)
                    executor = ProcessPoolExecutor(
                        self._processes,
                        mp_context=context,
                        initializer=_start_process,
                        initargs=(spec, starts.reports),
                    )
                except OSError as exc:  # out of file descriptors
                    raise self._could_not_start(str(exc)) from exc
                self._executor, self._starts, self._fingerprint = executor, starts, fingerprint
            executor, starts = self._executor, self._starts
            assert starts is not None
            store = builder.media_store
            media = _MediaSettings(
                store_directory=str(store.directory) if store.enabled else None,
                store_bytes=store.max_bytes,
                cache_bytes=builder.media_cache.max_bytes,
                cache_epoch=self._cache_epoch,
                pixel_limit=Image.MAX_IMAGE_PIXELS,
            )
        return _Session(self, executor, starts, media)

    def _broken(self, executor: ProcessPoolExecutor, failure: str | None = None) -> None:
        """Stop `executor` if it is the current one; `failure`: why its processes could not
        start (remembered, `START_RETRY_S`)."""
        with self._lock:
            if executor is self._executor:
                self._stop(wait=False)
                if failure is not None:
                    self._could_not_start(failure)

    def _stop(self, *, wait: bool) -> None:
        # Call holding self._lock.
        executor, self._executor, self._fingerprint = self._executor, None, None
        self._starts = None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def shutdown(self) -> None:
        """Stop the processes (they start again at the next call)."""
        with self._lock:
            self._stop(wait=True)
        # Results handed over and never taken (a process killed between writing and returning).
        for path in glob.glob(os.path.join(_SHARED_DIR, _shared_prefix(os.getpid()) + "*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class _Session:
    """One call's items submitted to a [`RowBuildPool`]'s processes."""

    def __init__(
        self,
        pool: RowBuildPool,
        executor: ProcessPoolExecutor,
        starts: _Starts,
        media: _MediaSettings,
    ) -> None:
        self.pool, self.executor, self.starts, self.media = pool, executor, starts, media

    def _gone(self, exc: BaseException) -> RowBuildStartError | None:
        """The executor is broken (`exc`): stopped, and the error to raise if its processes
        never started (None if one did: it died on an item)."""
        failure = self.starts.failed(self.executor)
        self.pool._broken(self.executor, failure)
        if failure is None:
            return None
        return RowBuildStartError(f"the row-building processes could not start: {failure}")

    def submit(self, items: Sequence[ScoringItem], index: int, mode: AttentionMode) -> _Handover:
        """Item `index` submitted. Raises [`RowBuildStartError`] where the processes could not
        start, [`RowBuildError`] where they are gone otherwise."""
        try:
            return _Handover(
                self.executor.submit(_build_rows, items[index], index, mode, self.media)
            )
        except (BrokenProcessPool, OSError) as exc:  # OSError: spawning a process failed
            raise (
                self._gone(exc) or RowBuildError(f"the row-building processes are gone ({exc})")
            ) from exc
        except RuntimeError as exc:  # stopped (configure(), shutdown())
            self.pool._broken(self.executor)
            raise RowBuildError(f"the row-building processes are gone ({exc})") from exc

    def result(
        self, handover: _Handover, index: int
    ) -> tuple[dict[str, list[_Row]], ScoringResult]:
        """Item `index`'s rows and result, as `prepare_item` left them. Raises
        [`RowBuildStartError`] or [`RowBuildError`] as `submit`, and what building the item
        raised in its process (its traceback there as the exception's cause)."""
        try:
            payload = handover.future.result()
        except BrokenProcessPool as exc:
            raise (
                self._gone(exc)
                or RowBuildError(
                    f"a row-building process died while item {index}'s rows were built "
                    f"({exc}); the processes start again at the next call"
                )
            ) from exc
        except CancelledError as exc:  # the pool was stopped (configure(), shutdown())
            self.pool._broken(self.executor)
            raise RowBuildError(f"the row-building processes were stopped ({exc!r})") from exc
        handover.ready.wait()
        return _take_over(payload, handover.mapped)

    def discard(self, handover: _Handover) -> None:
        """Drop a submitted item whose rows will not be taken."""
        if not handover.future.cancel():
            handover.future.add_done_callback(_discard)
