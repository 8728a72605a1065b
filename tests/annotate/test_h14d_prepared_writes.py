"""The submit's write and the next task's membership read, compiled once per process: the rows
written and the instances read are the ORM's, and a compiler that binds otherwise is caught."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotate import queue, selectors
from annotate.models import Assignment, Judgment, Membership, Task
from tests.annotate.conftest import new_key
from tests.factories import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _fields(instance: models.Model) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def _rated(assignment: Assignment) -> dict:
    return {"helpful": {str(c): 1 + i % 5 for i, c in enumerate(assignment.presented_order)}}


def _submit(project, user, now, rate: bool = False, **verdict):
    assignment = queue.assignment_next(project=project, annotator=user, now=now)
    assert assignment is not None
    if rate:
        verdict["ratings"] = _rated(assignment)
    verdict.setdefault("ranking", [[c] for c in reversed(assignment.presented_order)])
    result = queue.judgment_submit(
        assignment=assignment, project=project, idempotency_key=new_key(), now=now, **verdict
    )
    return assignment, result.judgment


def test_a_submit_writes_every_column_of_the_three_rows(ranking_project, users, monkeypatch):
    monkeypatch.setattr(queue, "_STORE_SQL", {})  # compiled by this test's first submit
    now = timezone.now()
    user = users["annotator"]
    ranking_project.rubric_dimensions = ["helpful"]
    ranking_project.save(update_fields=["rubric_dimensions"])
    for i, (rationale, duration) in enumerate([("first", 1200), ("", None)]):
        at = now + timedelta(seconds=i)
        assignment, judgment = _submit(
            ranking_project, user, at, rate=i == 0, rationale=rationale, duration_ms=duration
        )
        stored = Judgment.objects.get(pk=judgment.pk)
        assert _fields(stored) == _fields(judgment)
        assert stored.ranking == [[c] for c in reversed(assignment.presented_order)]
        assert stored.presented_order == assignment.presented_order
        assert stored.rationale == rationale
        # None: the time since the lease was written.
        assert stored.duration_ms == duration if duration else stored.duration_ms >= 0
        assert stored.ratings == (_rated(assignment) if i == 0 else {})
        assert (stored.assignment_id, stored.task_id, stored.annotator_id) == (
            assignment.pk,
            assignment.task_id,
            user.pk,
        )
        assert stored.source == Judgment.Source.HUMAN
        assert stored.created_at is not None and stored.updated_at is not None
        a = Assignment.objects.get(pk=assignment.pk)
        assert (a.status, a.updated_at) == (Assignment.Status.SUBMITTED, at)
        task = Task.objects.get(pk=assignment.task_id)
        assert (task.judgment_count, task.status, task.flags_dirty_at) == (1, Task.Status.OPEN, at)
    # The second annotator's judgment is the task's k-th: the status the write sets.
    _, judgment = _submit(ranking_project, users["annotator2"], now)
    task = Task.objects.get(pk=judgment.task_id)
    assert (task.judgment_count, task.status) == (2, Task.Status.COMPLETE)


def test_the_sql_is_compiled_once(ranking_project, users, monkeypatch):
    monkeypatch.setattr(queue, "_STORE_SQL", {})
    now = timezone.now()
    _submit(ranking_project, users["annotator"], now)

    def compile_again(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(queue, "_update_sql", compile_again)
    with CaptureQueriesContext(connection) as writes:
        _, judgment = _submit(ranking_project, users["annotator"], now + timedelta(seconds=1))
    assert Judgment.objects.filter(pk=judgment.pk).exists()
    assert any("annotate_judgment" in q["sql"] for q in writes.captured_queries)


def test_parameters_bound_otherwise_than_the_orms_are_refused(ranking_project, users, monkeypatch):
    monkeypatch.setattr(queue, "_STORE_SQL", {})
    bind = queue._store_params

    def swapped(**kwargs):
        params = bind(**kwargs)
        params[1][0], params[1][1] = params[1][1], params[1][0]  # count and status
        return params

    monkeypatch.setattr(queue, "_store_params", swapped)
    with pytest.raises(RuntimeError, match="differ from the ORM's"):
        _submit(ranking_project, users["annotator"], timezone.now())
    assert not Judgment.objects.exists()


def test_the_membership_read_is_the_orms(ranking_project, users, django_assert_num_queries):
    user = users["annotator"]
    expected = Membership.objects.select_related("project").get(project=ranking_project, user=user)
    with django_assert_num_queries(1):
        got = selectors.membership_for_annotation(user=user, project_id=ranking_project.pk)
        project = got.project  # loaded with it: no query of its own
    assert _fields(got) == _fields(expected)
    assert _fields(project) == _fields(expected.project)


def test_no_membership_for_outsiders_anonymous_users_and_impossible_ids(ranking_project, users):
    from django.contrib.auth.models import AnonymousUser

    stranger = make_user("h14d-stranger")
    assert selectors.membership_for_annotation(user=stranger, project_id=ranking_project.pk) is None
    assert (
        selectors.membership_for_annotation(user=AnonymousUser(), project_id=ranking_project.pk)
        is None
    )
    user = users["annotator"]
    assert (
        selectors.membership_for_annotation(user=user, project_id=ranking_project.pk + 999) is None
    )
    assert selectors.membership_for_annotation(user=user, project_id=2**70) is None


def test_a_lease_is_the_row_create_would_write(ranking_project, users, monkeypatch):
    monkeypatch.setattr(queue._ASSIGNMENT_INSERT, "_sql", {})
    now = timezone.now()
    for user in (users["annotator"], users["annotator2"]):
        before = timezone.now()
        assignment = queue.assignment_next(project=ranking_project, annotator=user, now=now)
        stored = Assignment.objects.get(pk=assignment.pk)
        assert _fields(stored) == _fields(assignment)
        assert (stored.annotator_id, stored.status, stored.skip_reason) == (
            user.pk,
            Assignment.Status.LEASED,
            "",
        )
        assert stored.leased_until == now + timedelta(minutes=queue.lease_minutes(ranking_project))
        assert sorted(stored.presented_order) == queue.task_positions(stored.task_id)
        assert stored.created_at >= before and stored.updated_at >= before
    assert len(queue._ASSIGNMENT_INSERT._sql) == 1


def test_a_refused_lease_insert_marks_the_transaction_for_rollback(ranking_project, users):
    from django.db import IntegrityError, transaction

    user = users["annotator"]
    leased = queue.assignment_next(project=ranking_project, annotator=user)
    copy = Assignment(
        task_id=leased.task_id,
        annotator=user,
        leased_until=leased.leased_until,
        presented_order=leased.presented_order,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        with pytest.raises(IntegrityError):
            queue._ASSIGNMENT_INSERT.insert(copy)  # assignment_unique
        assert transaction.get_rollback()
        raise IntegrityError("rolled back")
    assert Assignment.objects.filter(task_id=leased.task_id, annotator=user).count() == 1


def test_insert_parameters_bound_otherwise_than_the_orms_are_refused(monkeypatch):
    from annotate.prepared_queries import PreparedInsert

    insert = PreparedInsert(Assignment)
    bind = insert.params
    monkeypatch.setattr(insert, "params", lambda instance, using="default": bind(instance)[::-1])
    with pytest.raises(RuntimeError, match="differ from the ORM's"):
        insert._compile(
            Assignment(task_id=1, annotator_id=1, leased_until=timezone.now()), "default"
        )
