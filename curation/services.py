"""Writes for the curation app: flags, reviewer actions (with undo), dataset exports.

Entry points for other apps:

- ``flags_update_for_task(task_id=...)``: cheap incremental update of one prompt's flags;
  a judgment write marks its task ``flags_dirty_at`` and calls
  ``workers.jobs.flags_update_publish_soon`` (the job sweep re-publishes lost updates).
- ``flags_recompute(project_id=...)``: the full pass (annotator quality, every flag);
  Celery task ``quorum.flags_recompute``.
- ``export_create(...)`` / ``export_build(export_id=...)``: dataset snapshots; Celery task
  ``quorum.export_build``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from annotate.models import Project, Prompt, Task, TaskCandidate
from annotate.services import JudgmentInvalid, flags_recompute_job, judgment_validate
from curation import consensus as C
from curation import exporting as E
from curation import selectors
from curation.models import (
    AnnotatorQuality,
    DatasetExport,
    Flag,
    PromptAgreement,
    PromptDecision,
    ReviewAction,
)
from workers import jobs
from workers.jobs import job_enqueue, jobs_cancel, jobs_waiting

logger = logging.getLogger("quorum.curation")


class ReviewError(ValueError):
    """A review action that cannot be applied; the message says why (nothing changed)."""


# --------------------------------------------------------------------------- flags


def _sync_flags(
    *,
    project_id: int,
    specs: Sequence[C.FlagSpec],
    kinds: Sequence[str],
    keys: Iterable[str] | None = None,
) -> dict[str, int]:
    """Makes the flags of ``kinds`` (restricted to ``keys`` if given) match ``specs``.

    New findings open flags; findings that went away clear open flags; a cleared flag that
    holds again reopens; a resolved flag stays resolved unless its evidence grew (more
    judgments since the reviewer looked), then it reopens.
    """
    now = timezone.now()
    existing_qs = Flag.objects.filter(project_id=project_id, kind__in=list(kinds))
    if keys is not None:
        existing_qs = existing_qs.filter(key__in=list(keys))
    existing = {(f.kind, f.key): f for f in existing_qs}
    wanted = {(s.kind, s.key): s for s in specs}
    create, update = [], []
    opened = cleared = 0
    for subject, spec in wanted.items():
        flag = existing.get(subject)
        if flag is None:
            create.append(spec)
            continue
        reopen = flag.status == Flag.Status.CLEARED or (
            flag.status == Flag.Status.RESOLVED and spec.evidence > flag.evidence
        )
        if flag.status == Flag.Status.OPEN or reopen:
            changed = reopen or (
                flag.severity != spec.severity
                or flag.evidence != spec.evidence
                or flag.details != spec.details
            )
            if not changed:
                continue
            if reopen:
                opened += 1
                flag.status = Flag.Status.OPEN
                flag.closed_at = None
                flag.resolved_by = None
            flag.severity = spec.severity
            flag.evidence = spec.evidence
            flag.details = spec.details
            flag.updated_at = now
            update.append(flag)
    for subject, flag in existing.items():
        if subject not in wanted and flag.status == Flag.Status.OPEN:
            flag.status = Flag.Status.CLEARED
            flag.closed_at = now
            flag.updated_at = now
            update.append(flag)
            cleared += 1
    # A concurrent update (incremental vs. full pass) may have created the same flag: the
    # unique (project, kind, key) keeps one, and the next pass brings it up to date.
    _flags_insert(project_id, create)
    _flags_update(update)
    return {"created": len(create), "reopened": opened, "cleared": cleared, "updated": len(update)}


def _flags_insert(project_id: int, specs: Sequence[C.FlagSpec]) -> None:
    """Opens a flag per spec; one that exists by then (same project, kind and key) is left
    alone. One ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and
    PostgreSQL (no model instance and ``get_db_prep_save`` per field per flag: a full pass
    opens thousands); ``bulk_create(ignore_conflicts=True)`` elsewhere."""
    if not specs:
        return
    if connection.vendor not in ("sqlite", "postgresql"):
        Flag.objects.bulk_create(
            [
                Flag(
                    project_id=project_id,
                    kind=spec.kind,
                    key=spec.key,
                    severity=spec.severity,
                    evidence=spec.evidence,
                    prompt_id=spec.prompt_id,
                    task_id=spec.task_id,
                    judgment_id=spec.judgment_id,
                    evaluator=spec.evaluator,
                    details=spec.details,
                )
                for spec in specs
            ],
            batch_size=500,
            ignore_conflicts=True,
        )
        return
    meta, quote = Flag._meta, connection.ops.quote_name
    names = [
        "project",
        "kind",
        "key",
        "status",
        "severity",
        "evidence",
        "prompt",
        "task",
        "judgment",
        "evaluator",
        "details",
        "resolved_by",
        "created_at",
        "updated_at",
        "closed_at",
    ]
    columns = ", ".join(quote(meta.get_field(name).column) for name in names)
    marks = ", ".join(["%s"] * len(names))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    details = meta.get_field("details").get_db_prep_save
    stamp = meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    status = Flag.Status.OPEN.value
    rows = [
        (
            project_id,
            spec.kind,
            spec.key,
            status,
            float(spec.severity),
            int(spec.evidence),
            spec.prompt_id,
            spec.task_id,
            spec.judgment_id,
            spec.evaluator,
            details(spec.details, connection),
            None,
            stamp,
            stamp,
            None,
        )
        for spec in specs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


FLAG_SYNCED = [
    "status",
    "closed_at",
    "resolved_by",
    "severity",
    "evidence",
    "details",
    "updated_at",
]


def _flags_update(flags: Sequence[Flag]) -> None:
    """Writes the synced fields of ``flags``: one ``executemany`` of ``UPDATE ... WHERE id``
    on SQLite and PostgreSQL (``bulk_update`` writes a ``CASE WHEN`` per field over every
    id of its batch); ``bulk_update`` elsewhere."""
    if not flags:
        return
    if connection.vendor not in ("sqlite", "postgresql"):
        Flag.objects.bulk_update(flags, FLAG_SYNCED, batch_size=500)
        return
    meta, quote = Flag._meta, connection.ops.quote_name
    fields = [meta.get_field(name) for name in FLAG_SYNCED]
    sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {quote(meta.pk.column)} = %s"
    rows = [
        (*(f.get_db_prep_save(getattr(flag, f.attname), connection) for f in fields), flag.pk)
        for flag in flags
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def flags_update_for_task(*, task_id: int) -> dict[str, int]:
    """Recomputes the flags of one task's prompt: low agreement, cycle, reward-model
    conflict, and failed gold for judgments on the prompt's gold tasks.

    Cheap (one prompt's judgments, a handful of queries); annotator-level flags and
    reliability weights come from `flags_recompute`. Safe to call at any time, any number
    of times; call it after the judgment's transaction commits.
    """
    task = Task.objects.select_related("project__active_reward_model").filter(pk=task_id).first()
    if task is None:  # deleted with its project since the update was asked for
        return {}
    # Read before the judgments: a judgment committed after this read changes the mark, so
    # clearing it below only if unchanged never drops an update that is still owed.
    seen_dirty = task.flags_dirty_at
    data = selectors.project_data(project=task.project, prompt_ids=[task.prompt_id])
    agreements: dict[int, tuple[float | None, int]] = {}
    specs = _prompt_specs(data, task.prompt_id, agreements)
    _store_agreements(agreements)
    prompt_votes = data.votes_by_prompt().get(task.prompt_id, [])
    gold_specs = C.gold_flags(prompt_votes, data.gold)
    counts = _sync_flags(
        project_id=task.project_id,
        specs=specs,
        kinds=C.PROMPT_FLAG_KINDS,
        keys=[f"prompt:{task.prompt_id}"],
    )
    gold_counts = _sync_flags(
        project_id=task.project_id,
        specs=gold_specs,
        kinds=C.JUDGMENT_FLAG_KINDS,
        keys=[f"judgment:{v.judgment_id}" for v in prompt_votes],
    )
    if seen_dirty is not None:
        Task.objects.filter(pk=task_id, flags_dirty_at=seen_dirty).update(flags_dirty_at=None)
    return {k: counts[k] + gold_counts[k] for k in counts}


def _prompt_specs(
    data: selectors.ProjectData,
    prompt_id: int,
    agreements: dict[int, tuple[float | None, int]],
) -> list[C.FlagSpec]:
    """The prompt's flags; its agreement and comparison count go into ``agreements``."""
    agreements[prompt_id] = (None, 0)
    decision = data.decisions.get(prompt_id)
    if decision is not None and decision.discarded:
        return []
    votes = selectors.usable_votes(data, data.votes_by_prompt().get(prompt_id, []))
    if not votes:
        return []
    # Flags need the human graph and agreement, not a ranking: skip the denoised ranking.
    consensus = C.prompt_consensus(prompt_id, votes, weights=data.weights, denoise=False)
    agreements[prompt_id] = (consensus.agreement, consensus.comparisons)
    return C.prompt_flags(consensus, rm_scores=data.rm_scores, rm_label=data.rm_label)


def _store_agreements(agreements: dict[int, tuple[float | None, int]]) -> None:
    """Upserts each prompt's stored agreement (the data browser filters on it).

    One ``executemany`` of ``INSERT ... ON CONFLICT (prompt) DO UPDATE`` on SQLite and
    PostgreSQL (the statement ``bulk_create(update_conflicts=True)`` writes, without a model
    instance and ``get_db_prep_save`` per field per prompt); ``bulk_create`` elsewhere.
    """
    if not agreements:
        return
    now = timezone.now()
    if connection.vendor not in ("sqlite", "postgresql"):
        PromptAgreement.objects.bulk_create(
            [
                PromptAgreement(
                    prompt_id=prompt_id,
                    agreement=None if agreement is None else round(agreement, 4),
                    comparisons=comparisons,
                    computed_at=now,
                )
                for prompt_id, (agreement, comparisons) in agreements.items()
            ],
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["prompt"],
            update_fields=["agreement", "comparisons", "computed_at"],
        )
        return
    meta, quote = PromptAgreement._meta, connection.ops.quote_name
    prompt, agreement, comparisons, computed_at = (
        quote(meta.get_field(name).column)
        for name in ("prompt", "agreement", "comparisons", "computed_at")
    )
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({prompt}, {agreement}, {comparisons}, "
        f"{computed_at}) VALUES (%s, %s, %s, %s) ON CONFLICT ({prompt}) DO UPDATE SET "
        f"{agreement} = EXCLUDED.{agreement}, {comparisons} = EXCLUDED.{comparisons}, "
        f"{computed_at} = EXCLUDED.{computed_at}"
    )
    stamp = meta.get_field("computed_at").get_db_prep_save(now, connection)
    rows = [
        (prompt_id, None if value is None else round(value, 4), count, stamp)
        for prompt_id, (value, count) in agreements.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Pauses Python's cycle collector for one pass over a project (used as a decorator).

    A pass allocates millions of small objects that live until it ends (votes, records,
    rows); every full collection walks all of them again: a fifth of the CPU of flags and
    export at MR2Bench scale, for nothing, since reference counting frees what the pass
    drops. What does form cycles (networkx graphs with cached views) waits until the pass
    returns: about 70 MB more at peak for 94K judgments.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@_cycle_collection_paused()
def flags_recompute(*, project_id: int) -> dict[str, Any]:
    """The full pass over a project: annotator quality (stored), then every flag.

    Returns counts and timings (seconds per phase).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    project = Project.objects.select_related("active_reward_model").get(pk=project_id)
    # Shared: an export run next in this process reuses the votes (`project_data`).
    data = selectors.project_data(
        project=project, with_times=False, with_candidates=False, shared=True
    )
    live = selectors.live_votes(data)
    timings["load"] = time.perf_counter() - started

    t0 = time.perf_counter()
    quality = C.evaluator_quality(
        live, gold=data.gold, fit_cache=selectors.joint_fit_cache(project.pk)
    )
    _store_quality(project, quality)
    data.weights = {e: q.weight for e, q in quality.items()}
    timings["annotators"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Evaluators a reviewer already marked unreliable need no more annotator flags; their
    # resolved flags stay resolved.
    specs = [
        spec for spec in C.evaluator_flags(quality) if spec.evaluator not in data.marked
    ] + C.gold_flags(live, data.gold)
    by_prompt = data.votes_by_prompt()
    agreements: dict[int, tuple[float | None, int]] = {}
    # Prompts of pair judgments without a cycle: all at once on columns (the same flags);
    # the others one by one through their consensus graph.
    decisions = data.decisions
    usable = selectors.usable_votes_by_prompt(
        data,
        by_prompt,
        [p for p in by_prompt if (d := decisions.get(p)) is None or not d.discarded],
    )
    from curation import batch_consensus as BC  # numpy: not at import (web start-up)

    batched = BC.batch_prompt_flags(
        usable, weights=data.weights, rm_scores=data.rm_scores, rm_label=data.rm_label
    )
    for prompt_id in by_prompt:
        done = batched.get(prompt_id)
        if done is None:
            specs.extend(_prompt_specs(data, prompt_id, agreements))
        else:
            specs.extend(done[0])
            agreements[prompt_id] = (done[1], done[2])
    timings["prompts"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with transaction.atomic():
        counts = _sync_flags(project_id=project.pk, specs=specs, kinds=Flag.Kind.values)
        _store_agreements(agreements)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return {
        "project": project.pk,
        "judgments": len(data.votes),
        "prompts": len(by_prompt),
        "evaluators": len(quality),
        "flags": dict(Counter(spec.kind for spec in specs)),
        **counts,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def _store_quality(project: Project, quality: dict[str, C.EvaluatorQuality]) -> None:
    now = timezone.now()
    labels = selectors.evaluator_labels(quality)
    existing = {q.evaluator: q for q in AnnotatorQuality.objects.filter(project=project)}
    create, update = [], []
    fields = [
        "label",
        "n_judgments",
        "agreement",
        "loo_agreement",
        "gold_accuracy",
        "n_gold",
        "weight",
        "eta",
        "shown_first",
        "n_separable",
        "bias_p",
        "favoured_slot",
        "median_ms",
        "fast_share",
        "anomalous",
        "computed_at",
    ]
    for evaluator, q in quality.items():
        row = existing.get(evaluator) or AnnotatorQuality(
            project=project,
            evaluator=evaluator,
            annotator_id=int(evaluator[5:]) if evaluator.startswith("user:") else None,
        )
        row.label = labels[evaluator][:255]
        row.n_judgments = q.n_judgments
        row.agreement = q.agreement
        row.loo_agreement = q.loo_agreement
        row.gold_accuracy = q.gold_accuracy
        row.n_gold = q.n_gold
        row.weight = q.weight
        row.eta = q.eta
        row.shown_first = q.shown_first
        row.n_separable = q.n_separable
        row.bias_p = q.bias_p_adjusted
        row.favoured_slot = q.favoured_slot if q.bias_p_adjusted is not None else None
        row.median_ms = q.median_ms
        row.fast_share = q.fast_share
        row.anomalous = q.anomalous
        row.computed_at = now
        (update if row.pk else create).append(row)
    with transaction.atomic():
        AnnotatorQuality.objects.bulk_create(create, batch_size=500, ignore_conflicts=True)
        AnnotatorQuality.objects.bulk_update(update, fields, batch_size=500)


def flags_recompute_enqueue(*, project_id: int) -> None:
    """Records the full pass as a job (one waiting per project); a worker runs it."""
    flags_recompute_job(project_id=project_id)


# --------------------------------------------------------------------------- review actions


def _decision_state(decision: PromptDecision) -> dict[str, Any]:
    return {"final_ranking": decision.final_ranking, "discarded": decision.discarded}


def _locked_decision(prompt: Prompt) -> PromptDecision:
    # The prompt row lock serialises every review action on one prompt (and their undos).
    Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
    decision, _ = PromptDecision.objects.get_or_create(
        prompt=prompt, defaults={"project_id": prompt.project_id}
    )
    return decision


def _close_flags(
    *, project_id: int, action: ReviewAction, keys: Sequence[str], flag: Flag | None
) -> list[int]:
    """Resolves the open flags with these keys (and ``flag``) by ``action``; returns ids."""
    flags = Flag.objects.filter(project_id=project_id, status=Flag.Status.OPEN, key__in=keys)
    ids = set(flags.values_list("pk", flat=True))
    if flag is not None and flag.status == Flag.Status.OPEN:
        ids.add(flag.pk)
    Flag.objects.filter(pk__in=ids, status=Flag.Status.OPEN).update(
        status=Flag.Status.RESOLVED, resolved_by=action, closed_at=timezone.now()
    )
    return sorted(ids)


def _check_flag(flag: Flag | None, project: Project) -> None:
    if flag is not None and flag.project_id != project.pk:
        raise ReviewError("the flag belongs to another project")


def _decide(
    *,
    actor: AbstractBaseUser,
    prompt: Prompt,
    kind: str,
    final_ranking: list[list[int]] | None,
    flag: Flag | None,
    note: str,
) -> ReviewAction:
    decision = _locked_decision(prompt)
    before = {"decision": _decision_state(decision)}
    decision.final_ranking = final_ranking
    action = ReviewAction.objects.create(
        project_id=prompt.project_id,
        kind=kind,
        actor=actor,
        prompt=prompt,
        flag=flag,
        note=note,
        before=before,
        after={"decision": _decision_state(decision)},
    )
    closed = _close_flags(
        project_id=prompt.project_id, action=action, keys=[f"prompt:{prompt.pk}"], flag=flag
    )
    action.after["flags"] = closed
    action.save(update_fields=["after"])
    decision.action = action
    decision.save(update_fields=["final_ranking", "action", "updated_at"])
    return action


@transaction.atomic
def review_accept_consensus(
    *, actor: AbstractBaseUser, prompt: Prompt, flag: Flag | None = None, note: str = ""
) -> ReviewAction:
    """Makes the prompt's current consensus ranking its final ranking."""
    _check_flag(flag, prompt.project)
    _locked_decision(prompt)
    data = selectors.project_data(project=prompt.project, prompt_ids=[prompt.pk])
    consensus = selectors.prompt_consensus_for(data=data, prompt_id=prompt.pk)
    if len(consensus.ranking) < 2:
        raise ReviewError("there is no consensus to accept: no strict preference was judged")
    return _decide(
        actor=actor,
        prompt=prompt,
        kind=ReviewAction.Kind.ACCEPT_CONSENSUS,
        final_ranking=consensus.ranking,
        flag=flag,
        note=note,
    )


def prompt_candidate_ids(prompt: Prompt) -> list[int]:
    """Candidates of the prompt that appear in any of its tasks (what a ranking covers)."""
    return sorted(
        set(
            TaskCandidate.objects.filter(task__prompt=prompt).values_list("candidate_id", flat=True)
        )
    )


@transaction.atomic
def review_set_ranking(
    *,
    actor: AbstractBaseUser,
    prompt: Prompt,
    ranking: object,
    flag: Flag | None = None,
    note: str = "",
) -> ReviewAction:
    """Sets the prompt's final ranking (tie groups of candidate ids, best first).

    Raises:
        JudgmentInvalid: the ranking does not cover exactly the prompt's task candidates.
    """
    _check_flag(flag, prompt.project)
    groups = judgment_validate(
        candidate_ids=prompt_candidate_ids(prompt), kind="ranking", ranking=ranking
    )
    assert isinstance(groups, list)
    if len(groups) < 2:
        raise JudgmentInvalid("ranking", "a final ranking needs at least two tie groups")
    return _decide(
        actor=actor,
        prompt=prompt,
        kind=ReviewAction.Kind.SET_RANKING,
        final_ranking=groups,
        flag=flag,
        note=note,
    )


@transaction.atomic
def review_discard_prompt(
    *, actor: AbstractBaseUser, prompt: Prompt, flag: Flag | None = None, note: str = ""
) -> ReviewAction:
    """Leaves the prompt out of exports and withdraws its tasks (status discarded)."""
    _check_flag(flag, prompt.project)
    decision = _locked_decision(prompt)
    if decision.discarded:
        raise ReviewError("this prompt is already discarded")
    tasks = list(Task.objects.select_for_update().filter(prompt=prompt).order_by("id"))
    before = {
        "decision": _decision_state(decision),
        "tasks": {str(t.pk): {"status": t.status} for t in tasks},
    }
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(status=Task.Status.DISCARDED)
    decision.discarded = True
    action = ReviewAction.objects.create(
        project_id=prompt.project_id,
        kind=ReviewAction.Kind.DISCARD_PROMPT,
        actor=actor,
        prompt=prompt,
        flag=flag,
        note=note,
        before=before,
        after={
            "decision": _decision_state(decision),
            "tasks": {str(t.pk): {"status": Task.Status.DISCARDED} for t in tasks},
        },
    )
    action.after["flags"] = _close_flags(
        project_id=prompt.project_id, action=action, keys=[f"prompt:{prompt.pk}"], flag=flag
    )
    action.save(update_fields=["after"])
    decision.action = action
    decision.save(update_fields=["discarded", "action", "updated_at"])
    return action


MAX_EXTRA_JUDGMENTS = 10


@transaction.atomic
def review_request_more(
    *,
    actor: AbstractBaseUser,
    prompt: Prompt,
    extra: int = 1,
    flag: Flag | None = None,
    note: str = "",
) -> ReviewAction:
    """Reopens the prompt's tasks for ``extra`` more judgments each.

    Raises ``required_judgments`` to (its current value, at least the judgments already
    stored) + extra and sets the status open. Gold and discarded tasks are left alone.
    """
    _check_flag(flag, prompt.project)
    if (
        isinstance(extra, bool)
        or not isinstance(extra, int)
        or not 1 <= extra <= MAX_EXTRA_JUDGMENTS
    ):
        raise ReviewError(f"extra judgments must be between 1 and {MAX_EXTRA_JUDGMENTS}")
    _locked_decision(prompt)
    tasks = list(
        Task.objects.select_for_update()
        .filter(prompt=prompt, is_gold=False)
        .exclude(status=Task.Status.DISCARDED)
        .order_by("id")
    )
    if not tasks:
        raise ReviewError("this prompt has no task that can take more judgments")
    k = prompt.project.annotators_per_task
    before, after = {}, {}
    for task in tasks:
        before[str(task.pk)] = {
            "status": task.status,
            "required_judgments": task.required_judgments,
        }
        task.required_judgments = max(task.required_judgments or k, task.judgment_count) + extra
        task.status = Task.Status.OPEN
        after[str(task.pk)] = {"status": task.status, "required_judgments": task.required_judgments}
    Task.objects.bulk_update(tasks, ["required_judgments", "status"])
    action = ReviewAction.objects.create(
        project_id=prompt.project_id,
        kind=ReviewAction.Kind.REQUEST_MORE,
        actor=actor,
        prompt=prompt,
        flag=flag,
        note=note,
        before={"tasks": before},
        after={"tasks": after, "extra": extra},
    )
    action.after["flags"] = _close_flags(
        project_id=prompt.project_id, action=action, keys=[f"prompt:{prompt.pk}"], flag=flag
    )
    action.save(update_fields=["after"])
    return action


@transaction.atomic
def review_mark_gold(
    *, actor: AbstractBaseUser, prompt: Prompt, flag: Flag | None = None, note: str = ""
) -> ReviewAction:
    """Makes the prompt's tasks gold: the reviewer's final ranking (else the consensus),
    restricted to each task's candidates, becomes the task's gold answer.

    Raises:
        ReviewError: the prompt is discarded, has no task, or neither ranking orders every
            candidate of a task with at least one strict preference.
    """
    _check_flag(flag, prompt.project)
    decision = _locked_decision(prompt)
    if decision.discarded:
        raise ReviewError("this prompt is discarded")
    ranking = decision.final_ranking
    if not ranking:
        data = selectors.project_data(project=prompt.project, prompt_ids=[prompt.pk])
        ranking = selectors.prompt_consensus_for(data=data, prompt_id=prompt.pk).ranking
    tasks = list(
        Task.objects.select_for_update()
        .filter(prompt=prompt)
        .exclude(status=Task.Status.DISCARDED)
        .order_by("id")
    )
    if not tasks:
        raise ReviewError("this prompt has no task to make gold")
    slots: dict[int, set[int]] = {task.pk: set() for task in tasks}
    for task_id, candidate_id in TaskCandidate.objects.filter(task__in=tasks).values_list(
        "task_id", "candidate_id"
    ):
        slots[task_id].add(candidate_id)
    before, after = {}, {}
    for task in tasks:
        gold = [[c for c in group if c in slots[task.pk]] for group in ranking or []]
        gold = [group for group in gold if group]
        if sum(map(len, gold)) != len(slots[task.pk]) or len(gold) < 2:
            raise ReviewError(
                "no final ranking or consensus orders every candidate of this prompt's tasks; "
                "set the final ranking first"
            )
        before[str(task.pk)] = {"is_gold": task.is_gold, "gold_ranking": task.gold_ranking}
        task.is_gold, task.gold_ranking = True, gold
        after[str(task.pk)] = {"is_gold": True, "gold_ranking": gold}
    Task.objects.bulk_update(tasks, ["is_gold", "gold_ranking"])
    return ReviewAction.objects.create(
        project_id=prompt.project_id,
        kind=ReviewAction.Kind.MARK_GOLD,
        actor=actor,
        prompt=prompt,
        flag=flag,
        note=note,
        before={"tasks": before},
        after={"tasks": after},
    )


@transaction.atomic
def review_mark_unreliable(
    *,
    actor: AbstractBaseUser,
    project: Project,
    evaluator: str,
    flag: Flag | None = None,
    note: str = "",
) -> ReviewAction:
    """Marks an evaluator unreliable: their judgments stop counting in consensus and exports.

    A full flag recompute is enqueued after commit, since every prompt they judged changes.
    """
    _check_flag(flag, project)
    if not _evaluator_in_project(project, evaluator):
        raise ReviewError(f"{evaluator!r} has no judgments in this project")
    Project.objects.select_for_update().filter(pk=project.pk).first()
    quality, _ = AnnotatorQuality.objects.get_or_create(
        project=project,
        evaluator=evaluator,
        defaults={
            "annotator_id": int(evaluator[5:]) if evaluator.startswith("user:") else None,
            "label": selectors.evaluator_labels([evaluator])[evaluator][:255],
        },
    )
    if quality.marked_unreliable:
        raise ReviewError("this annotator is already marked unreliable")
    quality.marked_unreliable = True
    quality.save(update_fields=["marked_unreliable"])
    action = ReviewAction.objects.create(
        project=project,
        kind=ReviewAction.Kind.MARK_UNRELIABLE,
        actor=actor,
        evaluator=evaluator,
        flag=flag,
        note=note,
        before={"marked_unreliable": False},
        after={"marked_unreliable": True},
    )
    action.after["flags"] = _close_flags(
        project_id=project.pk, action=action, keys=[f"evaluator:{evaluator}"], flag=flag
    )
    action.save(update_fields=["after"])
    flags_recompute_enqueue(project_id=project.pk)
    return action


def _evaluator_in_project(project: Project, evaluator: str) -> bool:
    return selectors.judgments_of_evaluator(project=project, evaluator=evaluator).exists()


@transaction.atomic
def review_dismiss_flag(*, actor: AbstractBaseUser, flag: Flag, note: str = "") -> ReviewAction:
    """Closes a flag as a false alarm, changing nothing else."""
    flag = Flag.objects.select_for_update().get(pk=flag.pk)
    if flag.status != Flag.Status.OPEN:
        raise ReviewError("this flag is not open")
    action = ReviewAction.objects.create(
        project_id=flag.project_id,
        kind=ReviewAction.Kind.DISMISS_FLAG,
        actor=actor,
        prompt_id=flag.prompt_id if flag.key.startswith("prompt:") else None,
        evaluator=flag.evaluator if flag.key.startswith("evaluator:") else "",
        flag=flag,
        note=note,
        before={"flags": [flag.pk]},
        after={"flags": [flag.pk]},
    )
    _close_flags(project_id=flag.project_id, action=action, keys=[], flag=flag)
    return action


@transaction.atomic
def review_action_undo(*, actor: AbstractBaseUser, action: ReviewAction) -> ReviewAction:
    """Puts back what ``action`` changed; the action stays in the trail, marked undone.

    Actions on one prompt (or one annotator) are undone newest first: undoing an older one
    while a newer one is in effect would restore a state the newer one was built on.

    Raises:
        ReviewError: already undone, or a newer action on the same subject is in effect.
    """
    if action.prompt_id:
        Prompt.objects.select_for_update().filter(pk=action.prompt_id).first()
    else:
        Project.objects.select_for_update().filter(pk=action.project_id).first()
    action = ReviewAction.objects.select_for_update().get(pk=action.pk)
    if action.undone_at is not None:
        raise ReviewError("this action was already undone")
    later = ReviewAction.objects.filter(
        project_id=action.project_id, pk__gt=action.pk, undone_at__isnull=True
    )
    if action.prompt_id:
        later = later.filter(prompt_id=action.prompt_id)
    elif action.evaluator:
        later = later.filter(evaluator=action.evaluator)
    else:
        later = later.filter(flag_id=action.flag_id)
    newer = list(later.values_list("pk", flat=True)[:5])
    if newer:
        raise ReviewError(
            "undo the newer actions on the same subject first: "
            + ", ".join(f"#{pk}" for pk in newer)
        )

    before = action.before
    if "decision" in before:
        PromptDecision.objects.filter(prompt_id=action.prompt_id).update(
            final_ranking=before["decision"]["final_ranking"],
            discarded=before["decision"]["discarded"],
            updated_at=timezone.now(),
        )
    if "tasks" in before:
        _restore_tasks(action, before["tasks"])
    if "marked_unreliable" in before:
        AnnotatorQuality.objects.filter(
            project_id=action.project_id, evaluator=action.evaluator
        ).update(marked_unreliable=before["marked_unreliable"])
        flags_recompute_enqueue(project_id=action.project_id)
    flag_ids = action.after.get("flags", [])
    Flag.objects.filter(pk__in=flag_ids, resolved_by=action, status=Flag.Status.RESOLVED).update(
        status=Flag.Status.OPEN, resolved_by=None, closed_at=None
    )
    action.undone_at = timezone.now()
    action.undone_by = actor
    action.save(update_fields=["undone_at", "undone_by"])
    return action


def _restore_tasks(action: ReviewAction, states: dict[str, dict[str, Any]]) -> None:
    tasks = list(Task.objects.select_for_update().filter(pk__in=[int(k) for k in states]))
    k = action.project.annotators_per_task
    for task in tasks:
        old = states[str(task.pk)]
        if "is_gold" in old:  # a gold mark changed nothing else
            task.is_gold, task.gold_ranking = old["is_gold"], old["gold_ranking"]
        elif "required_judgments" in old:
            task.required_judgments = old["required_judgments"]
            # Judgments may have arrived since: the status follows the counts, as on submit.
            needed = task.required_judgments or k
            if task.status != Task.Status.DISCARDED:
                task.status = (
                    Task.Status.COMPLETE if task.judgment_count >= needed else Task.Status.OPEN
                )
        else:
            task.status = old["status"]
    Task.objects.bulk_update(tasks, ["required_judgments", "status", "is_gold", "gold_ranking"])


# --------------------------------------------------------------------------- exports


def export_create(
    *,
    project: Project,
    options: E.ExportOptions | dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
    enqueue: bool = True,
) -> DatasetExport:
    """Records a new export version of a project; with ``enqueue`` the Celery task builds it
    after commit.

    Raises:
        ExportOptionsInvalid: naming the bad option.
    """
    if not isinstance(options, E.ExportOptions):
        options = E.ExportOptions.from_dict(options)
    for attempt in range(5):
        try:
            with transaction.atomic():
                Project.objects.select_for_update().filter(pk=project.pk).first()
                last = (
                    DatasetExport.objects.filter(project=project)
                    .order_by("-version")
                    .values_list("version", flat=True)
                    .first()
                )
                export = DatasetExport.objects.create(
                    project=project,
                    version=(last or 0) + 1,
                    options=options.to_dict(),
                    created_by=created_by,
                    phase="queued",
                )
                if enqueue:  # the row and its job commit together
                    export_build_job(export=export)
            break
        except IntegrityError:
            # Two creators raced for a version number on a database without row locks.
            if attempt == 4:
                raise
    return export


def export_build_job(*, export: DatasetExport) -> None:
    """Records the build of a pending export as a job; published after commit."""
    job_enqueue(
        name=jobs.EXPORT_BUILD,
        kwargs={"export_id": export.pk},
        dedupe_key=f"export_build:{export.pk}",
    )


class ExportNotCancellable(ValueError):
    pass


def export_cancel(*, export: DatasetExport, actor: AbstractBaseUser | None = None) -> DatasetExport:
    """Cancels a pending or running export; its build stops publishing files.

    Raises:
        ExportNotCancellable: the export is already done, failed or cancelled.
    """
    by = f" by {actor.get_username()}" if actor is not None else ""
    with transaction.atomic():
        cancelled = DatasetExport.objects.filter(
            pk=export.pk, status__in=[DatasetExport.Status.PENDING, DatasetExport.Status.RUNNING]
        ).update(
            status=DatasetExport.Status.CANCELLED,
            phase="cancelled",
            error=f"cancelled{by}",
            finished_at=timezone.now(),
        )
        if not cancelled:
            export.refresh_from_db()
            raise ExportNotCancellable(f"export v{export.version} is {export.status}")
        jobs_cancel(
            ids=jobs_waiting(name=jobs.EXPORT_BUILD, match={"export_id": export.pk}),
            reason=f"cancelled{by}",
        )
    export.refresh_from_db()
    return export


def export_give_up(*, job, reason: str, cancelled: bool = False) -> None:
    """The job system gave up a build (its worker died on every attempt, or an admin
    cancelled the job)."""
    status = DatasetExport.Status.CANCELLED if cancelled else DatasetExport.Status.FAILED
    DatasetExport.objects.filter(
        pk=job.kwargs.get("export_id"),
        status__in=[DatasetExport.Status.PENDING, DatasetExport.Status.RUNNING],
    ).update(status=status, error=reason[:5000], phase=status, finished_at=timezone.now())


def _progress(export_id: int, builder: str) -> E.Progress:
    def report(percent: int, phase: str) -> None:
        DatasetExport.objects.filter(
            pk=export_id, status=DatasetExport.Status.RUNNING, builder=builder
        ).update(progress=max(0, min(99, percent)), phase=phase[:200])

    return report


@_cycle_collection_paused()
def export_build(*, export_id: int, builder: str = "") -> DatasetExport:
    """Builds an export's files and freezes it. Idempotent: a done, failed or cancelled
    export is returned as it is.

    ``builder`` names this run (the job id and attempt). A pending export is claimed; a
    running one only by a different builder, which the job system sends only once the
    previous runner is dead. The files are published, and the row marked done, only while
    this builder still owns the row: a stale or duplicate run never replaces anything.
    """
    builder = builder or f"direct-{time.time_ns()}"
    claimed = (
        DatasetExport.objects.filter(pk=export_id)
        .filter(
            Q(status=DatasetExport.Status.PENDING)
            | Q(status=DatasetExport.Status.RUNNING) & ~Q(builder=builder)
        )
        .update(
            status=DatasetExport.Status.RUNNING,
            builder=builder,
            started_at=timezone.now(),
            progress=1,
            phase="loading",
        )
    )
    export = DatasetExport.objects.select_related("project__active_reward_model").get(pk=export_id)
    if not claimed:
        return export
    delay = float(os.environ.get("QUORUM_FAULT_EXPORT_DELAY", "0") or 0)
    if delay:  # fault-injection knob for tests: widens the window for a crash mid-build
        time.sleep(delay)
    target = export.path
    work = None
    try:
        options = E.ExportOptions.from_dict(export.options)
        report = _progress(export.pk, builder)
        source = _snapshot_input(export)
        report(5, "loaded")
        snapshot = E.build_snapshot(source, options, report)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".v{export.version}-", dir=target.parent))
        files = E.write_snapshot(snapshot, work, source, options, report)
        with transaction.atomic():
            # Hold the row while the files move: nobody else can finish, cancel or take it
            # over in between, and only the owning builder publishes.
            owned = (
                DatasetExport.objects.select_for_update()
                .filter(pk=export.pk, status=DatasetExport.Status.RUNNING, builder=builder)
                .exists()
            )
            if not owned:
                logger.warning("export %s is no longer this build's (%s)", export.pk, builder)
            else:
                if target.exists():
                    # Left by an attempt that died before marking the row done: nobody can
                    # download it (the row was never done), so ours replaces it.
                    stale = target.with_name(f".stale-{target.name}-{time.time_ns()}")
                    target.rename(stale)
                    shutil.rmtree(stale, ignore_errors=True)
                work.rename(target)
                work = None
                DatasetExport.objects.filter(pk=export.pk).update(
                    status=DatasetExport.Status.DONE,
                    progress=100,
                    phase="done",
                    counts=snapshot.datasheet["counts"],
                    datasheet=snapshot.datasheet,
                    files=files,
                    finished_at=timezone.now(),
                )
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    except Exception as exc:
        logger.exception("export %s failed", export.pk)
        DatasetExport.objects.filter(
            pk=export.pk, status=DatasetExport.Status.RUNNING, builder=builder
        ).update(
            status=DatasetExport.Status.FAILED,
            error=f"{exc.__class__.__name__}: {exc}"[:5000],
            phase="failed",
            finished_at=timezone.now(),
        )
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    export.refresh_from_db()
    return export


def _snapshot_input(export: DatasetExport) -> E.SnapshotInput:
    project = export.project
    # The display order is loaded: the export ranks by the same joint model as the flags
    # pass, position term included, and reuses that pass's fit when the votes are unchanged.
    data = selectors.project_data(
        project=project, with_times=False, with_candidates=False, shared=True
    )
    # Each candidate and prompt built once, as the snapshot's own type (89K candidates).
    candidates, prompts = selectors.content_rows(
        project=project, candidate_type=E.SnapshotCandidate, prompt_type=E.SnapshotPrompt
    )
    return E.SnapshotInput(
        project_name=project.name,
        project_id=project.pk,
        version=export.version,
        votes=data.votes,
        discarded_tasks={t for t, s in data.task_status.items() if s == Task.Status.DISCARDED},
        gold=data.gold,
        prompts=prompts,
        candidates=candidates,
        rm_scores=data.rm_scores,
        rm_label=data.rm_label,
        marked=data.marked,
        decisions={pid: (d.final_ranking, d.discarded) for pid, d in data.decisions.items()},
        media_root=Path(settings.MEDIA_ROOT),
        leaderboard_bootstrap=settings.QUORUM_LEADERBOARD_BOOTSTRAP,
        fit_cache=selectors.joint_fit_cache(project.pk),
    )


def export_rebuild(
    *, export: DatasetExport, created_by: AbstractBaseUser | None = None
) -> DatasetExport:
    """A new version of the project with the same options (exports never change)."""
    return export_create(project=export.project, options=export.options, created_by=created_by)
