"""The flag updates owed after judgments, coalesced: one pass for many dirty tasks.

A judgment write marks its task ``flags_dirty_at`` and hints a worker
(``workers.jobs.flags_update_publish_soon``). ``flags_update_for_task`` in
``curation/services.py`` answers one hint with one full pass over one prompt (eight queries to
load it, two flag syncs, the agreement's upsert): with 8 annotators submitting, a quarter of
the machine's CPU. :func:`flags_update_dirty` answers a hint by taking every task of the hinted
tasks' projects that is still marked, and updates all their prompts in one pass per project:
one ``project_data`` load for those prompts, one agreement upsert, one sync of each flag kind.
A hint whose tasks a previous pass already cleared costs one query.

The mark-and-clear protocol of the single-task update holds per task: the marks are read
before the judgments, and a task's mark is cleared only where it still holds the value read.
A judgment committed during the pass sets a newer mark (or the same task's mark again), which
then stays, and the sweep or the next hint runs the update it is owed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import Q

from annotate.models import Project, Task
from curation import consensus as C
from curation import selectors
from curation.services import (
    _prompt_specs,
    _store_agreements,
    _sync_flags,
    flags_update_for_task,
)

logger = logging.getLogger("quorum.curation")

# Dirty tasks taken per pass (their prompts' judgments are loaded at once); what is left over
# is taken by the next pass of the same call.
BATCH = 500
# Tasks whose marks are cleared per statement (an OR of (id, mark) pairs: SQLite's expression
# depth limit is 1,000).
CLEAR_CHUNK = 100


def flags_update_dirty(
    *,
    task_ids: Iterable[int] | None = None,
    since: datetime | None = None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Updates the flags of every dirty task in the projects of ``task_ids`` (a hint), or,
    without ``task_ids``, of every task marked after ``since`` in any project.

    With ``since``, only marks set after it are taken (older ones are the sweep's, which backs
    off: a prompt whose update keeps failing is not retried on every pass). Returns counts:
    ``tasks`` cleared, ``prompts`` updated, ``passes`` run, and the flag changes (``created``,
    ``reopened``, ``cleared``, ``updated``). Safe to call at any time, any number of times,
    from many workers at once; call it after the judgments commit.
    """
    totals = dict.fromkeys(
        ("tasks", "prompts", "passes", "created", "reopened", "cleared", "updated"), 0
    )
    dirty = Task.objects.filter(flags_dirty_at__isnull=False)
    if since is not None:
        dirty = dirty.filter(flags_dirty_at__gt=since)
    if task_ids is not None:
        hinted = list(task_ids)
        if not hinted:
            return totals
        projects = dirty.filter(pk__in=hinted)
    elif since is None:
        raise ValueError("task_ids or since")
    else:
        projects = dirty
    project_ids = sorted(set(projects.order_by().values_list("project_id", flat=True).distinct()))
    for project_id in project_ids:
        # Passes until what was dirty when this project's turn came is done; marks set later
        # are the next hint's (or the sweep's), so a steady stream of submits cannot hold
        # the worker here.
        done: set[int] = set()
        while True:
            marks = list(
                dirty.filter(project_id=project_id)
                .exclude(pk__in=done)
                .order_by("flags_dirty_at")
                .values_list("pk", "prompt_id", "flags_dirty_at")[:batch]
            )
            if not marks:
                break
            try:
                counts = flags_update_marked(project_id=project_id, marks=marks)
            except Exception:
                # One prompt that fails must not hold back the project's other updates: each
                # task on its own, as before batching; the ones that fail stay marked.
                logger.exception("flag update of %d tasks failed; one by one", len(marks))
                counts = _one_by_one(marks)
            for key, value in counts.items():
                totals[key] += value
            done.update(pk for pk, _, _ in marks)
            if len(marks) < batch:
                break
    return totals


def flags_update_marked(
    *, project_id: int, marks: Sequence[tuple[int, int, datetime]]
) -> dict[str, int]:
    """One pass: the flags of the prompts of ``marks`` (task id, prompt id, the mark as read
    before this call), then each task's mark cleared if it still holds that value."""
    project = Project.objects.select_related("active_reward_model").filter(pk=project_id).first()
    if project is None:  # deleted since the marks were read
        return {}
    prompt_ids = sorted({prompt_id for _, prompt_id, _ in marks})
    data = selectors.project_data(project=project, prompt_ids=prompt_ids)
    agreements: dict[int, tuple[float | None, int]] = {}
    specs: list[C.FlagSpec] = []
    for prompt_id in prompt_ids:
        specs += _prompt_specs(data, prompt_id, agreements)
    _store_agreements(agreements)
    by_prompt = data.votes_by_prompt()
    votes = [vote for prompt_id in prompt_ids for vote in by_prompt.get(prompt_id, [])]
    counts = _sync_flags(
        project_id=project_id,
        specs=specs,
        kinds=C.PROMPT_FLAG_KINDS,
        keys=[f"prompt:{prompt_id}" for prompt_id in prompt_ids],
    )
    gold_counts = _sync_flags(
        project_id=project_id,
        specs=C.gold_flags(votes, data.gold),
        kinds=C.JUDGMENT_FLAG_KINDS,
        keys=[f"judgment:{vote.judgment_id}" for vote in votes],
    )
    cleared = _marks_clear(marks)
    return {
        "tasks": cleared,
        "prompts": len(prompt_ids),
        "passes": 1,
        **{k: counts[k] + gold_counts[k] for k in counts},
    }


def _one_by_one(marks: Sequence[tuple[int, int, datetime]]) -> dict[str, int]:
    cleared = 0
    for task_id, _, _ in marks:
        try:
            flags_update_for_task(task_id=task_id)
        except Exception:
            logger.exception("flag update of task %s failed; it stays marked", task_id)
        else:
            cleared += 1
    return {"tasks": cleared, "passes": 1}


def _marks_clear(marks: Sequence[tuple[int, int, datetime]]) -> int:
    """Clears each task's mark where it still holds the value read before the judgments."""
    cleared = 0
    for start in range(0, len(marks), CLEAR_CHUNK):
        chunk = marks[start : start + CLEAR_CHUNK]
        unchanged = reduce(or_, (Q(pk=pk, flags_dirty_at=seen) for pk, _, seen in chunk))
        cleared += Task.objects.filter(unchanged).update(flags_dirty_at=None)
    return cleared
