"""Builders for curation tests: projects with members, and judgments written through the ORM."""

from __future__ import annotations

import itertools

import pytest

from annotate.models import Judgment, ModelScore, Project, RewardModel, Task, TaskCandidate
from tests.factories import add_member, make_project, make_user

_keys = itertools.count(1)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Hashing test passwords with PBKDF2 costs ~0.2 s per user; these tests never log in
    with one. Import this fixture into a test module to use it there."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def slots(task: Task) -> list[int]:
    """A task's candidate ids in slot order (position 0 is pair outcome "a")."""
    return list(
        TaskCandidate.objects.filter(task=task)
        .order_by("position")
        .values_list("candidate_id", flat=True)
    )


def judge_ranking(
    task: Task, user, ranking: list[list[int]], *, duration_ms: int = 6000, presented=None
) -> Judgment:
    judgment = Judgment.objects.create(
        project_id=task.project_id,
        task=task,
        annotator=user,
        kind=Judgment.Kind.RANKING,
        ranking=ranking,
        presented_order=presented if presented is not None else slots(task),
        duration_ms=duration_ms,
        idempotency_key=f"t-{next(_keys)}",
    )
    Task.objects.filter(pk=task.pk).update(judgment_count=task.judgments.count())
    return judgment


def judge_pair(
    task: Task, user, outcome: str, *, duration_ms: int = 4000, presented=None
) -> Judgment:
    judgment = Judgment.objects.create(
        project_id=task.project_id,
        task=task,
        annotator=user,
        kind=Judgment.Kind.PAIR,
        outcome=outcome,
        presented_order=presented if presented is not None else slots(task),
        duration_ms=duration_ms,
        idempotency_key=f"t-{next(_keys)}",
    )
    Task.objects.filter(pk=task.pk).update(judgment_count=task.judgments.count())
    return judgment


def members(project: Project, users: dict, *, extra_annotators: int = 0) -> list:
    """Adds the standard roles; returns the annotators (ann, ann2 and ``extra`` more)."""
    add_member(project, users["annotator"], "annotator")
    add_member(project, users["annotator2"], "annotator")
    add_member(project, users["reviewer"], "reviewer")
    add_member(project, users["admin"], "admin")
    elsewhere = make_project(name=f"elsewhere-{project.pk}", n_prompts=1)
    add_member(elsewhere, users["outsider"], "reviewer")
    annotators = [users["annotator"], users["annotator2"]]
    for i in range(extra_annotators):
        user = make_user(f"extra{project.pk}-{i}")
        add_member(project, user, "annotator")
        annotators.append(user)
    return annotators


def disputed_ranking_project(users: dict, *, n_prompts: int = 3) -> tuple[Project, list]:
    """Ranking project (N=4, k=4): on every prompt three annotators (nearly) agree and the
    fourth, ``people[3]``, reverses their order."""
    project = make_project(name="disputed", n_prompts=n_prompts, n_candidates=4, k=4)
    people = members(project, users, extra_annotators=2)
    for task in Task.objects.filter(project=project).order_by("id"):
        a, b, c, d = slots(task)
        judge_ranking(task, people[0], [[a], [b], [c], [d]])
        judge_ranking(task, people[1], [[a], [b], [c], [d]])
        judge_ranking(task, people[2], [[a], [b], [d], [c]])
        judge_ranking(task, people[3], [[d], [c], [b], [a]])
    return project, people


def score(project: Project, scores: dict[int, float]) -> RewardModel:
    """Registers an active reward model with these candidate scores."""
    rm = RewardModel.objects.create(
        name=f"rm-{project.pk}", version="1", backend="multi_response", path="/nonexistent"
    )
    ModelScore.objects.bulk_create(
        ModelScore(candidate_id=c, reward_model=rm, score=s) for c, s in scores.items()
    )
    project.active_reward_model = rm
    project.save(update_fields=["active_reward_model"])
    return rm


@pytest.fixture
def ranked_export(users):
    """A built curated export of six prompts of three candidates, each ranked by one annotator
    (set ``settings.DATA_DIR`` first: the test modules' ``_data_dir``)."""
    from curation import services
    from curation.models import DatasetExport

    project = make_project(n_prompts=6, n_candidates=3, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export
