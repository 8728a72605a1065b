"""Writes for the annotate app. Every door (CLI, admin, API, annotator UI) calls these."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import random
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, OperationalError, connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotate.bulk_insert import (
    Same,
    columns_copy,
    columns_insert,
    ids_reserve,
    objects_insert,
    page_cache_grown,
    references_checked,
    references_trust_new_rows,
)
from annotate.importing import (
    EMPTY_ANSWER,
    CandidateRecord,
    ImportRejected,
    ParsedImport,
    Problem,
    PromptRecord,
    QuorumStream,
    export_root_in_zip,
    forked,
    parse_import,
    quorum_stream,
)
from annotate.media_metadata import strip_metadata
from annotate.models import (
    ApiToken,
    Candidate,
    ImportJob,
    Judgment,
    Membership,
    Project,
    Prompt,
    Task,
    TaskCandidate,
)
from annotate.rendering import markdown_html_stored_many
from annotate.table_stats import checkpoints_deferred, statistics_refresh, tables_analyze
from workers import jobs
from workers.jobs import job_enqueue

logger = logging.getLogger("quorum.annotate")

# Imports writing at least this many rows refresh the planner's statistics after commit.
ANALYZE_AFTER_ROWS = 1000


class JudgmentInvalid(ValueError):
    """A judgment does not fit its task. ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# --- judgments: the one validation every door uses ---------------------------------------


def judgment_validate(
    *,
    candidate_ids: Sequence[int],
    kind: str,
    ranking: object = None,
    outcome: object = None,
    ties_allowed: bool = True,
) -> list[list[int]] | str:
    """Checks a ranking or pair outcome against the task's candidates.

    Args:
        candidate_ids: the task's candidate ids in task order.
        kind: "ranking" or "pair".
        ranking: ordered tie groups of candidate ids, best first, covering every candidate
            exactly once; a flat list means no ties.
        outcome: for pairs, "a" (task position 0 won), "b", "tie" or "both_bad".
        ties_allowed: whether tie groups of more than one candidate (and pair ties) are allowed.

    Returns:
        The normalised ranking (list of lists of ints) or the outcome.
    """
    if kind == "pair":
        if len(candidate_ids) != 2:
            raise JudgmentInvalid("kind", "a pair judgment needs a task with exactly 2 candidates")
        if outcome not in Judgment.Outcome.values:
            raise JudgmentInvalid(
                "outcome", f"unknown value {outcome!r} (expected a, b, tie or both_bad)"
            )
        if outcome == "tie" and not ties_allowed:
            raise JudgmentInvalid("outcome", "ties are not allowed in this project")
        return str(outcome)
    if kind != "ranking":
        raise JudgmentInvalid("kind", f"unknown value {kind!r} (expected ranking or pair)")
    if not isinstance(ranking, list) or not ranking:
        raise JudgmentInvalid("ranking", "must be a non-empty list of tie groups")
    groups: list[list[int]] = []
    for group in ranking:
        items = group if isinstance(group, list) else [group]
        if not items:
            raise JudgmentInvalid("ranking", "tie groups must not be empty")
        for item in items:
            if not isinstance(item, int) or isinstance(item, bool):
                raise JudgmentInvalid("ranking", f"candidate ids must be integers, got {item!r}")
        if len(items) > 1 and not ties_allowed:
            raise JudgmentInvalid("ranking", "ties are not allowed in this project")
        groups.append(list(items))
    flat = [c for g in groups for c in g]
    if len(flat) != len(set(flat)):
        raise JudgmentInvalid("ranking", "a candidate appears more than once")
    expected = set(candidate_ids)
    if set(flat) != expected:
        missing = sorted(expected - set(flat))
        extra = sorted(set(flat) - expected)
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"not in this task {extra}")
        raise JudgmentInvalid(
            "ranking", "must cover exactly the task's candidates: " + ", ".join(detail)
        )
    return groups


def candidate_key(candidate_ids: Iterable[int]) -> str:
    return "-".join(str(c) for c in sorted(candidate_ids))


def plan_tasks(
    candidate_ids: Sequence[int], *, mode: str, n: int, seed: str
) -> list[tuple[int, ...]]:
    """Which candidate groups of a prompt become annotation tasks.

    Ranking: all candidates if there are at most N, else groups of N from a shuffle seeded by
    the prompt, the last group topped up so every candidate is ranked at least once.
    Pairwise: the pair, or for more candidates a cycle over a seeded shuffle (each candidate
    in two pairs; the comparison graph is connected, which a leaderboard needs).
    """
    ids = list(candidate_ids)
    if len(ids) < 2:
        return []
    size = 2 if mode == Project.Mode.PAIRWISE else n
    if len(ids) <= size:
        return [tuple(ids)]
    rng = random.Random(seed)  # seeding costs more than the rest for a prompt of N candidates
    order = ids[:]
    rng.shuffle(order)
    if size == 2:
        return [(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if len(groups[-1]) < size:
        rest = [c for c in order if c not in groups[-1]]
        groups[-1] += rng.sample(rest, size - len(groups[-1]))
    return [tuple(g) for g in groups]


# --- import --------------------------------------------------------------------------------


@dataclass
class ImportResult:
    project: Project
    format: str
    counts: dict[str, int] = field(default_factory=dict)
    # ``import_file(statistics_later=True)``: the tables whose planner statistics the caller
    # refreshes (``table_stats.statistics_refresh``); empty when the import wrote too little.
    stale_tables: list[str] = field(default_factory=list)


def import_limits() -> dict[str, int | None]:
    """The size limits every read of an import file applies (``parse_import``'s and
    ``quorum_stream``'s keyword arguments), from the settings."""
    return {
        "max_media_bytes": settings.QUORUM_MAX_MEDIA_BYTES,
        "max_file_bytes": settings.QUORUM_MAX_IMPORT_BYTES,
        "max_data_bytes": settings.QUORUM_MAX_DATA_BYTES,
        "max_text_chars": settings.QUORUM_MAX_TEXT_CHARS,
        "max_image_pixels": settings.QUORUM_MAX_IMAGE_PIXELS,
    }


def _project_defaults(parsed: ParsedImport) -> dict:
    if parsed.format == "arena":
        return {"mode": Project.Mode.PAIRWISE, "candidates_per_task": 2}
    sizes = [len(p.candidates) for p in parsed.prompts] or [4]
    all_pairs = all(j.kind == "pair" for p in parsed.prompts for j in p.judgments)
    if parsed.format == "quorum" and all_pairs and max(sizes) == 2:
        return {"mode": Project.Mode.PAIRWISE, "candidates_per_task": 2}
    return {"mode": Project.Mode.RANKING, "candidates_per_task": max(2, min(8, max(sizes)))}


_SETTING_FIELDS = {
    "mode": str,
    "candidates_per_task": int,
    "annotators_per_task": int,
    "ties_allowed": bool,
    "blind": bool,
    "instructions": str,
    "rubric_dimensions": list,
    "gold_rate": float,
    "lease_minutes": int,
}


def _project_from_settings(name: str, parsed: ParsedImport) -> Project:
    values = _project_defaults(parsed)
    for key, value in parsed.project_settings.items():
        expected = _SETTING_FIELDS.get(key)
        if expected is None:
            raise ImportRejected([Problem(1, f"project.{key}", "unknown project setting")])
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ImportRejected([Problem(1, f"project.{key}", f"must be {expected.__name__}")])
        values[key] = value
    if values.get("mode") not in Project.Mode.values:
        raise ImportRejected([Problem(1, "project.mode", f"unknown value {values.get('mode')!r}")])
    project = Project(name=name, **values)
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError as exc:
        raise ImportRejected([Problem(1, "project", f"invalid project settings ({exc})")]) from None
    return project


def _store_media(project: Project, parsed: ParsedImport, created: list[str]) -> dict[str, str]:
    """Writes checked media under content-addressed names; returns storage name by import name.

    Names carry no model or file name, and the files no metadata (``strip_metadata``), so blind
    projects leak nothing through media URLs or bytes. Names stay those of the imported bytes,
    so a re-import finds the files it stored.
    """
    stored: dict[str, str] = {}
    for ref in parsed.media.values():
        name = f"p{project.pk}/{ref.sha256[:2]}/{ref.sha256}.{ref.ext}"
        if not default_storage.exists(name):
            try:
                data = strip_metadata(parsed.source.read_media(ref.name), ref.ext)
            except ValueError as exc:
                line, fld = ref.__dict__.get("first_use", (None, ref.name))
                raise ImportRejected([Problem(line, fld, f"{ref.name!r}: {exc}")]) from None
            saved = default_storage.save(name, ContentFile(data))
            created.append(saved)
            name = saved
        stored[ref.name] = name
    return stored


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after, as it was).

    An import allocates a few objects per field of every row (500,000 for 10,000 prompts of 4
    candidates), none in a cycle: reference counting frees them, and the collections those
    allocations trigger find nothing, yet each full one walks every object of the process:
    0.34 s of an import's 1.7 s of CPU measured (issue 13). Process-wide: another thread's
    collections wait for the block's end too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def import_file(
    *,
    path: str | Path,
    project: Project | None = None,
    project_name: str | None = None,
    format: str | None = None,
    source_name: str | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    created_by: AbstractBaseUser | None = None,
    statistics_later: bool = False,
) -> ImportResult:
    """Imports a file into a project (created when missing), all or nothing.

    A project created by the import gets `created_by` (the person importing) as its admin, so
    it is never left without one.

    Re-importing the same file creates nothing new: prompts and candidates are matched by
    external id, tasks by their candidate set, judgments by idempotency key.

    A large import refreshes the planner statistics of the tables it wrote once it commits;
    ``statistics_later``: not here, the caller does (the tables are the result's
    ``stale_tables``), as an import job does once the job is marked done.

    Raises:
        ImportRejected: with every problem found, naming line and field; the database and
            media storage are left unchanged.
    """
    with _collector_paused(), page_cache_grown():
        return _import_file(
            path=Path(path),
            project=project,
            project_name=project_name,
            format=format,
            source_name=source_name,
            on_progress=on_progress,
            created_by=created_by,
            statistics_later=statistics_later,
        )


def _import_file(
    *,
    path: Path,
    project: Project | None,
    project_name: str | None,
    format: str | None,
    source_name: str | None,
    on_progress: Callable[[str, int, int], None] | None,
    created_by: AbstractBaseUser | None,
    statistics_later: bool,
) -> ImportResult:
    if connection.vendor in ("postgresql", "sqlite"):
        streamed = _import_streamed(
            path=path,
            project=project,
            project_name=project_name,
            format=format,
            source_name=source_name,
            on_progress=on_progress,
            created_by=created_by,
            statistics_later=statistics_later,
        )
        if streamed is not None:
            return streamed
    parsed = parse_import(
        path,
        format=format,
        source_name=source_name,
        **import_limits(),
        on_progress=on_progress,
    )
    created_media: list[str] = []
    state = {"committed": False}
    stale_tables: list[str] = []
    try:
        with transaction.atomic():
            # Runs first among the commit callbacks: from then on the rows exist and their
            # media must stay, whatever a later callback does.
            transaction.on_commit(lambda: state.update(committed=True))
            if project is None:
                name = project_name or path.stem
                project = Project.objects.filter(name=name).first()
                if project is None:
                    project = _project_from_settings(name, parsed)
                    if created_by is not None:
                        Membership.objects.create(
                            project=project, user=created_by, role=Membership.Role.ADMIN
                        )
            counts = _write_records(project, parsed, created_media, on_progress)
            stale_tables = _import_written(project, counts, statistics_later)
    except BaseException:
        if not state["committed"]:
            for name in created_media:
                default_storage.delete(name)
        raise
    finally:
        parsed.source.close()
    return ImportResult(
        project=project, format=parsed.format, counts=counts, stale_tables=stale_tables
    )


def _import_written(project: Project, counts: dict, statistics_later: bool) -> list[str]:
    """What an import does once its rows are written, inside its transaction (``counts``:
    ``_write_records``', its ``_new_prompt_ids`` taken out); returns the tables whose
    statistics the caller refreshes (``statistics_later``)."""
    new_prompt_ids = counts.pop("_new_prompt_ids")
    stale_tables: list[str] = []
    written = ("prompts", "candidates", "tasks", "judgments")
    if sum(counts.get(k, 0) for k in written) >= ANALYZE_AFTER_ROWS:
        # Fresh planner statistics once this commits (stale ones made next-task slow),
        # of the tables this import wrote (judgments also change their tasks' rows).
        if statistics_later:
            stale_tables = _written_tables(counts)
        else:
            tables_analyze(_written_tables(counts))
    if counts["judgments"]:
        # New evidence: the project's flags and annotator figures are recomputed.
        flags_recompute_job(project_id=project.pk)
    if new_prompt_ids and project.active_reward_model_id:
        from workers.scoring import scoring_run_start

        # Recorded with the rows, published on commit: the gpu workers pre-rank the
        # new candidates.
        scoring_run_start(project=project, prompt_ids=new_prompt_ids, reason="import")
    return stale_tables


# ``_import_streamed``: rows parsed per chunk while the chunk before is stored.
STREAM_CHUNK_ROWS = 1000


class _NotStreamed(Exception):
    """The streamed import does not take this import: ``parse_import`` and ``_write_records``
    do (and report any problem)."""


def _import_streamed(
    *,
    path: Path,
    project: Project | None,
    project_name: str | None,
    format: str | None,
    source_name: str | None,
    on_progress: Callable[[str, int, int], None] | None,
    created_by: AbstractBaseUser | None,
    statistics_later: bool,
) -> ImportResult | None:
    """A Quorum JSONL file of text candidates into a project without prompts, parsed
    ``STREAM_CHUNK_ROWS`` rows at a time while the chunk before is stored. PostgreSQL: each
    chunk's candidates written into one ``COPY`` left open (``bulk_insert.columns_copy``)
    before the next chunk is parsed: the server stores a chunk while Python parses the next,
    where parsing everything first left it idle (the peer file's 40,000 candidates 1.13 ->
    0.88 s, bench/peers/import_h17a_interleave.py); then the prompts, tasks and slots, as
    ``_write_records``. SQLite, a file without judgments: parsed and planned in a forked child
    process, each chunk's rows of the four tables inserted here as they come
    (``_write_forked``).

    None, with nothing written, where today's path is needed: any problem in the file (the
    ``COPY`` cancelled, the transaction rolled back: ``parse_import`` then reports them all,
    in its order), media, other formats, a project with prompts, a project to create whose
    mode and task size its settings do not both give (its defaults depend on every row).
    """
    stream = quorum_stream(
        path,
        format=format,
        source_name=source_name,
        **import_limits(),
        unjudged=connection.vendor == "sqlite",  # _write_forked's
    )
    if stream is None:
        return None
    try:
        with transaction.atomic():
            if project is None:
                name = project_name or path.stem
                project = Project.objects.filter(name=name).first()
                if project is None:
                    if not {"mode", "candidates_per_task"} <= stream.project_settings.keys():
                        raise _NotStreamed
                    project = _project_from_settings(
                        name, ParsedImport("quorum", [], stream.project_settings, {}, stream.source)
                    )
                    if created_by is not None:
                        Membership.objects.create(
                            project=project, user=created_by, role=Membership.Role.ADMIN
                        )
            counts = _write_streamed(project, stream, on_progress)
            stale_tables = _import_written(project, counts, statistics_later)
    except (_NotStreamed, ImportRejected, IntegrityError):
        return None
    finally:
        stream.source.close()
    return ImportResult(project=project, format="quorum", counts=counts, stale_tables=stale_tables)


def _write_streamed(
    project: Project,
    stream: QuorumStream,
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, int]:
    """``_import_streamed``'s writes, in its transaction; ``_write_records``' counts."""
    if Prompt.objects.filter(project=project).exists():
        raise _NotStreamed  # appending: what exists is looked up first
    if connection.vendor == "sqlite":
        return _write_forked(project, stream, on_progress)
    trusted = references_trust_new_rows(model=Project, pk=project.pk)
    n = len(stream.rows)
    prompt_pks = ids_reserve(Prompt, n)  # one prompt a row (else a problem: not streamed)
    records: list[PromptRecord] = []
    created_at = timezone.now()
    fields = ["project_id", "prompt_id", "external_id", "model_name", "kind", "text"]
    fields += ["text_html", "media", "metadata", "created_at"]
    n_cands = empty_answers = 0
    with columns_copy(Candidate, fields, checks_hold=True) as write:
        for start in range(0, n, STREAM_CHUNK_ROWS):
            chunk = stream.records(start, start + STREAM_CHUNK_ROWS)
            if chunk is None:
                raise _NotStreamed  # a problem (or media): the COPY is cancelled
            cands = [c for p in chunk for c in p.candidates]
            texts = [c.text for c in cands]
            metadata = [c.metadata for c in cands]
            write(
                {
                    "project_id": Same(project.pk),
                    "prompt_id": [
                        pk
                        for p, pk in zip(chunk, prompt_pks[start : start + len(chunk)], strict=True)
                        for _ in p.candidates
                    ],
                    "external_id": [c.external_id for c in cands],
                    "model_name": [c.model_name for c in cands],
                    "kind": [c.kind for c in cands],
                    "text": texts,
                    "text_html": markdown_html_stored_many(texts),
                    "media": Same(""),
                    "metadata": metadata,
                    "created_at": Same(created_at),
                }
            )
            n_cands += len(cands)
            empty_answers += sum(1 for m in metadata if m and m.get(EMPTY_ANSWER))
            records += chunk
    if len(records) != n:
        raise RuntimeError(f"streamed import: {len(records)} prompts of {n} rows")
    if on_progress:
        on_progress("rows", stream.total, stream.total)
    problems = _mode_problems(project, records)
    if problems:
        raise ImportRejected(problems)
    texts = [p.text for p in records]
    columns_insert(
        Prompt,
        {
            "project_id": Same(project.pk),
            "external_id": [p.external_id for p in records],
            "text": texts,
            "text_html": markdown_html_stored_many(texts),
            "image": Same(""),
            "video": Same(""),
            "metadata": [p.metadata for p in records],
        },
        checks_hold=True,
        ids=prompt_pks,
    )
    # The candidates' ids: the table's sequence gave them in the COPY's row order, and the
    # project had none before (more rows: another import into it committed meanwhile, which
    # today's path handles).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_agg(id ORDER BY id) FROM annotate_candidate WHERE project_id = %s",
            [project.pk],
        )
        cand_pks = cursor.fetchone()[0] or []
    if len(cand_pks) != n_cands:
        raise _NotStreamed
    counts = dict.fromkeys(("prompts", "candidates", "tasks", "judgments", "skipped_existing"), 0)
    counts["prompts"] = n
    counts["candidates"] = n_cands
    counts["empty_answers"] = empty_answers
    prompts = {p.external_id: pk for p, pk in zip(records, prompt_pks, strict=True)}
    cand_ids = (c.external_id for p in records for c in p.candidates)
    cands = dict(zip(cand_ids, cand_pks, strict=True))
    if on_progress:
        on_progress("write", n // 3, n)
    return _write_tasks_and_judgments(
        project,
        records,
        prompts=prompts,
        cands=cands,
        new_prompt_ids=set(prompts),
        new_prompt_pks=prompt_pks,
        fresh=True,
        trusted=trusted,
        counts=counts,
        on_progress=on_progress,
    )


def _write_forked(
    project: Project,
    stream: QuorumStream,
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, int]:
    """SQLite, ``_write_streamed``'s writes of a file without judgments: the rows parsed and
    turned into the four tables' columns in a forked child process (``importing.forked``,
    ``_forked_columns``) a chunk at a time, each chunk's rows inserted here as it arrives, so
    that the parse and the task planning (0.3 s of CPU at 10,000 prompts) run on the other
    core beside the inserts instead of before them (where no core is idle, or the file is one
    chunk: the same columns made here, no child).

    The ids are the tables' next ones (``ids_reserve``: nothing else writes them until this
    transaction ends, SQLite's write lock held from its start), given in row order as
    ``_write_records`` gives them: prompts and candidates in the file's order, tasks in
    ``_plan_new_prompt``'s, slots in their tasks' order."""
    first = {model: ids_reserve(model, 1)[0] for model in (Prompt, Candidate, Task, TaskCandidate)}
    size = 2 if project.mode == Project.Mode.PAIRWISE else project.candidates_per_task
    project_id = Same(project.pk)
    # Each table's columns of one value, as ``_write_records`` gives them.
    constants = {
        Prompt: {"project_id": project_id, "image": Same(""), "video": Same("")},
        Candidate: {
            "project_id": project_id,
            "media": Same(""),
            "created_at": Same(timezone.now()),
        },
        Task: {"project_id": project_id},
        TaskCandidate: {},
    }
    done = dict.fromkeys(first, 0)
    empty_answers = 0
    prompt_pks: list[int] = []
    chunks = _forked_columns(stream, project, size, first)
    # One chunk: nothing to overlap. A busy machine: the child's CPU would compete with this
    # process's instead of using an idle core (the peer import until done 1.45 -> 2.0 s at
    # load 5-7 on 2 cores, bench/peers/import_h20a_fork.py). Either way: here, no child.
    fork = settings.QUORUM_IMPORT_FORK
    if len(stream.rows) > STREAM_CHUNK_ROWS and (
        fork == "always" or (fork == "auto" and _core_idle())
    ):
        chunks = forked(chunks)
        logger.info("import into project %s: rows parsed in a forked child", project.pk)
    with closing(chunks):
        for item in chunks:
            if item is None:
                raise _NotStreamed  # a problem, media or a judgment: parse_import's
            columns, empty = item
            for (model, same), cols in zip(constants.items(), columns, strict=True):
                n = len(next(iter(cols.values())))
                start = first[model] + done[model]
                pks = columns_insert(
                    model, {**cols, **same}, checks_hold=True, ids=range(start, start + n)
                )
                done[model] += n
                if model is Prompt:
                    prompt_pks += pks
            empty_answers += empty
    if done[Prompt] != len(stream.rows):
        raise RuntimeError(f"forked import: {done[Prompt]} prompts of {len(stream.rows)} rows")
    if on_progress:
        on_progress("rows", stream.total, stream.total)
        on_progress("write", done[Prompt], done[Prompt])
    return {
        "prompts": done[Prompt],
        "candidates": done[Candidate],
        "tasks": done[Task],
        "judgments": 0,
        "skipped_existing": 0,
        "empty_answers": empty_answers,
        "_new_prompt_ids": prompt_pks,
    }


def _forked_columns(
    stream: QuorumStream, project: Project, size: int, first: dict[type[models.Model], int]
) -> Iterator[tuple[list[dict[str, list]], int] | None]:
    """``_write_forked``'s child: for each chunk of rows the columns of its prompts,
    candidates, tasks and slots (plain lists, ids from ``first``: each table's first id; the
    columns of one value left to ``_write_forked``) and its count of empty answers; None at the
    first row ``_write_forked`` cannot take."""
    prompt_pk, cand_pk, task_pk = first[Prompt], first[Candidate], first[Task]
    for chunk in stream.chunks(STREAM_CHUNK_ROWS):
        if chunk is None or any(p.judgments for p in chunk):
            yield None
            return
        wanted: dict[tuple[int, str], tuple[int, ...]] = {}
        for pk, p in enumerate(chunk, start=prompt_pk):
            ids = list(range(cand_pk, cand_pk + len(p.candidates)))
            cand_pk += len(ids)
            _plan_new_prompt(wanted, project, size, pk, ids, p.external_id)
        cands = [c for p in chunk for c in p.candidates]
        prompt_texts, texts = [p.text for p in chunk], [c.text for c in cands]
        metadata = [c.metadata for c in cands]
        keys = list(wanted)
        groups = [wanted[k] for k in keys]
        columns = [
            {
                "external_id": [p.external_id for p in chunk],
                "text": prompt_texts,
                "text_html": _plain_strs(markdown_html_stored_many(prompt_texts)),
                "metadata": [p.metadata for p in chunk],
            },
            {
                "prompt_id": [
                    pk for pk, p in enumerate(chunk, start=prompt_pk) for _ in p.candidates
                ],
                "external_id": [c.external_id for c in cands],
                "model_name": [c.model_name for c in cands],
                "kind": [c.kind for c in cands],
                "text": texts,
                "text_html": _plain_strs(markdown_html_stored_many(texts)),
                "metadata": metadata,
            },
            {
                "prompt_id": [k[0] for k in keys],
                "candidate_key": [k[1] for k in keys],
            },
            {
                "task_id": [
                    pk for pk, g in enumerate(groups, start=task_pk) for _ in range(len(g))
                ],
                "candidate_id": [c for g in groups for c in g],
                "position": [position for g in groups for position in range(len(g))],
            },
        ]
        yield columns, sum(1 for m in metadata if m and m.get(EMPTY_ANSWER))
        prompt_pk += len(chunk)
        task_pk += len(keys)


def _core_idle() -> bool:
    """Whether a core is free on average for a second process: the last minute's load average
    (this process's own run included) at least half a core under the cores it may use."""
    return os.getloadavg()[0] < len(os.sched_getaffinity(0)) - 0.5


def _plain_strs(texts: list[str]) -> list[str]:
    """``texts`` as plain ``str`` (``marshal`` refuses ``SafeString`` and other subclasses)."""
    return list(map(str.__str__, texts))


def _written_tables(counts: dict[str, int]) -> list[str]:
    """The tables an import with these counts wrote rows to (inserted or updated)."""
    written = {
        Prompt: counts.get("prompts", 0),
        Candidate: counts.get("candidates", 0),
        Task: counts.get("tasks", 0) + counts.get("judgments", 0),
        TaskCandidate: counts.get("tasks", 0),
        Judgment: counts.get("judgments", 0),
    }
    return [model._meta.db_table for model, n in written.items() if n]


def _mode_problems(project: Project, prompt_records: list[PromptRecord]) -> list[Problem]:
    """The judgments of ``prompt_records`` that ``project`` cannot take (ranking judgments in a
    pairwise project, ties where it allows none)."""
    problems: list[Problem] = []
    if project.mode == Project.Mode.PAIRWISE:
        for p in prompt_records:
            for j in p.judgments:
                if j.kind == "ranking":
                    problems.append(
                        Problem(
                            j.line,
                            "judgments",
                            f"project {project.name!r} is pairwise: ranking judgments cannot be imported into it",
                        )
                    )
    if not project.ties_allowed:
        for p in prompt_records:
            for j in p.judgments:
                if (j.ranking and any(len(g) > 1 for g in j.ranking)) or j.outcome == "tie":
                    problems.append(
                        Problem(
                            j.line, "judgments", f"project {project.name!r} does not allow ties"
                        )
                    )
    return problems


def _write_records(
    project: Project,
    parsed: ParsedImport,
    created_media: list[str],
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, int]:
    problems = _mode_problems(project, parsed.prompts)
    if problems:
        raise ImportRejected(problems)

    stored = _store_media(project, parsed, created_media)
    counts = dict.fromkeys(("prompts", "candidates", "tasks", "judgments", "skipped_existing"), 0)

    # Prompts. A project without prompts holds no candidates or tasks either (they hang off
    # prompts): its first import needs no look-ups of what exists.
    fresh = not Prompt.objects.filter(project=project).exists()
    # Every row written from here to references_checked references rows written here, or
    # the project (PostgreSQL: their foreign-key checks are skipped).
    trusted = fresh and references_trust_new_rows(model=Project, pk=project.pk)
    ext_ids = [p.external_id for p in parsed.prompts]
    prompts: dict[str, int] = (
        {}
        if fresh
        else dict(
            _chunked_filter(
                Prompt.objects.filter(project=project).values_list("external_id", "pk"),
                "external_id",
                set(ext_ids),
            )
        )
    )
    new_prompts = [p for p in parsed.prompts if p.external_id not in prompts]
    # Column by column (annotate.bulk_insert.columns_insert): no row tuples, one markdown
    # pass over the texts, media columns only when the file names media. ``checks_hold``:
    # the four tables' CHECK constraints hold by construction (metadata: dicts the parser
    # checked, dumped without NaN; candidate kind: one of the parser's KINDS; task status,
    # counters, gold ranking: their defaults; slot positions: ``range``), so SQLite skips
    # evaluating them (tests/annotate/test_import_h13i_checks.py lists them).
    texts = [p.text for p in new_prompts]
    has_media = bool(stored)
    new_prompt_pks = columns_insert(
        Prompt,
        {
            "project_id": Same(project.pk),
            "external_id": [p.external_id for p in new_prompts],
            "text": texts,
            "text_html": markdown_html_stored_many(texts),
            "image": [stored[p.image.name] if p.image else "" for p in new_prompts]
            if has_media
            else Same(""),
            "video": [stored[p.video.name] if p.video else "" for p in new_prompts]
            if has_media
            else Same(""),
            "metadata": [p.metadata for p in new_prompts],
        },
        checks_hold=True,
    )
    counts["prompts"] = len(new_prompts)
    prompts.update(zip((p.external_id for p in new_prompts), new_prompt_pks, strict=True))
    new_prompt_ids = {p.external_id for p in new_prompts}

    # Candidates: written as columns (no model instances: 4+ per prompt); ``cands`` holds pks.
    existing_cands: dict[str, tuple[int, int]] = {}
    if not fresh:
        cand_ext_ids = {c.external_id for p in parsed.prompts for c in p.candidates}
        for ext, pk, prompt_pk in _chunked_filter(
            Candidate.objects.filter(project=project).values_list("external_id", "pk", "prompt_id"),
            "external_id",
            cand_ext_ids,
        ):
            existing_cands[ext] = (pk, prompt_pk)
    new_cands: list[CandidateRecord] = []
    new_cand_prompts: list[int] = []
    for p in parsed.prompts:
        prompt_pk = prompts[p.external_id]
        if not existing_cands:
            new_cands += p.candidates
            new_cand_prompts += [prompt_pk] * len(p.candidates)
            continue
        for c in p.candidates:
            old = existing_cands.get(c.external_id)
            if old is not None:
                if old[1] != prompt_pk:
                    problems.append(
                        Problem(
                            p.line,
                            "candidates",
                            f"candidate id {c.external_id!r} already belongs to another prompt in project {project.name!r}",
                        )
                    )
                continue
            new_cands.append(c)
            new_cand_prompts.append(prompt_pk)
    if problems:
        raise ImportRejected(problems)
    texts = [c.text for c in new_cands]
    new_cand_ext_ids = [c.external_id for c in new_cands]
    metadata = [c.metadata for c in new_cands]
    new_cand_pks = columns_insert(
        Candidate,
        {
            "project_id": Same(project.pk),
            "prompt_id": new_cand_prompts,
            "external_id": new_cand_ext_ids,
            "model_name": [c.model_name for c in new_cands],
            "kind": [c.kind for c in new_cands],
            "text": texts,
            "text_html": markdown_html_stored_many(texts),
            "media": [stored[c.media.name] if c.media else "" for c in new_cands]
            if has_media
            else Same(""),
            "metadata": metadata,
            "created_at": Same(timezone.now()),
        },
        checks_hold=True,
    )
    counts["candidates"] = len(new_cands)
    counts["empty_answers"] = sum(1 for m in metadata if m and m.get(EMPTY_ANSWER))
    cands = {ext: pk for ext, (pk, _) in existing_cands.items()}
    cands.update(zip(new_cand_ext_ids, new_cand_pks, strict=True))
    if on_progress:
        on_progress("write", len(parsed.prompts) // 3, len(parsed.prompts))

    return _write_tasks_and_judgments(
        project,
        parsed.prompts,
        prompts=prompts,
        cands=cands,
        new_prompt_ids=new_prompt_ids,
        new_prompt_pks=new_prompt_pks,
        fresh=fresh,
        trusted=trusted,
        counts=counts,
        on_progress=on_progress,
    )


def _plan_new_prompt(
    wanted: dict[tuple[int, str], tuple[int, ...]],
    project: Project,
    size: int,
    prompt_pk: int,
    ids: list[int],
    seed: str,
) -> None:
    """The annotation tasks of a new prompt without judgments (its candidates' ids ``ids``,
    its external id ``seed``) added to ``wanted`` by (prompt, candidate key), those there kept;
    ``size``: the project's task size."""
    if 2 <= len(ids) <= size:  # one task of them all (plan_tasks' first case)
        wanted.setdefault((prompt_pk, candidate_key(ids)), tuple(ids))
    else:
        for group in plan_tasks(ids, mode=project.mode, n=project.candidates_per_task, seed=seed):
            wanted.setdefault((prompt_pk, candidate_key(group)), group)


def _write_tasks_and_judgments(
    project: Project,
    prompt_records: list[PromptRecord],
    *,
    prompts: dict[str, int],
    cands: dict[str, int],
    new_prompt_ids: set[str],
    new_prompt_pks: list[int],
    fresh: bool,
    trusted: bool,
    counts: dict[str, int],
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, int]:
    """The import's tasks, slots and judgments, its prompts and candidates written (their pks
    by external id: ``prompts``, ``cands``); ``_write_records``' last part, and the streamed
    import's (``_write_streamed``)."""
    problems: list[Problem] = []
    # Tasks: one per imported judgment's candidate set; new prompts that bring no judgments
    # get planned annotation tasks (a prompt's judged sets are its tasks otherwise).
    wanted: dict[tuple[int, str], tuple[int, ...]] = {}
    size = 2 if project.mode == Project.Mode.PAIRWISE else project.candidates_per_task
    for p in prompt_records:
        prompt_pk = prompts[p.external_id]
        if p.external_id in new_prompt_ids and not p.judgments:
            ids = [cands[c.external_id] for c in p.candidates]
            _plan_new_prompt(wanted, project, size, prompt_pk, ids, p.external_id)
        for j in p.judgments:
            if j.kind == "pair":
                group = tuple(cands[c] for c in j.pair)
            else:  # slots in the file's candidate order, not the ranking's
                members = {c for g in j.ranking for c in g}
                group = tuple(
                    cands[c.external_id] for c in p.candidates if c.external_id in members
                )
            wanted.setdefault((prompt_pk, candidate_key(group)), group)
    existing_tasks: dict[tuple[int, str], int] = (
        {}
        if fresh
        else {
            (prompt_pk, key): pk
            for prompt_pk, key, pk in _chunked_filter(
                Task.objects.filter(project=project).values_list(
                    "prompt_id", "candidate_key", "pk"
                ),
                "prompt_id",
                {prompts[p.external_id] for p in prompt_records},
            )
        }
    )
    new_task_keys = [k for k in wanted if k not in existing_tasks]
    new_task_pks = columns_insert(
        Task,
        {
            "project_id": Same(project.pk),
            "prompt_id": [k[0] for k in new_task_keys],
            "candidate_key": [k[1] for k in new_task_keys],
        },
        checks_hold=True,
    )
    groups = [wanted[k] for k in new_task_keys]
    columns_insert(
        TaskCandidate,
        {
            "task_id": [pk for pk, g in zip(new_task_pks, groups, strict=True) for _ in g],
            "candidate_id": [c for g in groups for c in g],
            "position": [position for g in groups for position in range(len(g))],
        },
        checks_hold=True,
    )
    counts["tasks"] = len(new_task_keys)
    if on_progress:
        on_progress("write", 2 * len(prompt_records) // 3, len(prompt_records))
    if not any(p.judgments for p in prompt_records):
        if trusted:
            references_checked()
        if on_progress:
            on_progress("write", len(prompt_records), len(prompt_records))
        counts["_new_prompt_ids"] = new_prompt_pks
        return counts
    tasks = {**existing_tasks, **dict(zip(new_task_keys, new_task_pks, strict=True))}
    task_order: dict[int, list[int]] = {
        pk: list(g) for pk, g in zip(new_task_pks, groups, strict=True)
    }
    old_task_pks = list(existing_tasks.values())
    for slot in _chunked_filter(
        TaskCandidate.objects.order_by("task_id", "position"), "task_id", old_task_pks
    ):
        task_order.setdefault(slot.task_id, []).append(slot.candidate_id)

    # Judgments
    def final_key(raw: str) -> str:
        if raw.startswith(f"import:{project.pk}:"):
            return raw  # exported from this project: the same judgment
        key = f"import:{project.pk}:{raw}"
        return (
            key
            if len(key) <= 200
            else f"import:{project.pk}:{hashlib.sha1(raw.encode()).hexdigest()}"
        )

    keys = [final_key(j.idempotency_key) for p in prompt_records for j in p.judgments]
    existing_keys = set(
        _chunked_filter(
            Judgment.objects.values_list("idempotency_key", flat=True), "idempotency_key", keys
        )
    )
    new_judgments = []
    added: dict[int, int] = defaultdict(int)
    for p in prompt_records:
        prompt_pk = prompts[p.external_id]
        for j in p.judgments:
            key = final_key(j.idempotency_key)
            if key in existing_keys:
                counts["skipped_existing"] += 1
                continue
            existing_keys.add(key)
            members = j.pair if j.kind == "pair" else [c for g in j.ranking for c in g]
            task_pk = tasks[(prompt_pk, candidate_key(cands[c] for c in members))]
            order = task_order[task_pk]
            try:
                if j.kind == "pair":
                    b = cands[j.pair[1]]
                    outcome = j.outcome
                    if order[0] == b and outcome in ("a", "b"):
                        outcome = "b" if outcome == "a" else "a"  # the task holds the pair reversed
                    outcome = judgment_validate(
                        candidate_ids=order,
                        kind="pair",
                        outcome=outcome,
                        ties_allowed=project.ties_allowed,
                    )
                    ranking = None
                else:
                    ranking = judgment_validate(
                        candidate_ids=order,
                        kind="ranking",
                        ranking=[[cands[c] for c in g] for g in j.ranking],
                        ties_allowed=project.ties_allowed,
                    )
                    outcome = ""
            except JudgmentInvalid as exc:
                problems.append(Problem(j.line, "judgments." + exc.field, str(exc)))
                continue
            unknown = [d for d in j.ratings if d not in (project.rubric_dimensions or [])]
            if unknown:
                problems.append(
                    Problem(
                        j.line,
                        f"judgments.ratings.{unknown[0]}",
                        f"unknown dimension {unknown[0]!r} (the project's rubric: "
                        f"{', '.join(project.rubric_dimensions or []) or 'none'})",
                    )
                )
                continue
            new_judgments.append(
                Judgment(
                    project=project,
                    task_id=task_pk,
                    source=Judgment.Source.EXTERNAL,
                    source_name=j.source_name[:200],
                    external_annotator=str(j.external_annotator)[:200],
                    kind=j.kind,
                    ranking=ranking,
                    outcome=outcome,
                    rationale=j.rationale,
                    duration_ms=j.duration_ms,
                    presented_order=[cands[c] for c in j.presented_order]
                    if j.presented_order
                    else [],
                    # Keyed by candidate id as text, as a submitted judgment stores them.
                    ratings={
                        dim: {str(cands[c]): v for c, v in per.items()}
                        for dim, per in j.ratings.items()
                    },
                    idempotency_key=key,
                )
            )
            added[task_pk] += 1
    if problems:
        raise ImportRejected(problems)
    objects_insert(new_judgments)
    counts["judgments"] = len(new_judgments)

    # Counters: one UPDATE per (increment, chunk) instead of one per task, then statuses.
    by_increment: dict[int, list[int]] = defaultdict(list)
    for task_pk, n in added.items():
        if n > 0:
            by_increment[n].append(task_pk)
    for n, task_pks in by_increment.items():
        for start in range(0, len(task_pks), 900):
            Task.objects.filter(pk__in=task_pks[start : start + 900]).update(
                judgment_count=F("judgment_count") + n
            )
    touched = [pk for pks in by_increment.values() for pk in pks]
    for start in range(0, len(touched), 900):
        Task.objects.filter(pk__in=touched[start : start + 900], status=Task.Status.OPEN).filter(
            judgment_count__gte=Coalesce("required_judgments", Value(project.annotators_per_task))
        ).update(status=Task.Status.COMPLETE)
    if trusted:
        references_checked()
    if on_progress:
        on_progress("write", len(prompt_records), len(prompt_records))
    counts["_new_prompt_ids"] = new_prompt_pks
    return counts


def _chunked_filter(queryset, field_name: str, values, size: int = 900):
    """Filters ``field__in`` in chunks (SQLite limits query parameters)."""
    values = list(values)
    for start in range(0, len(values), size):
        yield from queryset.filter(**{f"{field_name}__in": values[start : start + size]})


def _fetch_by_external_id(queryset, ext_ids) -> dict:
    return {obj.external_id: obj for obj in _chunked_filter(queryset, "external_id", set(ext_ids))}


# --- import jobs (admin and API doors; large files go to Celery) -------------------------


def _count_rows(path: Path) -> int:
    """Rows of a JSONL file, or of the data file inside a zip (0 when unknown before parsing:
    one JSON document, an unreadable zip -- the import itself reports those)."""
    import zipfile
    from pathlib import PurePosixPath

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            return _count_lines(fh)
    try:
        with zipfile.ZipFile(path) as archive:
            export = export_root_in_zip(archive, max_bytes=settings.QUORUM_MAX_MEDIA_BYTES)
            if export is not None:  # one row per ranking, as its datasheet counts them
                rankings = (export[1].get("counts") or {}).get("rankings")
                return rankings if isinstance(rankings, int) and rankings >= 0 else 0
            data = sorted(
                (
                    PurePosixPath(i.filename)
                    for i in archive.infolist()
                    if i.filename.endswith((".jsonl", ".json"))
                    and "__MACOSX" not in PurePosixPath(i.filename).parts
                ),
                key=lambda p: (len(p.parts), str(p)),
            )
            if not data:
                return 0
            with archive.open(str(data[0])) as fh:
                return _count_lines(fh)
    except (zipfile.BadZipFile, OSError, KeyError):
        return 0


def _count_lines(fh) -> int:
    head = fh.read(1)
    while head.isspace():
        head = fh.read(1)
    if head == b"[":
        return 0  # one JSON document; counted while parsing
    fh.seek(0)
    return sum(1 for line in fh if line.strip())


def import_job_create(
    *,
    path: str | Path,
    project: Project | None = None,
    project_name: str = "",
    format: str | None = None,
    original_name: str = "",
    created_by: AbstractBaseUser | None = None,
    run_async: bool | None = None,
) -> ImportJob:
    """Records an import and runs it: inline for small files, as a Celery task for large ones.

    The Celery task is enqueued only after the job row is committed.
    """
    path = Path(path)
    rows = _count_rows(path)
    if run_async is None:
        run_async = (
            rows == 0
            and path.stat().st_size > 2_000_000
            or rows > settings.QUORUM_ASYNC_IMPORT_ROWS
        )
    with transaction.atomic():  # the import's row and its job commit together
        job = ImportJob.objects.create(
            project=project,
            project_name=project_name,
            source_file=str(path),
            original_name=original_name or path.name,
            format=format or "",
            total_rows=rows,
            created_by=created_by,
        )
        if run_async:
            job_enqueue(name=jobs.IMPORT_FILE, kwargs={"import_job_id": job.pk})
    if not run_async:
        import_job_run(job_id=job.pk)
        job.refresh_from_db()
    return job


# Runs of an import whose transaction found the (SQLite) database locked past its timeout.
IMPORT_LOCKED_ATTEMPTS = 3
# An import job records its parsing progress at most this often (seconds), and at the end.
PROGRESS_WRITE_SECONDS = 0.5


def _database_locked(exc: OperationalError) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def import_job_run(*, job_id: int, takeover: bool = False) -> ImportJob:
    """Runs an import job; records its counts or its problems. Safe to call twice.

    ``takeover``: the job system re-runs an import whose worker died; the import is one
    transaction, so the dead attempt left nothing behind and its "running" row is taken over.
    """
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED) or (
            job.status == ImportJob.Status.RUNNING and not takeover
        ):
            return job
        job.status = ImportJob.Status.RUNNING
        job.save(update_fields=["status"])

    # A progress write is a commit of its own (on PostgreSQL a WAL flush, ~3-9 ms measured on
    # a shared machine); the parser reports every 1,000 rows, which a page polling every
    # second or two does not need: at most one write per PROGRESS_WRITE_SECONDS, and the last.
    last_write = [time.monotonic()]

    def progress(phase: str, done: int, total: int) -> None:
        if phase != "rows":
            return
        now_s = time.monotonic()
        if done >= total or now_s - last_write[0] >= PROGRESS_WRITE_SECONDS:
            last_write[0] = now_s
            ImportJob.objects.filter(pk=job_id).update(
                processed_rows=done, total_rows=max(total, 1)
            )

    # The statistics refresh and SQLite's log checkpoint wait until the job is marked done,
    # then run here at once: a client waiting for the job learns of the end without waiting
    # for them (0.1-0.4 s of sampling on PostgreSQL), before it can send annotators.
    with checkpoints_deferred():
        stale_tables = _import_job_attempts(job, progress)
    statistics_refresh(stale_tables)
    job.refresh_from_db()
    upload_discard(path=job.source_file)
    return job


def _import_job_attempts(job: ImportJob, progress: Callable[[str, int, int], None]) -> list[str]:
    """Runs the import of a claimed job and records its outcome on the job's row; returns the
    tables whose planner statistics are to be refreshed (none when it failed)."""
    job_id = job.pk
    try:
        for attempt in range(1, IMPORT_LOCKED_ATTEMPTS + 1):
            try:
                result = import_file(
                    path=job.source_file,
                    project=job.project,
                    project_name=job.project_name or None,
                    format=job.format or None,
                    source_name=Path(job.original_name).stem or None,
                    on_progress=progress,
                    created_by=job.created_by,
                    statistics_later=True,
                )
                break
            except OperationalError as exc:
                # SQLite's single writer: another long write held the lock past the timeout.
                # The import is one transaction, so nothing of it was written: try again.
                if not _database_locked(exc) or attempt == IMPORT_LOCKED_ATTEMPTS:
                    raise
                logger.warning("import job %s: database locked, attempt %s", job_id, attempt)
    except OperationalError as exc:
        if not _database_locked(exc):
            logger.exception("import job %s failed", job_id)
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED,
            errors=[
                f"the database stayed busy with other writes for {IMPORT_LOCKED_ATTEMPTS} tries "
                "(SQLite allows one writer at a time); nothing was imported: start the import "
                "again"
                if _database_locked(exc)
                else f"internal error ({exc.__class__.__name__}); the server log has the details"
            ],
            finished_at=timezone.now(),
        )
    except ImportRejected as exc:
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED,
            errors=[str(p) for p in exc.problems[:200]],
            finished_at=timezone.now(),
        )
    except Exception as exc:
        logger.exception("import job %s failed", job_id)
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED,
            # Not the exception's text: it may name server paths. The log has it.
            errors=[f"internal error ({exc.__class__.__name__}); the server log has the details"],
            finished_at=timezone.now(),
        )
    else:
        # The parser reported the real row count (a JSON array is only counted while parsed).
        total = max(ImportJob.objects.values_list("total_rows", flat=True).get(pk=job_id), 1)
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.DONE,
            project=result.project,
            format=result.format,
            counts=result.counts,
            processed_rows=total,
            total_rows=total,
            finished_at=timezone.now(),
        )
        return result.stale_tables
    return []


# ``import_job_wait``: the longest a status request may wait (a sync web worker is held
# meanwhile), and how often it reads the job's row while it waits.
IMPORT_WAIT_MAX_SECONDS = 10.0
IMPORT_WAIT_POLL_SECONDS = 0.02


def import_job_wait(*, job: ImportJob, seconds: float | None) -> ImportJob:
    """The import job once it is done or failed, or after ``seconds`` (at most
    ``IMPORT_WAIT_MAX_SECONDS``), whichever comes first: the status endpoint's ``?wait=``,
    so a client learns of the end within ``IMPORT_WAIT_POLL_SECONDS`` without polling.

    ``seconds`` None, 0 or less (or not a number): the job as it is now; inside a transaction
    too (on SQLite its snapshot would never see the end).
    """
    return row_status_wait(
        row=job, finished=(ImportJob.Status.DONE, ImportJob.Status.FAILED), seconds=seconds
    )


def row_status_wait(*, row: models.Model, finished: tuple[str, ...], seconds: float | None):
    """``row`` (a model instance with a ``status`` field) once its status is one of
    ``finished``, or after ``seconds`` (at most ``IMPORT_WAIT_MAX_SECONDS``), whichever comes
    first, reloaded when it changed: the ``?wait=`` of the import and export status endpoints.
    Polls every ``IMPORT_WAIT_POLL_SECONDS``. ``seconds`` None, 0 or less (or not a number),
    or inside a transaction (on SQLite its snapshot would never see the end): ``row`` as it is.
    """
    try:
        seconds = min(float(seconds or 0), IMPORT_WAIT_MAX_SECONDS)
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0 or row.status in finished or connection.in_atomic_block:  # NaN: no wait
        return row
    deadline = time.monotonic() + seconds
    while True:
        status = _row_status(type(row), row.pk)
        if status is None or status in finished or time.monotonic() >= deadline:
            break
        time.sleep(min(IMPORT_WAIT_POLL_SECONDS, max(deadline - time.monotonic(), 0)))
    if status is not None:
        row.refresh_from_db()
    return row


def _row_status(model: type[models.Model], pk: int) -> str | None:
    """The row's status as stored now, None when the row is gone: ``row_status_wait``'s poll,
    50 a second while a client waits, often on the machine the job's worker runs on. A plain
    cursor query: 14 us of CPU a poll against the ORM's 270 (SQLite, measured)."""
    meta, quote = model._meta, connection.ops.quote_name
    status, table, key = meta.get_field("status").column, meta.db_table, meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote(status)} FROM {quote(table)} WHERE {quote(key)} = %s", [pk])
        row = cursor.fetchone()
    return None if row is None else row[0]


def import_job_give_up(*, job, reason: str, cancelled: bool = False) -> None:
    """The job system gave up an import (its worker died on every attempt, or an admin
    cancelled the job): the import is failed with the reason."""
    ImportJob.objects.filter(
        pk=job.kwargs.get("import_job_id"),
        status__in=[ImportJob.Status.PENDING, ImportJob.Status.RUNNING],
    ).update(status=ImportJob.Status.FAILED, errors=[reason], finished_at=timezone.now())
    source = (
        ImportJob.objects.filter(pk=job.kwargs.get("import_job_id"))
        .values_list("source_file", flat=True)
        .first()
    )
    if source:
        upload_discard(path=source)


def flags_recompute_job(*, project_id: int):
    """Records a full flag recompute of a project (one waiting at a time), run after commit."""
    return job_enqueue(
        name=jobs.FLAGS_RECOMPUTE,
        kwargs={"project_id": project_id},
        dedupe_key=f"flags_recompute:{project_id}",
    )


def upload_save(*, uploaded_file, subdir: str = "uploads") -> Path:
    """Saves an uploaded import file outside MEDIA_ROOT (it is not public media).

    An upload Django already wrote to a temporary file (one over
    ``FILE_UPLOAD_MAX_MEMORY_SIZE``: the peer workload's 17 MB) is renamed into place where the
    two folders share a file system, as Django's own ``FileSystemStorage`` moves it, with its
    ``FILE_UPLOAD_PERMISSIONS``; it is not written a second time. Otherwise it is copied.
    """
    folder = Path(settings.DATA_DIR) / subdir / secrets.token_hex(8)
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(uploaded_file.name).name or "upload.jsonl"
    target = folder / name
    if hasattr(uploaded_file, "temporary_file_path"):
        uploaded_file.file.flush()
        try:
            # The temporary file's own close later finds it gone, which Django allows for.
            os.replace(uploaded_file.temporary_file_path(), target)
        except OSError:  # another file system (EXDEV), or already moved: copied below
            pass
        else:
            if settings.FILE_UPLOAD_PERMISSIONS is not None:
                os.chmod(target, settings.FILE_UPLOAD_PERMISSIONS)
            return target
    with open(target, "wb") as fh:
        for chunk in uploaded_file.chunks():
            fh.write(chunk)
    return target


def upload_discard(*, path: str | Path) -> None:
    """Removes an uploaded import file once its import is done or failed for good.

    Only files ``upload_save`` wrote (a folder of their own under ``DATA_DIR/uploads``) are
    removed; a file imported from the command line is the user's and stays.
    """
    uploads = (Path(settings.DATA_DIR) / "uploads").resolve()
    folder = Path(path).resolve().parent
    if folder.parent == uploads:
        shutil.rmtree(folder, ignore_errors=True)


# --- API tokens ------------------------------------------------------------------------------


def api_token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[ApiToken, str]:
    """Creates a token; returns it with the plain key, which is never stored."""
    key = "qrm_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, digest=api_token_digest(key))
    return token, key
