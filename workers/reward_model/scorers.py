"""Scorers: the multi-response reward model and the single-response classifier baseline."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.reward_model.inputs import (
    RewardInputBuilder,
    _Row,
)
from workers.reward_model.model import (
    MultiResponseRewardModel,
    RewardBatch,
)
from workers.reward_model.records import (
    ATTENTION_MODES,
    DEFAULT_MAX_LENGTH,
    PROMPT_PREFIX,
    PROMPT_SUFFIX,
    AttentionMode,
    ScoringItem,
    ScoringResult,
    pick_device,
)
from workers.reward_model.row_building import (
    RowBuildError,
    RowBuildPool,
    RowBuildStartError,
    prepare_item,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _defused(text: str) -> str:
    # A control-token literal typed by a user stays text: a zero-width space after "<".
    return text.replace("<|", "<\u200b|")


def _new_results(items: Sequence[ScoringItem]) -> list[ScoringResult]:
    return [
        ScoringResult(scores=[None] * len(item.candidates), errors=[None] * len(item.candidates))
        for item in items
    ]


class RewardScorer:
    """Scores items with a [`MultiResponseRewardModel`]; the API workers and the playground use.

    Args:
        model ([`MultiResponseRewardModel`]): The reward model (moved to `device`).
        builder ([`RewardInputBuilder`]): Tokenizer, image processor and limits.
        device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
        max_batch_tokens (`int`): Padded tokens per forward pass (rows x longest row).
        max_batch_rows (`int`): Rows per forward pass.
        prefetch_workers (`int`): Threads that decode media and build rows for the next
            items while the model scores the current ones (0: all in this thread).
        prefetch_items (`int`, *optional*): Most items per forward pass (`max_batch_rows` by
            default); the threads prepare up to this many items (and one more per thread)
            ahead of the model.
        batch_overhead_tokens (`int`, *optional*): What one more forward pass costs, in padded
            tokens (default: 128 on a CPU, 4096 on a GPU, where a pass of a 2-4B model is
            bound by launching its kernels: on one H200 a 2B-shaped model scored the demo's
            VQA prompts at 19 prompts/s with 128 and 50 with 4096, bench/README.md).
            Consecutive items share a forward pass while the padding one more item adds
            stays under its own tokens plus this (and the pass under `max_batch_rows` and
            `max_batch_tokens`): rows of like length go together, long rows do not make short
            ones wait in padding. The cut depends on the rows only, never on timing, so a
            call's scores are the same however fast its media are decoded.
        build_processes (`int`): Processes that build rows instead of the threads (0: off, the
            default); see [`RowBuildPool`]: on a GPU the threads' Python contends with the
            forward pass for the GIL. The processes stay up until `close()`;
            `row_pool.configure(n)` changes their number.
        defer_readout (`bool`, *optional*): Read a batch's scores only after the next batch's
            forward pass has been launched (default: on a GPU). A CUDA forward pass is only
            queued when it returns; reading its scores at once leaves the GPU idle while this
            thread collates and launches the next batch, and this thread idle while the GPU
            runs. Deferred, the two overlap; the scores are the same.
    """

    kind = "multi_response"

    def __init__(
        self,
        model: MultiResponseRewardModel,
        builder: RewardInputBuilder,
        *,
        device: str | torch.device | None = None,
        max_batch_tokens: int = 16_384,
        max_batch_rows: int = 16,
        prefetch_workers: int = 2,
        prefetch_items: int | None = None,
        batch_overhead_tokens: int | None = None,
        build_processes: int = 0,
        defer_readout: bool | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.builder = builder
        self.defer_readout = self.device.type == "cuda" if defer_readout is None else defer_readout
        # The batch whose forward pass is queued and whose scores are not read yet, per thread
        # (a scorer may serve several threads, each its own score() call).
        self._queued = threading.local()
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.prefetch_workers = prefetch_workers
        self.prefetch_items = prefetch_items or max_batch_rows
        if batch_overhead_tokens is None:
            batch_overhead_tokens = BATCH_OVERHEAD_TOKENS[self.device.type == "cuda"]
        self.batch_overhead_tokens = batch_overhead_tokens
        self.row_pool = RowBuildPool(build_processes)

    def close(self) -> None:
        """Stop the row-building processes, if any."""
        self.row_pool.shutdown()

    def score(
        self, items: Sequence[ScoringItem], mode: AttentionMode = "packed"
    ) -> list[ScoringResult]:
        """Score every candidate of every item.

        Failures are reported per item (`ScoringResult.error`) or per candidate
        (`ScoringResult.errors`) and never stop the other items.

        Args:
            items (`Sequence[ScoringItem]`): Prompts with their candidates (N may differ).
            mode (`str`): ``"packed"``, ``"isolated"`` or ``"separate"`` (one pass per
                candidate; the baseline).

        Returns:
            `list[ScoringResult]`: One per item, scores aligned with the candidates.
        """
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        results = _new_results(items)
        # train() or apply_lora() may have left dropout on; scores must be deterministic.
        self.model.eval()
        if self.row_pool.processes:
            self._score_collated(self._built_in_processes(items, mode, results), results)
            return results
        if self.prefetch_workers < 1 or len(items) < 2:
            self._score_prepared(
                (self._prepare(items, range(i, i + 1), mode, results) for i in range(len(items))),
                results,
            )
            return results
        # Media decoding and row building for the next items overlap the forward pass of the
        # current ones (decoders and torch release the GIL). Items are submitted one by one, in
        # order, so every thread works on the items the model needs next; at most a forward
        # pass's worth of items (and one per thread) are in flight beyond those taken.
        ahead = self.prefetch_items + self.prefetch_workers
        with ThreadPoolExecutor(self.prefetch_workers, thread_name_prefix="rm-prefetch") as pool:
            pending: deque[Future] = deque()
            upcoming = iter(range(len(items)))

            def submit(count: int) -> None:
                for index in itertools.islice(upcoming, count):
                    pending.append(
                        pool.submit(self._prepare, items, range(index, index + 1), mode, results)
                    )

            def prepared() -> Iterator[dict[str, list[_Row]]]:
                submit(ahead)
                while pending:
                    rows = pending.popleft().result()
                    submit(1)
                    yield rows

            self._score_prepared(prepared(), results)
        return results

    def _built_in_processes(
        self, items: Sequence[ScoringItem], mode: AttentionMode, results: list[ScoringResult]
    ) -> Iterator[dict[str, list[_Row]]]:
        """Items' rows built by the row pool's processes, in item order, their results put in
        `results`; submitted as the threads' are (a forward pass's worth and one per process
        ahead of the model).

        A process that dies (a crashing decoder, out of memory) fails every item in flight
        with it, and which one killed it is not known: those items are built again one at a
        time by processes started again, so an item that kills its process fails alone (its
        result says so, naming its media) and the others are scored. Processes that cannot
        start ([`RowBuildStartError`]) would fail every item the same way, a start (seconds)
        each: the items not built yet fail at once, with what the start-up said. An item whose
        build raises (a bug in a template, a KeyError) fails alone, as in `_prepare`.
        """
        pool = self.row_pool
        ahead = self.prefetch_items + pool.processes
        # [index, handover], in item order; handover None: to be built alone.
        pending: deque[list[Any]] = deque()
        upcoming = iter(range(len(items)))
        try:
            session = pool.session(self.builder)
        except RowBuildStartError as exc:
            _could_not_start(results, range(len(items)), exc)
            return

        def build_alone() -> None:
            # Every item in flight is built again, one at a time, by processes started again.
            nonlocal session
            for entry in pending:
                if entry[1] is not None:
                    session.discard(entry[1])
                    entry[1] = None
            session = pool.session(self.builder)

        def submit(count: int) -> None:
            if any(entry[1] is None for entry in pending):
                return  # items wait to be built alone: nothing else is in flight meanwhile
            for index in itertools.islice(upcoming, count):
                pending.append([index, None])
                try:
                    pending[-1][1] = session.submit(items, index, mode)
                except RowBuildStartError:
                    raise
                except RowBuildError:
                    build_alone()
                    return

        try:
            try:
                submit(ahead)
                while pending:
                    index, handover = pending[0]
                    alone = handover is None
                    try:
                        if alone:
                            handover = pending[0][1] = session.submit(items, index, mode)
                        rows, results[index] = session.result(handover, index)
                    except RowBuildStartError:
                        raise
                    except RowBuildError as exc:
                        if not alone:
                            build_alone()
                            continue
                        pending[0][1] = None
                        results[index].error = _died_building(items[index], exc)
                        rows = {}
                        session = pool.session(self.builder)
                    except Exception as exc:  # noqa: BLE001 - the item's build raised: it alone fails
                        pending[0][1] = None  # done: nothing to discard
                        results[index] = _unbuilt(items[index], index, exc)
                        rows = {}
                    pending.popleft()
                    submit(ahead if alone else 1)
                    yield rows
            except RowBuildStartError as exc:
                for entry in pending:
                    if entry[1] is not None:
                        session.discard(entry[1])
                        entry[1] = None
                _could_not_start(results, [*(entry[0] for entry in pending), *upcoming], exc)
                pending.clear()
        finally:
            for _, handover in pending:
                if handover is not None:
                    session.discard(handover)

    def _score_prepared(
        self, prepared: Iterator[dict[str, list[_Row]]], results: list[ScoringResult]
    ) -> None:
        """Score items' rows (by attention mode, in item order), consecutive items sharing a
        forward pass while `_joins` says so."""
        self._queued.batch = None
        try:
            for rows, row_mode in self._batches_of(prepared):
                self._score_rows(rows, row_mode, results)
        finally:
            self._read_queued()

    def _batches_of(
        self, prepared: Iterator[dict[str, list[_Row]]]
    ) -> Iterator[tuple[list[_Row], str]]:
        """The forward passes of items' rows (by attention mode, in item order): consecutive
        items share a chunk while `_joins` says so, a chunk's rows are cut by `_batches`."""
        chunk: dict[str, list[_Row]] = {}
        count = rows = longest = 0
        for item_rows in prepared:
            lengths = [row.length for mode_rows in item_rows.values() for row in mode_rows]
            if count and not self._joins(count, rows, longest, lengths):
                yield from self._chunk_batches(chunk)
                chunk, count, rows, longest = {}, 0, 0, 0
            for row_mode, mode_rows in item_rows.items():
                chunk.setdefault(row_mode, []).extend(mode_rows)
            count += 1
            rows += len(lengths)
            longest = max([longest, *lengths])
        if chunk:
            yield from self._chunk_batches(chunk)

    def _chunk_batches(self, chunk: dict[str, list[_Row]]) -> Iterator[tuple[list[_Row], str]]:
        for row_mode, mode_rows in chunk.items():
            for group in self._batches(mode_rows, row_mode):
                yield group, row_mode

    def _score_collated(
        self, prepared: Iterator[dict[str, list[_Row]]], results: list[ScoringResult]
    ) -> None:
        """`_score_prepared`, with the items' rows taken, cut into forward passes and collated
        (pixel values concatenated, the batch moved to the device) by a thread of its own,
        one forward pass ahead: this thread only launches the model and reads the scores.

        On a GPU the forward pass of a 2B model is launch-bound: every millisecond this
        thread spends outside it is lost throughput. The collating thread's heavy parts (the
        concatenation of a batch's pixel values, about 5 MB a 448^2 picture, and the copy to
        the device) release the interpreter lock; its Python (unpickling an item's rows
        handed over by the row-building processes, padding a batch's token ids) is short.
        The passes are cut and collated as `_score_prepared` does: the scores are the same.
        A batch whose collation failed is retried row by row here, as in `_score_rows`.
        """
        ready: queue.Queue = queue.Queue(maxsize=COLLATED_AHEAD)
        stop = threading.Event()

        def hand(entry: Any) -> bool:
            # Blocks while the queue is full; False once this thread has stopped taking.
            while not stop.is_set():
                try:
                    ready.put(entry, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        # A batch is copied to the device on this thread's CUDA stream and device (both are
        # per thread): the forward pass that reads it is queued after the copy.
        on_stream: Any = contextlib.nullcontext
        device = self.device
        if device.type == "cuda":
            stream = torch.cuda.current_stream(device)
            device = stream.device
            on_stream = lambda: torch.cuda.stream(stream)  # noqa: E731

        def collate() -> None:
            try:
                for rows, row_mode in self._batches_of(prepared):
                    try:
                        with on_stream():
                            batch: Any = self.builder.collate(rows, row_mode).to(device)  # type: ignore[arg-type]
                    except Exception as exc:  # noqa: BLE001 - reported by _score_rows
                        batch = _Failed(exc)
                    if not hand((rows, row_mode, batch)):
                        return
                hand(None)
            except BaseException as exc:  # noqa: BLE001 - raised by score() (RowBuildError)
                hand(_Failed(exc))
            finally:
                # Items submitted and not taken: their handed-over files are deleted.
                prepared.close()

        thread = threading.Thread(target=collate, name="rm-collate", daemon=True)
        self._queued.batch = None
        thread.start()
        try:
            while (entry := ready.get()) is not None:
                if isinstance(entry, _Failed):
                    raise entry.exc
                rows, row_mode, batch = entry
                self._score_rows(rows, row_mode, results, batch)
        finally:
            stop.set()
            thread.join()
            self._read_queued()

    def _joins(self, count: int, rows: int, longest: int, lengths: list[int]) -> bool:
        """Whether an item whose rows have `lengths` shares the forward pass of the `count`
        items before it (`rows` rows, the longest `longest` tokens)."""
        if not lengths:
            return True  # nothing to score (an error): it costs no pass
        if count >= self.prefetch_items:
            return False
        total, widest = rows + len(lengths), max(longest, *lengths)
        if total > self.max_batch_rows or total * widest > self.max_batch_tokens:
            return False
        added = total * widest - rows * longest
        return added <= len(lengths) * max(lengths) + self.batch_overhead_tokens

    def _prepare(
        self,
        items: Sequence[ScoringItem],
        indices: range,
        mode: AttentionMode,
        results: list[ScoringResult],
    ) -> dict[str, list[_Row]]:
        """Decode the media of `items[indices]` and lay out their rows, by attention mode."""
        rows: dict[str, list[_Row]] = {}
        for index in indices:
            try:
                built = prepare_item(self.builder, items[index], index, mode, results[index])
            except Exception as exc:  # noqa: BLE001 - one item's bug must not sink the others
                results[index] = _unbuilt(items[index], index, exc)
                continue
            for row_mode, mode_rows in built.items():
                rows.setdefault(row_mode, []).extend(mode_rows)
        return rows

    def _batches(self, rows: list[_Row], mode: str) -> Iterator[list[_Row]]:
        # Longest first so each batch pads to a similar length.
        ordered = sorted(rows, key=lambda row: row.length, reverse=True)
        group: list[_Row] = []
        for row in ordered:
            longest = group[0].length if group else row.length
            count = len(group) + 1
            too_big = count * longest > self.max_batch_tokens or count > self.max_batch_rows
            if mode == "isolated":
                # The isolated mask is (B, L, L); keep it under ~64M elements per batch.
                too_big = too_big or count * longest * longest > 64 * 2**20
            if group and too_big:
                yield group
                group = []
            group.append(row)
        if group:
            yield group

    def _score_rows(
        self,
        rows: list[_Row],
        mode: str,
        results: list[ScoringResult],
        collated: RewardBatch | _Failed | None = None,
    ) -> None:
        """Score one forward pass's rows (`collated`: their batch, collated on the device
        already, or why that failed); a pass that fails is retried row by row."""
        try:
            if isinstance(collated, _Failed):
                raise collated.exc
            if collated is None:
                collated = self.builder.collate(rows, mode).to(self.device)  # type: ignore[arg-type]
            batch = collated
            with torch.inference_mode():
                scores = self.model(batch)
            if not self.defer_readout:
                scores = scores.cpu()
        except Exception as exc:  # noqa: BLE001 - one bad batch must not sink the others
            if len(rows) > 1:
                # Retry row by row so only the row that really fails is reported.
                for row in rows:
                    self._score_rows([row], mode, results)
                return
            logger.exception("scoring failed for item %s", rows[0].item_index)
            for candidate in rows[0].candidates:
                results[rows[0].item_index].errors[candidate] = (
                    f"scoring failed: {exc.__class__.__name__}: {exc}"
                )
            return
        if self.defer_readout:
            # This batch is queued on the device: read the one before it (which ran while
            # this one was collated and launched) and leave this one for the next launch.
            done = torch.cuda.Event(blocking=True) if scores.device.type == "cuda" else None
            if done is not None:
                done.record()
            self._read_queued()
            self._queued.batch = (scores, done, rows, results)
            return
        _store_scores(scores, rows, results)

    def _read_queued(self) -> None:
        """Read the scores of the batch left queued by `_score_rows`, if any."""
        queued = getattr(self._queued, "batch", None)
        self._queued.batch = None
        if queued is None:
            return
        scores, done, rows, results = queued
        try:
            if done is not None:
                done.synchronize()  # the thread sleeps until the batch has run
            scores = scores.cpu()
        except Exception as exc:  # noqa: BLE001 - an asynchronous device error
            logger.exception("scoring failed for items %s", sorted({r.item_index for r in rows}))
            for row in rows:
                for candidate in row.candidates:
                    results[row.item_index].errors[candidate] = (
                        f"scoring failed: {exc.__class__.__name__}: {exc}"
                    )
            return
        _store_scores(scores, rows, results)

    def save(self, path: str | os.PathLike[str], *, merge_lora: bool = False) -> Path:
        """Write the seed release layout (see [`save_reward_model`])."""
        from workers.reward_model.checkpoints import save_reward_model

        return save_reward_model(
            self.model,
            path,
            tokenizer=self.builder.tokenizer,
            image_processor=self.builder.image_processor,
            merge_lora=merge_lora,
            limits=self.builder.limits(),
        )


# What one more forward pass costs, in padded tokens: (CPU, GPU).
BATCH_OVERHEAD_TOKENS = (128, 4096)

# Batches the collating thread holds ready beyond the one it collates (`_score_collated`): with
# the pass the model runs, at most three passes' inputs are in memory.
COLLATED_AHEAD = 1


class _Failed:
    """An exception handed from the collating thread to the scoring thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _died_building(item: ScoringItem, exc: RowBuildError) -> str:
    """What the result of an item whose row-building process died, built alone, says."""
    media = [item.prompt_image, item.prompt_video, *(c.path for c in item.candidates)]
    names = [
        os.path.basename(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "in memory"
        for path in media
        if path is not None
    ]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (
        "rows not built: the row-building process died building this prompt alone (killed, "
        f"out of memory, or a decoder crashing on one of its files: {shown or 'none'}); {exc}"
    )


def _could_not_start(
    results: list[ScoringResult], indices: Sequence[int], exc: RowBuildStartError
) -> None:
    """Items left unbuilt because the row-building processes could not start: one reason."""
    logger.error("rows of %d items not built: %s", len(indices), exc)
    for index in indices:
        results[index].error = f"rows not built: {exc}"


def _unbuilt(item: ScoringItem, index: int, exc: Exception) -> ScoringResult:
    """The result of an item whose rows could not be built because building them raised
    `exc` (not a media or value error, which `prepare_item` reports: a bug, most likely). It
    is logged with its traceback (a process's, as the cause, for rows built there)."""
    logger.error("building the rows of item %d raised", index, exc_info=exc)
    count = len(item.candidates)
    return ScoringResult(
        scores=[None] * count,
        errors=[None] * count,
        error=f"rows not built: {type(exc).__name__}: {exc}",
    )


def _store_scores(scores: torch.Tensor, rows: list[_Row], results: list[ScoringResult]) -> None:
    """Each row's scores (a CPU tensor, rows x slots) into its item's result."""
    # One conversion for the batch (the same doubles as float() of each element).
    values = scores.tolist()
    for r, row in enumerate(rows):
        for slot, candidate in enumerate(row.candidates):
            results[row.item_index].scores[candidate] = float(values[r][slot])


class SequenceClassificationScorer:
    """Baseline: a text-only `AutoModelForSequenceClassification` scoring one candidate per pass.

    `mode` is accepted for interface compatibility and ignored: every candidate is always
    scored in its own prompt+response sequence. Image/video prompts and media candidates are
    reported as errors.
    """

    kind = "sequence_classification"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        max_batch_tokens: int = 16_384,
        max_batch_rows: int = 32,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token to batch candidates")
        if getattr(model.config, "pad_token_id", None) is None:
            # The classifier finds each sequence's last token by skipping pad ids.
            model.config.pad_token_id = tokenizer.pad_token_id
        self.pad_id = int(tokenizer.pad_token_id)
        self._prefix = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
        self._suffix = tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]

    def _row_ids(self, prompt_text: str, response: str, prompt_ids: list[int]) -> list[int]:
        """The classifier's input: its chat template over one exchange, tokenised whole (as
        such models are trained); prompt and response concatenated when it has none."""
        template = getattr(self.tokenizer, "chat_template", None)
        if not template:
            return prompt_ids + self._user_ids(response)
        messages = [
            {"role": "user", "content": _defused(prompt_text)},
            {"role": "assistant", "content": _defused(response)},
        ]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _user_ids(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]

    def score(
        self, items: Sequence[ScoringItem], mode: AttentionMode = "separate"
    ) -> list[ScoringResult]:
        """Score each candidate in its own pass. See [`RewardScorer.score`] for the contract."""
        results = _new_results(items)
        pending: list[tuple[int, int, list[int]]] = []
        for index, item in enumerate(items):
            if not item.candidates:
                results[index].error = "item has no candidates"
                continue
            if item.prompt_image is not None or item.prompt_video is not None:
                results[index].error = "text-only reward model cannot score an image/video prompt"
                continue
            prompt = self._prefix + self._user_ids(item.prompt_text) + self._suffix
            for candidate_index, candidate in enumerate(item.candidates):
                if candidate.kind != "text":
                    results[index].errors[candidate_index] = (
                        f"text-only reward model cannot score {candidate.kind} candidates"
                    )
                    continue
                if not candidate.text.strip():
                    results[index].errors[candidate_index] = "empty response text"
                    continue
                ids = self._row_ids(item.prompt_text, candidate.text, prompt)
                if len(ids) > self.max_length:
                    results[index].errors[candidate_index] = (
                        f"input is {len(ids)} tokens, over max_length {self.max_length}"
                    )
                    continue
                pending.append((index, candidate_index, ids))
        pending.sort(key=lambda entry: len(entry[2]), reverse=True)
        start = 0
        while start < len(pending):
            longest = len(pending[start][2])
            count = max(1, min(self.max_batch_rows, self.max_batch_tokens // longest))
            group = pending[start : start + count]
            start += count
            input_ids = torch.full((len(group), longest), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for r, (_, _, ids) in enumerate(group):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                attention[r, : len(ids)] = 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
                ).logits
            for (index, candidate_index, _), value in zip(
                group, logits[:, 0].float().cpu(), strict=True
            ):
                results[index].scores[candidate_index] = float(value)
        return results
