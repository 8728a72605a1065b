"""Next-task's wait for a locked task (PostgreSQL) holds no lock of a task its ``SKIP LOCKED``
picks found full: a submit on such a task goes through while the wait goes on.

The picks lock a task and then re-read its room (a lease committed after the pick's snapshot
may have filled it); such a task's row lock used to be kept through the wait (``LOCK_WAIT_MS``),
so the annotators whose leases filled it queued their submits behind a request that had no use
for the task."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotate import queue
from annotate.models import Assignment, Judgment, Task
from tests.annotate.test_h18d_locked_last_task import LeaseInProgress, _lock_waiters, _member
from tests.factories import make_project

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; run with DATABASE_URL=postgres://...")


def _in_thread(fn, *args) -> threading.Thread:
    """Runs ``fn`` on its own connection; the thread's ``outcome`` is [result] or [exception]."""

    def run() -> None:
        try:
            thread.outcome.append(fn(*args))
        except BaseException as exc:
            thread.outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.outcome = []
    thread.start()
    return thread


def _wait_until(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_submit_on_a_task_the_picks_found_full_does_not_wait_for_the_wait(monkeypatch):
    monkeypatch.setattr(queue, "LOCK_WAIT_MS", 20_000)  # the wait outlasts the test's patience
    project = make_project(name="h19e-full", n_prompts=2, k=1)
    first, second = Task.objects.filter(project=project).order_by("id")
    # The submitter's lease on the second task has lapsed: the task has room for others.
    submitter = _member(project, "h19e-submitter")
    lapsed = Assignment.objects.create(
        task=second,
        annotator=submitter,
        status=Assignment.Status.LEASED,
        leased_until=timezone.now() - timedelta(minutes=1),
        presented_order=queue._ids_from_key(second),
    )
    # Another annotator's lease of the first task, in progress: its row stays locked.
    holder = LeaseInProgress(project, _member(project, "h19e-holder"), until_waiter=False)
    holder.start()
    assert holder.holding.wait(10)
    assert holder.leased_task_id == first.pk

    # The race the room check is there for: the submitter's lease (its lapsed row leased again,
    # as _write_lease does) commits after the asker's pick read the second task with room and
    # before the room check, which then finds the task full while the asker holds its lock.
    real_has_room, checked = queue._has_room, []

    def has_room(*, task, project, now):
        if task.pk == second.pk and not checked:
            renew = _in_thread(
                lambda: Assignment.objects.filter(pk=lapsed.pk).update(
                    leased_until=timezone.now() + timedelta(minutes=30)
                )
            )
            renew.join(10)
            assert renew.outcome == [1]
        room = real_has_room(task=task, project=project, now=now)
        checked.append((task.pk, room))
        return room

    monkeypatch.setattr(queue, "_has_room", has_room)
    asker = _in_thread(
        lambda: queue.assignment_next(project=project, annotator=_member(project, "h19e-asker"))
    )
    try:
        # The asker found the second task full and waits for the first task's lock.
        assert _wait_until(lambda: _lock_waiters() >= 1, 10)
        assert checked == [(second.pk, False)]

        lease = Assignment.objects.get(pk=lapsed.pk)
        submit = _in_thread(
            lambda: queue.judgment_submit(
                assignment=lease,
                project=project,
                idempotency_key=str(uuid.uuid4()),
                ranking=[[c] for c in lease.presented_order],
            )
        )
        submit.join(8)
        submitted_during_the_wait = not submit.is_alive() and asker.is_alive()
    finally:
        holder.release.set()
        holder.join(30)
        asker.join(30)
    submit.join(30)

    assert holder.error is None and holder.committed.is_set()
    assert submitted_during_the_wait  # not queued behind the asker's wait
    assert len(submit.outcome) == 1 and submit.outcome[0].created
    assert asker.outcome == [None]  # the holder's lease filled the first task
    second.refresh_from_db()
    assert (second.status, second.judgment_count) == (Task.Status.COMPLETE, 1)
    assert Judgment.objects.filter(task=second, annotator=submitter).count() == 1
    assert not Assignment.objects.filter(annotator__username="h19e-asker").exists()


def test_a_task_with_room_after_the_picks_is_still_leased_by_the_wait(monkeypatch):
    """The picks' locks let go, the wait still serves a place: the first task is found full,
    the second (locked by a lease in progress that leaves a place) is waited for and leased."""
    monkeypatch.setattr(queue, "LOCK_WAIT_MS", 20_000)
    project = make_project(name="h19e-room", n_prompts=2, k=2)
    first, second = Task.objects.filter(project=project).order_by("id")
    # The first task: one place of two taken by a lapsed lease that is leased again in the race.
    Task.objects.filter(pk=first.pk).update(judgment_count=1)
    lapsed = Assignment.objects.create(
        task=first,
        annotator=_member(project, "h19e-lapsed"),
        status=Assignment.Status.LEASED,
        leased_until=timezone.now() - timedelta(minutes=1),
        presented_order=queue._ids_from_key(first),
    )
    # Served after the second, which a lease in progress holds.
    Task.objects.filter(pk=first.pk).update(priority=-1)
    holder = LeaseInProgress(project, _member(project, "h19e-holder"))  # commits once waited on
    holder.start()
    assert holder.holding.wait(10)
    assert holder.leased_task_id == second.pk  # one place of two: one left for the asker

    real_has_room, checked = queue._has_room, []

    def has_room(*, task, project, now):
        if task.pk == first.pk and not checked:
            renew = _in_thread(
                lambda: Assignment.objects.filter(pk=lapsed.pk).update(
                    leased_until=timezone.now() + timedelta(minutes=30)
                )
            )
            renew.join(10)
        room = real_has_room(task=task, project=project, now=now)
        checked.append((task.pk, room))
        return room

    monkeypatch.setattr(queue, "_has_room", has_room)
    asker = _member(project, "h19e-asker")
    got = queue.assignment_next(project=project, annotator=asker)
    holder.join(30)

    assert holder.error is None and holder.committed.is_set()
    assert holder.waiter_seen  # the asker waited for the holder's lock
    assert checked == [(first.pk, False)]
    assert got is not None and got.task_id == second.pk
    leases = Assignment.objects.filter(task=second, status=Assignment.Status.LEASED)
    assert sorted(leases.values_list("annotator__username", flat=True)) == [
        "h19e-asker",
        "h19e-holder",
    ]
