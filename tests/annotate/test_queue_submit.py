"""Submitting and changing judgments: validation, idempotency, counts, leases, revisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate import queue
from annotate.models import Assignment, Judgment, JudgmentRevision, Task
from annotate.services import JudgmentInvalid
from tests.annotate.conftest import new_key
from tests.factories import add_member, make_project, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _lease(project, user, **kwargs) -> Assignment:
    assignment = queue.assignment_next(project=project, annotator=user, **kwargs)
    assert assignment is not None
    return assignment


def _ranking(assignment: Assignment) -> list[list[int]]:
    return [[c] for c in assignment.presented_order]


def test_it_stores_a_ranking_and_counts_it(ranking_project, users):
    a = _lease(ranking_project, users["annotator"])
    ranking = [a.presented_order[:2], a.presented_order[2:3], a.presented_order[3:]]
    result = queue.judgment_submit(
        assignment=a,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=ranking,
        rationale="  B is wrong  ",
        duration_ms=4200,
    )
    assert result.created
    j = Judgment.objects.get()
    assert j.ranking == ranking
    assert j.kind == "ranking"
    assert j.annotator == users["annotator"]
    assert j.assignment_id == a.pk
    assert j.presented_order == a.presented_order
    assert j.rationale == "B is wrong"
    assert j.duration_ms == 4200
    a.refresh_from_db()
    assert a.status == Assignment.Status.SUBMITTED
    task = Task.objects.get(pk=a.task_id)
    assert (task.judgment_count, task.status) == (1, Task.Status.OPEN)


def test_it_completes_the_task_at_k(ranking_project, users):
    for user in (users["annotator"], users["annotator2"]):
        a = _lease(ranking_project, user)
        queue.judgment_submit(
            assignment=a, project=ranking_project, idempotency_key=new_key(), ranking=_ranking(a)
        )
    task = Task.objects.get(pk=a.task_id)
    assert (task.judgment_count, task.status) == (2, Task.Status.COMPLETE)


def test_it_stores_one_judgment_for_a_repeated_key(ranking_project, users):
    a = _lease(ranking_project, users["annotator"])
    key = new_key()
    first = queue.judgment_submit(
        assignment=a, project=ranking_project, idempotency_key=key, ranking=_ranking(a)
    )
    again = queue.judgment_submit(
        assignment=a, project=ranking_project, idempotency_key=key, ranking=_ranking(a)
    )
    assert first.created and not again.created
    assert again.judgment.pk == first.judgment.pk
    assert Judgment.objects.count() == 1
    assert Task.objects.get(pk=a.task_id).judgment_count == 1


def test_it_refuses_a_second_judgment_with_another_key(ranking_project, users):
    a = _lease(ranking_project, users["annotator"])
    queue.judgment_submit(
        assignment=a, project=ranking_project, idempotency_key=new_key(), ranking=_ranking(a)
    )
    with pytest.raises(queue.AlreadyJudged):
        queue.judgment_submit(
            assignment=a, project=ranking_project, idempotency_key=new_key(), ranking=_ranking(a)
        )
    assert Judgment.objects.count() == 1


def test_it_refuses_a_key_that_belongs_to_another_judgment(ranking_project, users):
    a = _lease(ranking_project, users["annotator"])
    key = new_key()
    queue.judgment_submit(
        assignment=a, project=ranking_project, idempotency_key=key, ranking=_ranking(a)
    )
    b = _lease(ranking_project, users["annotator2"])
    with pytest.raises(queue.KeyConflict):
        queue.judgment_submit(
            assignment=b, project=ranking_project, idempotency_key=key, ranking=_ranking(b)
        )
    b.refresh_from_db()
    assert b.status == Assignment.Status.LEASED
    assert Judgment.objects.count() == 1
    # The refused insert undid the counters written with it (one statement on PostgreSQL).
    task = Task.objects.get(pk=b.task_id)
    assert task.judgment_count == Judgment.objects.filter(task_id=task.pk).count()


@pytest.mark.parametrize(
    ("make_ranking", "field"),
    [
        (lambda order: [[c] for c in order[:3]], "ranking"),  # one candidate missing
        (lambda order: [[c] for c in order] + [[order[0]]], "ranking"),  # duplicated
        (lambda order: [[c] for c in order[:3]] + [[999999]], "ranking"),  # foreign id
        (lambda order: "A>B>C>D", "ranking"),
    ],
)
def test_it_rejects_a_ranking_that_does_not_fit_and_stores_nothing(
    ranking_project, users, make_ranking, field
):
    a = _lease(ranking_project, users["annotator"])
    with pytest.raises(JudgmentInvalid) as exc:
        queue.judgment_submit(
            assignment=a,
            project=ranking_project,
            idempotency_key=new_key(),
            ranking=make_ranking(a.presented_order),
        )
    assert exc.value.field == field
    assert Judgment.objects.count() == 0
    a.refresh_from_db()
    assert a.status == Assignment.Status.LEASED
    assert Task.objects.get(pk=a.task_id).judgment_count == 0


def test_it_rejects_ties_where_the_project_forbids_them(users):
    project = make_project(n_prompts=1, ties_allowed=False)
    add_member(project, users["annotator"])
    a = _lease(project, users["annotator"])
    order = a.presented_order
    with pytest.raises(JudgmentInvalid, match="ties are not allowed"):
        queue.judgment_submit(
            assignment=a,
            project=project,
            idempotency_key=new_key(),
            ranking=[order[:2], [order[2]], [order[3]]],
        )


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (lambda order: {"ratings": {"accuracy": {"999999": 3}}}, "ratings"),
        (lambda order: {"ratings": {"style": {}}}, "ratings"),
        (lambda order: {"ratings": {"accuracy": {str(order[0]): 9}}}, "ratings"),
        (lambda order: {"ratings": {"accuracy": {str(order[0]): True}}}, "ratings"),
        (lambda order: {"duration_ms": -5}, "duration_ms"),
        (lambda order: {"duration_ms": "fast"}, "duration_ms"),
        (lambda order: {"rationale": "x" * 5001}, "rationale"),
        (lambda order: {"idempotency_key": "short"}, "idempotency_key"),
        (lambda order: {"idempotency_key": None}, "idempotency_key"),
    ],
)
def test_it_rejects_bad_extras(ranking_project, users, bad, field):
    ranking_project.rubric_dimensions = ["accuracy"]
    ranking_project.save()
    a = _lease(ranking_project, users["annotator"])
    kwargs = {"idempotency_key": new_key(), "ranking": _ranking(a), **bad(a.presented_order)}
    with pytest.raises(JudgmentInvalid) as exc:
        queue.judgment_submit(assignment=a, project=ranking_project, **kwargs)
    assert exc.value.field == field
    assert Judgment.objects.count() == 0


def test_it_stores_rubric_ratings_per_candidate(ranking_project, users):
    ranking_project.rubric_dimensions = ["accuracy", "style"]
    ranking_project.save()
    a = _lease(ranking_project, users["annotator"])
    first = a.presented_order[0]
    queue.judgment_submit(
        assignment=a,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=_ranking(a),
        ratings={"accuracy": {first: 5}, "style": {str(first): 2}},
    )
    assert Judgment.objects.get().ratings == {
        "accuracy": {str(first): 5},
        "style": {str(first): 2},
    }


def test_it_measures_the_duration_on_the_server_when_the_page_sends_none(ranking_project, users):
    now = timezone.now()
    a = _lease(ranking_project, users["annotator"], now=now)
    queue.judgment_submit(
        assignment=a,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=_ranking(a),
        now=timezone.now() + timedelta(seconds=7),
    )
    assert 7000 <= Judgment.objects.get().duration_ms < 60_000


@pytest.mark.parametrize(
    ("choice", "reversed_order", "stored"),
    [
        ("A", False, "a"),
        ("B", False, "b"),
        ("A", True, "b"),
        ("B", True, "a"),
        ("tie", True, "tie"),
        ("both_bad", False, "both_bad"),
    ],
)
def test_it_maps_the_letter_pressed_to_the_task_position(
    pair_project, users, choice, reversed_order, stored
):
    a = _lease(pair_project, users["annotator"])
    positions = queue.task_positions(a.task_id)
    shown = positions[::-1] if reversed_order else positions
    Assignment.objects.filter(pk=a.pk).update(presented_order=shown)
    a.refresh_from_db()
    queue.judgment_submit(
        assignment=a, project=pair_project, idempotency_key=new_key(), choice=choice
    )
    j = Judgment.objects.get()
    assert (j.kind, j.outcome, j.ranking) == ("pair", stored, None)
    assert (
        queue.pair_choice_shown(outcome=j.outcome, presented=shown, positions=positions) == choice
    )


def test_it_rejects_an_unknown_pair_choice(pair_project, users):
    a = _lease(pair_project, users["annotator"])
    with pytest.raises(JudgmentInvalid) as exc:
        queue.judgment_submit(
            assignment=a, project=pair_project, idempotency_key=new_key(), choice="draw"
        )
    assert exc.value.field == "choice"


def test_it_accepts_a_late_judgment_while_the_task_still_has_room(ranking_project, users):
    now = timezone.now()
    a = _lease(ranking_project, users["annotator"], now=now)
    late = now + timedelta(minutes=ranking_project.lease_minutes + 5)
    queue.judgment_submit(
        assignment=a,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=_ranking(a),
        now=late,
    )
    assert Task.objects.get(pk=a.task_id).judgment_count == 1


def test_it_refuses_a_late_judgment_when_others_took_the_place(users):
    project = make_project(n_prompts=1, k=1)
    slow, quick = make_user("slow"), make_user("quick")
    add_member(project, slow)
    add_member(project, quick)
    now = timezone.now()
    a = _lease(project, slow, now=now)
    late = now + timedelta(minutes=project.lease_minutes + 1)
    b = _lease(project, quick, now=late)
    with pytest.raises(queue.LeaseLost):
        queue.judgment_submit(
            assignment=a, project=project, idempotency_key=new_key(), ranking=_ranking(a), now=late
        )
    queue.judgment_submit(
        assignment=b, project=project, idempotency_key=new_key(), ranking=_ranking(b), now=late
    )
    task = Task.objects.get(project=project)
    assert (task.judgment_count, Judgment.objects.count()) == (1, 1)


def test_it_refuses_a_skipped_assignment(ranking_project, users):
    a = _lease(ranking_project, users["annotator"])
    queue.assignment_skip(assignment=a, reason="broken media")
    with pytest.raises(queue.AssignmentClosed):
        queue.judgment_submit(
            assignment=a, project=ranking_project, idempotency_key=new_key(), ranking=_ranking(a)
        )


def _submitted(project, user, now=None):
    a = _lease(project, user, now=now)
    result = queue.judgment_submit(
        assignment=a, project=project, idempotency_key=new_key(), ranking=_ranking(a), now=now
    )
    return a, result.judgment


def test_it_changes_the_last_judgment_and_keeps_the_previous_version(ranking_project, users):
    a, j = _submitted(ranking_project, users["annotator"])
    before = j.ranking
    changed = [list(reversed(a.presented_order))]
    result = queue.judgment_revise(
        judgment=j,
        project=ranking_project,
        annotator=users["annotator"],
        edit_key=new_key(),
        ranking=changed,
        rationale="second thoughts",
    )
    assert result.created
    j.refresh_from_db()
    assert j.ranking == changed
    assert j.rationale == "second thoughts"
    revision = JudgmentRevision.objects.get()
    assert (revision.judgment_id, revision.number, revision.ranking) == (j.pk, 1, before)
    assert Task.objects.get(pk=a.task_id).judgment_count == 1
    assert Judgment.objects.count() == 1


def test_it_stores_one_revision_for_a_repeated_edit_key(ranking_project, users):
    a, j = _submitted(ranking_project, users["annotator"])
    key = new_key()
    for _ in range(2):
        queue.judgment_revise(
            judgment=j,
            project=ranking_project,
            annotator=users["annotator"],
            edit_key=key,
            ranking=[a.presented_order],
        )
    assert JudgmentRevision.objects.count() == 1


def test_it_numbers_successive_revisions(ranking_project, users):
    a, j = _submitted(ranking_project, users["annotator"])
    for ranking in ([a.presented_order], _ranking(a)):
        queue.judgment_revise(
            judgment=j,
            project=ranking_project,
            annotator=users["annotator"],
            edit_key=new_key(),
            ranking=ranking,
        )
    assert list(JudgmentRevision.objects.values_list("number", flat=True)) == [1, 2]
    assert JudgmentRevision.objects.get(number=2).ranking == [a.presented_order]


def test_it_refuses_to_change_a_judgment_after_its_lease(ranking_project, users):
    now = timezone.now()
    a, j = _submitted(ranking_project, users["annotator"], now=now)
    with pytest.raises(queue.EditWindowClosed):
        queue.judgment_revise(
            judgment=j,
            project=ranking_project,
            annotator=users["annotator"],
            edit_key=new_key(),
            ranking=[a.presented_order],
            now=now + timedelta(minutes=ranking_project.lease_minutes, seconds=1),
        )
    j.refresh_from_db()
    assert j.ranking == _ranking(a)
    assert not JudgmentRevision.objects.exists()


def test_it_refuses_to_change_anything_but_the_last_judgment(ranking_project, users):
    a, first = _submitted(ranking_project, users["annotator"])
    _submitted(ranking_project, users["annotator"])
    with pytest.raises(queue.EditWindowClosed):
        queue.judgment_revise(
            judgment=first,
            project=ranking_project,
            annotator=users["annotator"],
            edit_key=new_key(),
            ranking=[a.presented_order],
        )


def test_it_validates_a_change_like_a_submit(ranking_project, users):
    a, j = _submitted(ranking_project, users["annotator"])
    with pytest.raises(JudgmentInvalid):
        queue.judgment_revise(
            judgment=j,
            project=ranking_project,
            annotator=users["annotator"],
            edit_key=new_key(),
            ranking=[a.presented_order[:2]],
        )
    assert not JudgmentRevision.objects.exists()


def test_it_reports_progress(ranking_project, users):
    user = users["annotator"]
    progress = queue.annotator_progress(project=ranking_project, annotator=user)
    assert (progress.done_today, progress.remaining, progress.editable_judgment_id) == (0, 3, None)
    _a, j = _submitted(ranking_project, user)
    skipped = _lease(ranking_project, user)
    queue.assignment_skip(assignment=skipped, reason="unclear")
    progress = queue.annotator_progress(project=ranking_project, annotator=user)
    assert (progress.done_today, progress.remaining, progress.editable_judgment_id) == (1, 1, j.pk)
    later = timezone.now() + timedelta(minutes=ranking_project.lease_minutes + 1)
    progress = queue.annotator_progress(project=ranking_project, annotator=user, now=later)
    assert progress.editable_judgment_id is None


def test_it_checks_the_verdict_against_the_positions_it_is_given(
    ranking_project, users, monkeypatch
):
    a = _lease(ranking_project, users["annotator"])
    positions = queue.task_positions(a.task_id)

    def unread(task_id: int) -> list[int]:
        raise AssertionError("the positions were given")

    monkeypatch.setattr(queue, "task_positions", unread)
    result = queue.judgment_submit(
        assignment=a,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=_ranking(a),
        positions=positions,
    )
    assert result.created
    b = _lease(ranking_project, users["annotator"])
    with pytest.raises(JudgmentInvalid):  # checked against the positions given, not re-read
        queue.judgment_submit(
            assignment=b,
            project=ranking_project,
            idempotency_key=new_key(),
            ranking=_ranking(b),
            positions=b.presented_order[:3],
        )


def test_it_submits_from_the_page_in_at_most_4_statements(client, ranking_project, users):
    """Session, user, one locked read (the assignment with its task and project, the
    membership checked, the task's positions) and one write (judgment, assignment and task
    counters) on PostgreSQL; SQLite, whose statements cost no round trip, writes in three."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from tests.annotate.conftest import post_json

    client.force_login(users["annotator"])
    client.get(reverse("annotate_work", args=[ranking_project.pk]), HTTP_X_REQUESTED_WITH="fetch")
    a = Assignment.objects.get()
    url = reverse("annotate_submit", args=[ranking_project.pk, a.pk])
    body = {"idempotency_key": new_key(), "ranking": _ranking(a)}

    with CaptureQueriesContext(connection) as ctx:
        response = post_json(client, url, body)

    assert response.status_code == 201, response.content
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= (4 if connection.vendor == "postgresql" else 6), statements
    assert Judgment.objects.get().assignment_id == a.pk
    a.refresh_from_db()
    assert a.status == Assignment.Status.SUBMITTED
    assert Task.objects.get(pk=a.task_id).judgment_count == 1


@pytest.mark.parametrize("reversed_order", [False, True])
def test_the_page_maps_the_letter_pressed_to_the_task_position(
    client, pair_project, users, reversed_order
):
    """The page's submit reads the positions in its one locked read (an array on PostgreSQL,
    pairs sorted in Python on SQLite): "A" is outcome "a" exactly when A is position 0."""
    from django.urls import reverse

    from tests.annotate.conftest import post_json

    client.force_login(users["annotator"])
    client.get(reverse("annotate_work", args=[pair_project.pk]), HTTP_X_REQUESTED_WITH="fetch")
    a = Assignment.objects.get()
    positions = queue.task_positions(a.task_id)
    shown = positions[::-1] if reversed_order else positions
    Assignment.objects.filter(pk=a.pk).update(presented_order=shown)

    url = reverse("annotate_submit", args=[pair_project.pk, a.pk])
    response = post_json(client, url, {"idempotency_key": new_key(), "choice": "A"})

    assert response.status_code == 201, response.content
    assert Judgment.objects.get().outcome == ("b" if reversed_order else "a")
