"""The work queue: which task comes next, leases, expiry, skips, capacity k, gold tasks."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate import queue
from annotate.models import Assignment, Task
from annotate.services import JudgmentInvalid
from tests.annotate.conftest import new_key
from tests.factories import add_member, make_project, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _rank_all(assignment: Assignment, project) -> None:
    queue.judgment_submit(
        assignment=assignment,
        project=project,
        idempotency_key=new_key(),
        ranking=[[c] for c in assignment.presented_order],
    )


def test_it_serves_the_highest_priority_first_then_the_oldest(ranking_project, users):
    t1, t2, t3 = Task.objects.filter(project=ranking_project).order_by("id")
    Task.objects.filter(pk=t3.pk).update(priority=5.0)
    served = []
    for _ in range(3):
        a = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
        served.append(a.task_id)
        _rank_all(a, ranking_project)
    assert served == [t3.pk, t1.pk, t2.pk]


def test_it_resumes_the_live_lease_instead_of_leasing_another(ranking_project, users):
    first = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    again = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    assert again.pk == first.pk
    assert Assignment.objects.filter(annotator=users["annotator"]).count() == 1


def test_it_leases_for_the_projects_lease_minutes(ranking_project, users):
    ranking_project.lease_minutes = 3
    ranking_project.save()
    now = timezone.now()
    a = queue.assignment_next(project=ranking_project, annotator=users["annotator"], now=now)
    assert a.leased_until == now + timedelta(minutes=3)


def test_it_records_the_presented_order_as_a_permutation_of_the_candidates(ranking_project, users):
    a = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    a.refresh_from_db()
    slots = list(a.task.slots.values_list("candidate_id", flat=True))
    assert sorted(a.presented_order) == sorted(slots)
    assert len(a.presented_order) == 4


def test_it_randomises_the_presented_order_per_assignment(users):
    project = make_project(n_prompts=1, n_candidates=8, k=30)
    orders = set()
    for i in range(12):
        user = make_user(f"shuffle{i}")
        add_member(project, user)
        a = queue.assignment_next(project=project, annotator=user, rng=random.Random(i))
        orders.add(tuple(a.presented_order))
    assert len(orders) > 1


def test_it_never_serves_a_task_twice_to_one_annotator(ranking_project, users):
    seen = []
    while a := queue.assignment_next(project=ranking_project, annotator=users["annotator"]):
        seen.append(a.task_id)
        _rank_all(a, ranking_project)
    assert sorted(seen) == sorted(
        Task.objects.values_list("pk", flat=True).filter(project=ranking_project)
    )


def test_it_counts_live_leases_against_k(users):
    project = make_project(n_prompts=1, k=2)
    annotators = [make_user(f"cap{i}") for i in range(3)]
    for u in annotators:
        add_member(project, u)
    first = queue.assignment_next(project=project, annotator=annotators[0])
    second = queue.assignment_next(project=project, annotator=annotators[1])
    assert first.task_id == second.task_id
    assert queue.assignment_next(project=project, annotator=annotators[2]) is None


def test_it_honours_a_task_level_k(users):
    project = make_project(n_prompts=1, k=3)
    Task.objects.filter(project=project).update(required_judgments=1)
    a, b = make_user("one"), make_user("two")
    add_member(project, a)
    add_member(project, b)
    assert queue.assignment_next(project=project, annotator=a) is not None
    assert queue.assignment_next(project=project, annotator=b) is None


def test_it_returns_abandoned_work_to_the_pool_when_the_lease_expires(users):
    project = make_project(n_prompts=1, k=1)
    a, b = make_user("leaver"), make_user("taker")
    add_member(project, a)
    add_member(project, b)
    now = timezone.now()
    queue.assignment_next(project=project, annotator=a, now=now)
    assert queue.assignment_next(project=project, annotator=b, now=now) is None
    later = now + timedelta(minutes=project.lease_minutes, seconds=1)
    taken = queue.assignment_next(project=project, annotator=b, now=later)
    assert taken is not None


def test_it_reuses_the_annotators_own_lapsed_assignment_row(ranking_project, users):
    now = timezone.now()
    first = queue.assignment_next(
        project=ranking_project, annotator=users["annotator"], now=now, rng=random.Random(1)
    )
    later = now + timedelta(minutes=ranking_project.lease_minutes + 1)
    again = queue.assignment_next(
        project=ranking_project, annotator=users["annotator"], now=later, rng=random.Random(2)
    )
    assert again.pk == first.pk
    again.refresh_from_db()
    assert again.status == Assignment.Status.LEASED
    assert again.leased_until > later
    assert again.presented_order == first.presented_order  # same letters as before
    assert Assignment.objects.filter(annotator=users["annotator"]).count() == 1


def test_it_skips_with_a_reason_and_frees_the_place(users):
    project = make_project(n_prompts=1, k=1)
    a, b = make_user("skipper"), make_user("next")
    add_member(project, a)
    add_member(project, b)
    lease = queue.assignment_next(project=project, annotator=a)
    queue.assignment_skip(assignment=lease, reason="video does not load")
    lease.refresh_from_db()
    assert lease.status == Assignment.Status.SKIPPED
    assert lease.skip_reason == "video does not load"
    assert queue.assignment_next(project=project, annotator=a) is None
    assert queue.assignment_next(project=project, annotator=b).task_id == lease.task_id


def test_it_requires_a_reason_to_skip(ranking_project, users):
    lease = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    with pytest.raises(JudgmentInvalid) as exc:
        queue.assignment_skip(assignment=lease, reason="  ")
    assert exc.value.field == "reason"
    lease.refresh_from_db()
    assert lease.status == Assignment.Status.LEASED


def test_it_does_not_serve_complete_or_discarded_tasks(ranking_project, users):
    t1, t2, t3 = Task.objects.filter(project=ranking_project).order_by("id")
    Task.objects.filter(pk=t1.pk).update(status=Task.Status.COMPLETE)
    Task.objects.filter(pk=t2.pk).update(status=Task.Status.DISCARDED)
    a = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    assert a.task_id == t3.pk


def test_it_counts_imported_judgments_against_k(ranking_project, users):
    Task.objects.filter(project=ranking_project).update(judgment_count=2)
    assert queue.assignment_next(project=ranking_project, annotator=users["annotator"]) is None


def test_it_serves_gold_tasks_at_the_gold_rate(users):
    project = make_project(n_prompts=40, k=1)
    gold_ids = list(
        Task.objects.filter(project=project).order_by("id").values_list("pk", flat=True)[:20]
    )
    Task.objects.filter(pk__in=gold_ids).update(is_gold=True, gold_ranking=[[1], [2], [3], [4]])
    project.gold_rate = 0.25
    project.save()
    user = make_user("gold-seer")
    add_member(project, user)
    rng = random.Random(7)
    served_gold = 0
    for _ in range(16):
        a = queue.assignment_next(project=project, annotator=user, rng=rng)
        served_gold += a.task_id in gold_ids
        _rank_all(a, project)
    # Seeded: the draw is deterministic; a quarter of 16, give or take the draw's spread.
    assert 1 <= served_gold <= 8
    regular_first = Task.objects.exclude(pk__in=gold_ids).order_by("id").first()
    assert Assignment.objects.filter(annotator=user, task=regular_first).exists()


def test_it_never_serves_gold_when_the_rate_is_zero(users):
    project = make_project(n_prompts=4, k=1)
    Task.objects.filter(project=project).order_by("id").filter(
        pk=Task.objects.filter(project=project).order_by("id").first().pk
    ).update(is_gold=True)
    user = make_user("no-gold")
    add_member(project, user)
    served = []
    while a := queue.assignment_next(project=project, annotator=user):
        served.append(a.task.is_gold)
        _rank_all(a, project)
    assert served == [False, False, False]


def test_it_serves_a_gold_task_to_every_annotator_beyond_k(users):
    project = make_project(n_prompts=1, k=1)
    Task.objects.filter(project=project).update(is_gold=True)
    project.gold_rate = 1.0
    project.save()
    for i in range(3):
        user = make_user(f"gold{i}")
        add_member(project, user)
        a = queue.assignment_next(project=project, annotator=user)
        assert a is not None
        _rank_all(a, project)
    task = Task.objects.get(project=project)
    assert task.judgment_count == 3
