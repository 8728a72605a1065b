"""Raw exports of a project in the three import formats (every judgment as stored).

These are the inverse of ``annotate.importing``: an exported folder imports back into the
same rows. Curated, denoised training exports are built by the curation app.

`iter_export` yields the data file's bytes (UTF-8) from ``values_list`` queries, a batch of
prompts (or judgments) at a time, so neither the file nor the project's rows are held in
memory; `export_project` writes it to a folder with its media (the CLI), `iter_export_zip`
streams it as a zip with its media (the API).

Rows are encoded by orjson (compact, UTF-8), several times faster than ``json.dumps``; a row
orjson refuses (an integer past 64 bits in stored metadata, a lone surrogate) is encoded by
``json.dumps`` instead, and the line separators that ``str.splitlines`` breaks on (U+2028,
U+2029, U+0085) are escaped, so every line reads back, through the importer, as the values
``json.dumps`` wrote before. (NaN and the infinities, which orjson would write as null, are
never stored: both databases' JSON checks refuse them.)
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
from django.conf import settings
from django.db import connections
from django.db.models import TextField
from django.db.models.functions import Cast

from annotate.importing import ARENA_WINNERS
from annotate.models import Candidate, Judgment, Project, Prompt, TaskCandidate

_WINNER_BY_OUTCOME = {v: k for k, v in ARENA_WINNERS.items()}
FORMATS = ("quorum", "seed", "arena")
# The fallback encoder: the same output as ``json.dumps(row)`` with its defaults.
_encode = json.JSONEncoder(check_circular=False).encode
# Judgments (seed, arena) a query, or task ids in one IN list; under SQLite's 999 parameters.
BATCH = 500
# Prompts a query in the Quorum format (their candidates and judgments in one query each, by a
# range of prompt ids): every query reads the judgments' index or table once, whatever it keeps.
# The next batch is read (by a thread of its own) while this one's rows are built.
PROMPT_BATCH = 2000

# Called with (name in the export, stored name under MEDIA_ROOT) for each media file a row names.
MediaSink = Callable[[str, str], None]
# A JSON column's text that a row leaves out (empty), read without decoding.
_EMPTY_JSON = (None, "{}", "[]", "null", '""')


def _raw(field: str) -> Cast:
    """A JSON column as its text: most are empty, and reading those needs no decoding."""
    return Cast(field, TextField())


# UTF-8 of the characters ``str.splitlines`` (the importer's) ends a line at and orjson leaves
# as they are (JSON escapes only those below U+0020); each only occurs inside a JSON string.
_LINE_BREAKS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def _escape_line_breaks(data: bytes) -> bytes:
    if data.isascii():  # most exports: one fast pass instead of three searches
        return data
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _dumps(row) -> bytes:
    """``row`` as a line of JSON (no newline): orjson's, or ``json.dumps``'s where orjson
    cannot write it as Python's json does."""
    try:
        return orjson.dumps(row)
    except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits, a lone surrogate
        return _encode(row).encode()


def competition_ranks(groups: list[list[int]], order: list[int]) -> list[int]:
    """Seed-format ranks (1 = best, ties share a rank, "1224" style) for ``order``."""
    rank_of: dict[int, int] = {}
    position = 1
    for group in groups:
        for cid in group:
            rank_of[cid] = position
        position += len(group)
    return [rank_of[c] for c in order]


def _media_name(stored: str, media: MediaSink | None) -> str | None:
    if not stored:
        return None
    rel = (Path("media") / stored).as_posix()
    if media is not None:
        media(rel, stored)
    return rel


def data_file_name(format: str) -> str:
    return "data.json" if format == "arena" else "data.jsonl"


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r} (expected quorum, seed or arena)")


def iter_export(
    project: Project, format: str = "quorum", *, media: MediaSink | None = None
) -> Iterator[bytes]:
    """The data file of ``export_project`` as chunks of UTF-8; ``media`` hears of each media
    file."""
    _check_format(format)
    if format == "quorum":
        return _quorum_lines(project, media)
    if format == "seed":
        return _seed_lines(project, media)
    return _arena_text(project)


def _keyset(queryset, size: int = BATCH) -> Iterator[list[tuple]]:
    """``queryset`` (a values_list whose first field is ``id``) in id order, ``size`` rows a
    query, no cursor held open between batches."""
    last = 0
    while True:
        batch = list(queryset.filter(id__gt=last).order_by("id")[:size])
        if not batch:
            return
        yield batch
        last = batch[-1][0]


def _slots(task_ids: Iterable[int], *fields: str) -> dict[int, list[tuple]]:
    """Each task's candidates in slot order: (candidate_id, *fields) tuples."""
    out: dict[int, list[tuple]] = defaultdict(list)
    ids = sorted(task_ids)
    for start in range(0, len(ids), BATCH):
        for task_id, *rest in (
            TaskCandidate.objects.filter(task_id__in=ids[start : start + BATCH])
            .order_by("task_id", "position")
            .values_list("task_id", "candidate_id", *fields)
        ):
            out[task_id].append(tuple(rest))
    return out


def _quorum_lines(project: Project, media: MediaSink | None) -> Iterator[bytes]:
    settings_row = {
        "mode": project.mode,
        "candidates_per_task": project.candidates_per_task,
        "annotators_per_task": project.annotators_per_task,
        "ties_allowed": project.ties_allowed,
        "blind": project.blind,
        "instructions": project.instructions,
        "rubric_dimensions": project.rubric_dimensions,
    }
    yield _escape_line_breaks(_dumps({"project": settings_row}) + b"\n")
    external: dict[int, str] = {}  # candidate id -> external id, this batch's (and strays)

    def ext(candidate_id: int) -> str:
        if candidate_id not in external:  # a candidate of another prompt: not expected
            external[candidate_id] = Candidate.objects.get(pk=candidate_id).external_id
        return external[candidate_id]

    for batch, candidates, judgments, orders in _prefetched(_quorum_batches(project)):
        external.clear()
        for rows in candidates.values():
            for row in rows:
                external[row[0]] = row[2]
        lines = [
            _dumps(
                _quorum_row(prompt, candidates[prompt[0]], judgments[prompt[0]], orders, ext, media)
            )
            for prompt in batch
        ]
        lines.append(b"")
        yield _escape_line_breaks(b"\n".join(lines))


def _quorum_batches(project: Project) -> Iterator[tuple]:
    """The Quorum format's rows a batch of prompts at a time: (prompts, their candidates by
    prompt id, their judgments by prompt id, the pair judgments' tasks' candidate orders)."""
    prompts = Prompt.objects.filter(project=project).values_list(
        "id", "external_id", "text", "image", "video", _raw("metadata")
    )
    for batch in _keyset(prompts, PROMPT_BATCH):
        lo, hi = batch[0][0], batch[-1][0]
        candidates: dict[int, list[tuple]] = defaultdict(list)
        for row in (
            Candidate.objects.filter(project=project, prompt_id__gte=lo, prompt_id__lte=hi)
            .order_by("prompt_id", "id")
            .values_list(
                "id",
                "prompt_id",
                "external_id",
                "model_name",
                "kind",
                "text",
                "media",
                _raw("metadata"),
            )
        ):
            candidates[row[1]].append(row)
        judgments: dict[int, list[tuple]] = defaultdict(list)
        pair_tasks = set()
        for row in (
            Judgment.objects.filter(
                project=project, task__prompt_id__gte=lo, task__prompt_id__lte=hi
            )
            .order_by("id")
            .values_list(
                "task__prompt_id",
                "task_id",
                "annotator_id",
                "annotator__username",
                "external_annotator",
                "source_name",
                "idempotency_key",
                "kind",
                _raw("ranking"),
                "outcome",
                _raw("presented_order"),
                "rationale",
                "duration_ms",
                _raw("ratings"),
            )
        ):
            judgments[row[0]].append(row)
            if row[7] != "ranking":
                pair_tasks.add(row[1])
        orders = _slots(pair_tasks) if pair_tasks else {}
        yield batch, candidates, judgments, orders


def _prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """``items``, read ahead by a thread of its own (with its own database connection): the
    next batch's queries run, and the database works, while the caller builds this batch's rows.

    Inside a transaction (a test's, an atomic block) another connection would not see what it
    wrote: ``items`` is read in the caller's thread then."""
    if any(connections[alias].in_atomic_block for alias in connections):
        yield from items
        return
    reader = _ReadAhead(items, depth)
    try:
        while (item := reader.get()) is not _END:
            yield item
    finally:
        reader.close()


class _ReadAhead:
    """Iterates ``items`` in a thread of its own, at most ``depth`` items ahead of `get`. An
    error in the thread is raised by `get`; `close` stops the thread if the caller leaves
    early. The thread closes its own database connections when it ends."""

    def __init__(self, items: Iterator, depth: int) -> None:
        self.items = items
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="raw-export-read", daemon=True)
        self.thread.start()

    def get(self):
        item, error = self.queue.get()
        if error is not None:
            raise error
        return item

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):  # frees a thread waiting to put
                self.queue.get_nowait()
            self.thread.join(timeout=0.1)

    def _put(self, entry: tuple) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the caller's thread
            self._put((None, exc))
        finally:
            connections.close_all()


def _quorum_row(
    prompt: tuple,
    candidates: list[tuple],
    judgments: list[tuple],
    orders: dict[int, list[tuple]],
    ext: Callable[[int], str],
    media: MediaSink | None,
) -> dict:
    """One prompt's row of the Quorum format."""
    _, external_id, text, image, video, metadata = prompt
    # Most values are empty: tested here, not decoded nor passed to a function.
    row = {"id": external_id, "prompt": text}
    if image:
        row["image"] = _media_name(image, media)
    if video:
        row["video"] = _media_name(video, media)
    if metadata not in _EMPTY_JSON and (metadata := json.loads(metadata)):
        row["metadata"] = metadata
    row["candidates"] = cands = []
    for _, _, c_ext, model, kind, c_text, c_media, c_meta in candidates:
        cand = {"id": c_ext, "model": model, "kind": kind}
        if c_text:
            cand["text"] = c_text
        if c_media:
            cand[kind] = _media_name(c_media, media)
        elif kind != "text" and not c_text:
            cand["placeholder"] = True
        if c_meta not in _EMPTY_JSON and (c_meta := json.loads(c_meta)):
            cand["metadata"] = c_meta
        cands.append(cand)
    row["judgments"] = outs = []
    for (
        _,
        task_id,
        annotator_id,
        username,
        external_annotator,
        source_name,
        key,
        kind,
        ranking,
        outcome,
        presented_order,
        rationale,
        duration_ms,
        ratings,
    ) in judgments:
        out = {
            "annotator": username if annotator_id else external_annotator,
            "source": source_name or "quorum",
            "key": key,
        }
        if kind == "ranking":
            # Candidate ids (64-bit at most): orjson reads them as json does.
            out["ranking"] = [[ext(c) for c in g] for g in orjson.loads(ranking)]
        else:
            out["pair"] = [ext(c) for (c,) in orders[task_id]]
            out["outcome"] = outcome
        if presented_order not in _EMPTY_JSON and (presented_order := json.loads(presented_order)):
            out["presented_order"] = [ext(c) for c in presented_order]
        if rationale:
            out["rationale"] = rationale
        if duration_ms is not None:
            out["duration_ms"] = duration_ms
        # Left out when empty: rows without ratings read as before.
        if ratings not in _EMPTY_JSON and (ratings := json.loads(ratings)):
            out["ratings"] = {
                dim: {ext(int(c)): v for c, v in per.items()} for dim, per in ratings.items()
            }
        outs.append(out)
    return row


def _seed_lines(project: Project, media: MediaSink | None) -> Iterator[bytes]:
    judgments = Judgment.objects.filter(project=project, kind="ranking").values_list(
        "id",
        "task_id",
        "ranking",
        "task__prompt__external_id",
        "task__prompt__text",
        "task__prompt__image",
        "task__prompt__video",
    )
    for batch in _keyset(judgments):
        slots = _slots({j[1] for j in batch}, "candidate__text", "candidate__model_name")
        lines = []
        for _, task_id, ranking, external_id, text, image, video in batch:
            order = [c for c, _, _ in slots[task_id]]
            row = {"id": external_id, "prompt": text}
            row["responses"] = [t for _, t, _ in slots[task_id]]
            row["rankings"] = competition_ranks(ranking, order)
            models = [m for _, _, m in slots[task_id]]
            if not all(m == f"response-{i}" for i, m in enumerate(models)):
                row["models"] = models
            for key, stored in (("image", image), ("video", video)):
                name = _media_name(stored, media)
                if name:
                    row[key] = name
            lines.append(_dumps(row))
        lines.append(b"")
        yield _escape_line_breaks(b"\n".join(lines))


_ARENA_KEYS = ("tstamp", "anony", "question_id", "language")


def _arena_text(project: Project) -> Iterator[bytes]:
    """``json.dumps(rows, indent=1)`` of the arena rows, a batch at a time."""
    encoder = json.JSONEncoder(indent=1)
    judgments = Judgment.objects.filter(project=project, kind="pair").values_list(
        "id",
        "task_id",
        "outcome",
        "annotator_id",
        "annotator__username",
        "external_annotator",
        "task__prompt__metadata",
        "task__prompt__text",
    )
    first = True
    for batch in _keyset(judgments):
        slots = _slots({j[1] for j in batch}, "candidate__model_name")
        parts = []
        for _, task_id, outcome, annotator_id, username, external, metadata, text in batch:
            a, b = (m for _, m in slots[task_id])
            row = {
                "model_a": a,
                "model_b": b,
                "winner": _WINNER_BY_OUTCOME[outcome],
                "judge": username if annotator_id else external,
            }
            row.update({k: v for k, v in metadata.items() if k in _ARENA_KEYS})
            if text:
                row["prompt"] = text
            # The row as it stands inside the indented list: "[\n" + item + "\n]".
            parts.append(encoder.encode([row])[2:-2])
        yield (("[\n" if first else ",\n") + ",\n".join(parts)).encode()
        first = False
    yield b"[]" if first else b"\n]"


def export_project(project: Project, out_dir: str | Path, *, format: str = "quorum") -> Path:
    """Writes ``data.jsonl`` (``data.json`` for arena) and the media it names into out_dir."""
    _check_format(format)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(settings.MEDIA_ROOT)

    def copy(rel: str, stored: str) -> None:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / stored, target)

    path = out_dir / data_file_name(format)
    with open(path, "wb") as fh:
        for chunk in iter_export(project, format, media=copy):
            fh.write(chunk)
    return path


def iter_export_zip(project: Project, format: str = "quorum") -> Iterator[bytes]:
    """The export as a zip, streamed: ``data.jsonl`` (``data.json`` for arena) at the top, then
    the media it names under ``media/`` (what `export_project` writes, zipped). Imports as is.

    The rows are read and built in the caller's thread (its database connection); a helper
    thread compresses them, which zlib does without holding the GIL: on two cores the deflate
    runs beside the next batch's queries and row building instead of after them.
    """
    _check_format(format)
    named: dict[str, str] = {}
    zipper = _Zipper(data_file_name(format), named)
    try:
        for chunk in iter_export(project, format, media=named.__setitem__):
            zipper.put(chunk)
            yield from zipper.ready()
        yield from zipper.finish()
    finally:
        zipper.close()


_END = object()


class _Zipper:
    """Writes the zip of ``iter_export_zip`` in a thread of its own: ``put`` hands it the data
    file's chunks (at most ``depth`` waiting), ``ready`` returns the zip bytes written so far,
    ``finish`` ends the data file, adds the media named in ``named`` and returns the rest.
    An error in the thread is raised in the caller by ``ready``, ``put`` or ``finish``."""

    def __init__(self, data_name: str, named: dict[str, str], depth: int = 4) -> None:
        self.data_name = data_name
        self.named = named
        self.chunks: queue.Queue = queue.Queue(maxsize=depth)
        self.out: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.aborted = False
        self.thread = threading.Thread(target=self._run, name="raw-export-zip", daemon=True)
        self.thread.start()

    def put(self, chunk: bytes) -> None:
        while True:
            self._check()
            try:
                self.chunks.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def ready(self) -> list[bytes]:
        parts = []
        while True:
            try:
                part = self.out.get_nowait()
            except queue.Empty:
                break
            if part is _END:  # only after finish() asked for it
                self.out.put(_END)
                break
            parts.append(part)
        self._check()
        return parts

    def finish(self) -> Iterator[bytes]:
        self.put(_END)  # type: ignore[arg-type]
        while (part := self.out.get()) is not _END:
            yield part
        self.thread.join()
        self._check()

    def close(self) -> None:
        """Stops the thread if the caller left early (a client that hung up)."""
        if self.thread.is_alive():
            self.aborted = True
            while self.thread.is_alive():
                with contextlib.suppress(queue.Full):  # wakes a thread waiting for a chunk
                    self.chunks.put_nowait(_END)
                self.thread.join(timeout=0.1)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.out.put(_END)

    def _write(self) -> None:
        sink = _QueueSink(self.out)
        now = time.localtime()[:6]
        # Level 1: the text squeezes to about a third as at level 6, several times faster.
        with zipfile.ZipFile(
            sink,  # type: ignore[arg-type]
            "w",
            compression=zipfile.ZIP_DEFLATED,
            compresslevel=1,
            allowZip64=True,
        ) as archive:
            with archive.open(self.data_name, "w", force_zip64=True) as dst:
                while (chunk := self.chunks.get()) is not _END:
                    dst.write(chunk)
            if self.aborted:
                return
            root = Path(settings.MEDIA_ROOT)
            for rel, stored in self.named.items():
                # Media are compressed already: stored as they are.
                info = zipfile.ZipInfo(rel, now)
                with (
                    archive.open(info, "w", force_zip64=True) as dst,
                    open(root / stored, "rb") as src,
                ):
                    while (chunk := src.read(1 << 20)) and not self.aborted:
                        dst.write(chunk)
                if self.aborted:
                    return


class _QueueSink:
    """A write-only file for `zipfile` whose bytes go to a queue (another thread reads them)."""

    def __init__(self, out: queue.Queue) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass
