"""The coalesced flag update: every dirty task of a project in one pass (curation/task_flags.py)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Project, Task
from curation import selectors, task_flags
from curation.models import Flag, PromptAgreement
from curation.services import flags_update_for_task
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _mixed_project(users) -> tuple[Project, list[Task], dict]:
    """Three prompts: the first disputed (low agreement), the second agreed, the third a gold
    task one annotator gets wrong. Every task marked dirty, each with its own mark."""
    project = make_project(n_prompts=3, n_candidates=4, k=2)
    people = members(project, users)
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    a, b, c, d = slots(tasks[0])
    judge_ranking(tasks[0], people[0], [[a], [b], [c], [d]])
    judge_ranking(tasks[0], people[1], [[d], [c], [b], [a]])
    a, b, c, d = slots(tasks[1])
    judge_ranking(tasks[1], people[0], [[a], [b], [c], [d]])
    judge_ranking(tasks[1], people[1], [[a], [b], [c], [d]])
    a, b, c, d = slots(tasks[2])
    Task.objects.filter(pk=tasks[2].pk).update(is_gold=True, gold_ranking=[[a], [b], [c], [d]])
    judge_ranking(tasks[2], people[0], [[a], [b], [d], [c]])
    wrong = judge_ranking(tasks[2], people[1], [[c], [d], [b], [a]])
    base = timezone.now() - timedelta(seconds=5)
    for i, task in enumerate(tasks):
        Task.objects.filter(pk=task.pk).update(flags_dirty_at=base + timedelta(milliseconds=i))
    return project, tasks, {"wrong": wrong}


def _flag_state(project: Project) -> set[tuple]:
    return {
        (f.kind, f.key, f.status, f.severity, f.evidence, f.prompt_id, f.judgment_id)
        for f in Flag.objects.filter(project=project)
    }


def _agreements(project: Project) -> dict[int, tuple]:
    return {
        a.prompt_id: (a.agreement, a.comparisons)
        for a in PromptAgreement.objects.filter(prompt__project=project)
    }


def test_one_hint_updates_every_dirty_prompt_of_the_project_in_one_pass(users, monkeypatch):
    project, tasks, made = _mixed_project(users)
    other = make_project(name="other", n_prompts=1)
    other_task = Task.objects.get(project=other)
    Task.objects.filter(pk=other_task.pk).update(flags_dirty_at=timezone.now())
    loads = []
    real = selectors.project_data
    monkeypatch.setattr(
        selectors, "project_data", lambda **kw: loads.append(kw["prompt_ids"]) or real(**kw)
    )

    counts = task_flags.flags_update_dirty(task_ids=[tasks[0].pk])  # the hint names one

    assert counts["passes"] == 1 and counts["tasks"] == 3 and counts["prompts"] == 3
    assert loads == [sorted(t.prompt_id for t in tasks)]  # one load for the three prompts
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()
    assert Task.objects.get(pk=other_task.pk).flags_dirty_at is not None  # not hinted
    low = Flag.objects.filter(project=project, kind="low_agreement")
    assert {f.prompt_id for f in low} == {tasks[0].prompt_id, tasks[2].prompt_id}
    (gold,) = Flag.objects.filter(project=project, kind="failed_gold")
    assert gold.judgment_id == made["wrong"].pk
    batched, batched_agreements = _flag_state(project), _agreements(project)
    assert set(batched_agreements) == {t.prompt_id for t in tasks}

    # The same flags and agreements as the one-task update gives each task on its own.
    monkeypatch.setattr(selectors, "project_data", real)
    Flag.objects.filter(project=project).delete()
    PromptAgreement.objects.filter(prompt__project=project).delete()
    for task in tasks:
        flags_update_for_task(task_id=task.pk)
    assert _flag_state(project) == batched
    assert _agreements(project) == batched_agreements


def test_a_judgment_committed_during_the_pass_leaves_its_task_marked(users, monkeypatch):
    project, tasks, _ = _mixed_project(users)
    a, b, c, d = slots(tasks[1])
    real = selectors.project_data
    racing = {}

    def load_then_a_submit_lands(**kw):
        data = real(**kw)  # the pass has read the judgments; a submit commits now
        racing["judgment"] = judge_ranking(tasks[1], users["reviewer"], [[d], [c], [b], [a]])
        racing["mark"] = timezone.now()
        Task.objects.filter(pk=tasks[1].pk).update(flags_dirty_at=racing["mark"])
        return data

    monkeypatch.setattr(selectors, "project_data", load_then_a_submit_lands)
    counts = task_flags.flags_update_dirty(task_ids=[tasks[1].pk])
    assert counts["tasks"] == 2  # the other two
    assert Task.objects.get(pk=tasks[1].pk).flags_dirty_at == racing["mark"]  # still owed
    assert not Flag.objects.filter(prompt_id=tasks[1].prompt_id, kind="low_agreement").exists()

    # The next hint runs the update that was owed: the reversed ranking now disagrees.
    monkeypatch.setattr(selectors, "project_data", real)
    assert task_flags.flags_update_dirty(task_ids=[tasks[1].pk])["tasks"] == 1
    assert Task.objects.get(pk=tasks[1].pk).flags_dirty_at is None
    assert Flag.objects.filter(prompt_id=tasks[1].prompt_id, kind="low_agreement").exists()


def test_a_hint_for_tasks_already_updated_costs_one_query(users, django_assert_num_queries):
    _, tasks, _ = _mixed_project(users)
    task_flags.flags_update_dirty(task_ids=[tasks[0].pk])
    with django_assert_num_queries(1):
        counts = task_flags.flags_update_dirty(task_ids=[t.pk for t in tasks])
    assert counts["passes"] == 0


def test_it_takes_a_backlog_in_passes_of_the_batch_size(users):
    project, tasks, _ = _mixed_project(users)
    counts = task_flags.flags_update_dirty(task_ids=[tasks[2].pk], batch=2)
    assert (counts["passes"], counts["tasks"]) == (2, 3)
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()


def test_a_failing_pass_falls_back_to_one_task_at_a_time(users, monkeypatch):
    project, tasks, _ = _mixed_project(users)

    def broken(**kw):
        raise RuntimeError("one bad prompt")

    monkeypatch.setattr(task_flags, "flags_update_marked", broken)
    counts = task_flags.flags_update_dirty(task_ids=[tasks[0].pk])
    assert counts["tasks"] == 3
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()
    assert Flag.objects.filter(project=project, kind="low_agreement").count() == 2


def test_the_worker_answers_both_hint_messages_with_the_batched_pass(users):
    import workers.tasks  # noqa: F401  (what the worker's autodiscovery imports)
    from config.celery import app

    project, tasks, _ = _mixed_project(users)
    for name in ("quorum.flags_update_dirty", "quorum.flags_update_for_task"):
        assert app.amqp.router.route({}, name)["queue"].name == "default"
        assert app.tasks[name].ignore_result  # nobody reads it: no result records
    app.tasks["quorum.flags_update_for_task"].apply(kwargs={"task_id": tasks[0].pk}).get()
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()
    Task.objects.filter(pk=tasks[1].pk).update(flags_dirty_at=timezone.now())
    app.tasks["quorum.flags_update_dirty"].apply(kwargs={"task_ids": [tasks[1].pk]}).get()
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()
    assert Flag.objects.filter(project=project, kind="low_agreement").count() == 2


def test_a_pass_over_recent_marks_leaves_older_ones_to_the_sweep(users, settings):
    project, tasks, _ = _mixed_project(users)
    old = timezone.now() - timedelta(seconds=settings.QUORUM_JOB_REPUBLISH_SECONDS + 5)
    Task.objects.filter(pk=tasks[0].pk).update(flags_dirty_at=old)
    counts = task_flags.flags_update_dirty(
        since=timezone.now() - timedelta(seconds=settings.QUORUM_JOB_REPUBLISH_SECONDS)
    )
    assert (counts["passes"], counts["tasks"]) == (1, 2)
    assert Task.objects.get(pk=tasks[0].pk).flags_dirty_at == old
    assert task_flags.flags_update_dirty(task_ids=[tasks[0].pk])["tasks"] == 1  # the sweep's


def test_the_worker_gathers_hints_into_one_scheduled_pass(users, settings, monkeypatch):
    from workers import curation_tasks, jobs

    project, tasks, _ = _mixed_project(users)
    settings.QUORUM_FLAGS_UPDATE_DELAY_MS = 200
    scheduled = []
    monkeypatch.setattr(jobs, "flags_update_recent_schedule", scheduled.append)
    monkeypatch.setitem(curation_tasks._gathering, "due", 0.0)
    hint = curation_tasks.flags_update_dirty_task
    assert hint(task_ids=[tasks[0].pk]) == {"scheduled": 0.2}
    assert hint(task_ids=[tasks[1].pk]) == {"gathered": 1}  # the pass due will take it
    assert scheduled == [0.2]
    assert Task.objects.filter(project=project, flags_dirty_at__isnull=False).count() == 3
    curation_tasks._gathering["due"] = 0.0  # the pass's time came
    assert hint(task_ids=[tasks[2].pk]) == {"scheduled": 0.2}
    assert scheduled == [0.2, 0.2]

    counts = curation_tasks.flags_update_recent_task()  # what the scheduled message runs
    assert (counts["passes"], counts["tasks"]) == (1, 3)
    assert not Task.objects.filter(project=project, flags_dirty_at__isnull=False).exists()

    Task.objects.filter(pk=tasks[0].pk).update(flags_dirty_at=timezone.now())
    assert hint(task_ids=[tasks[0].pk], at_once=True)["tasks"] == 1  # the sweep's: now


def test_a_hint_runs_at_once_when_the_broker_refuses_the_pass(users, settings, monkeypatch):
    from workers import curation_tasks, jobs

    project, tasks, _ = _mixed_project(users)
    settings.QUORUM_FLAGS_UPDATE_DELAY_MS = 200

    def refuse(delay):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(jobs, "flags_update_recent_schedule", refuse)
    monkeypatch.setitem(curation_tasks._gathering, "due", 0.0)
    assert curation_tasks.flags_update_dirty_task(task_ids=[tasks[0].pk])["tasks"] == 3
    assert curation_tasks._gathering["due"] == 0.0


@pytest.mark.worker
def test_a_real_worker_gathers_hints_and_clears_every_mark(celery_worker_process, users):
    """Through the configured broker (the embedded one, or Redis): hints gathered into one
    pass scheduled as an ETA message, and every task's flags updated."""
    from workers import jobs

    project, tasks, _ = _mixed_project(users)
    celery_worker_process(queues="default", extra_env={"QUORUM_FLAGS_UPDATE_DELAY_MS": "300"})
    for task in tasks:
        assert jobs.flags_updates_publish([task.pk]) == 1
    deadline = time.monotonic() + 60
    dirty = Task.objects.filter(project=project, flags_dirty_at__isnull=False)
    while dirty.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not dirty.exists()
    assert Flag.objects.filter(project=project, kind="low_agreement").count() == 2
    assert Flag.objects.filter(project=project, kind="failed_gold").count() == 1
