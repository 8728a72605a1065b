"""Next-task on PostgreSQL when the last open task is row-locked by another request's lease in
progress: it waits for that lease (``SKIP LOCKED`` alone passed over the task and answered
"nothing left"), then serves the place it leaves, or None when that lease filled the task."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connection, transaction

from annotate import queue
from annotate.models import Assignment, Task
from tests.factories import add_member, make_project, make_user

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; run with DATABASE_URL=postgres://...")


def _project_with_one_open_task(k: int):
    """Two tasks wanting ``k`` judgments; the first is complete, the second the last open one."""
    project = make_project(name="last-open", n_prompts=2, k=k)
    done, last = Task.objects.filter(project=project).order_by("id")
    Task.objects.filter(pk=done.pk).update(status=Task.Status.COMPLETE, judgment_count=k)
    return project, last


def _member(project, name: str):
    user = make_user(name)
    add_member(project, user)
    return user


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


class LeaseInProgress(threading.Thread):
    """Another annotator's next-task in an open transaction on its own connection: the task's
    row lock is held and the lease written, not committed. It commits once another backend
    waits on a lock (``waiter_seen``), or when ``release`` is set, or after ``hold_s``."""

    def __init__(self, project, annotator, *, hold_s: float = 10.0, until_waiter: bool = True):
        super().__init__()
        self.project, self.annotator = project, annotator
        self.hold_s, self.until_waiter = hold_s, until_waiter
        self.holding, self.release, self.committed = (threading.Event() for _ in range(3))
        self.waiter_seen = False
        self.leased_task_id: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                assignment = queue.assignment_next(project=self.project, annotator=self.annotator)
                self.leased_task_id = assignment.task_id
                self.holding.set()
                deadline = time.monotonic() + self.hold_s
                while time.monotonic() < deadline and not self.release.is_set():
                    if self.until_waiter and _lock_waiters():
                        self.waiter_seen = True
                        time.sleep(0.2)  # the waiter stays queued until the commit
                        break
                    time.sleep(0.02)
            self.committed.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.holding.set()
            connection.close()


def _free_to_lock(task_id: int) -> bool:
    """Whether another connection can lock the task's row this instant."""
    outcome: list[bool] = []

    def lock() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM annotate_task WHERE id = %s FOR UPDATE NOWAIT", [task_id]
                )
            outcome.append(True)
        except OperationalError:
            outcome.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=lock)
    thread.start()
    thread.join(10)
    return outcome == [True]


def _timeout_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        return cursor.fetchone()[0]


def test_it_waits_for_a_lease_in_progress_and_takes_the_place_it_leaves():
    project, last = _project_with_one_open_task(k=2)
    holder = LeaseInProgress(project, _member(project, "h18d-holder"))
    asker = _member(project, "h18d-asker")
    holder.start()
    assert holder.holding.wait(10)
    assert holder.leased_task_id == last.pk

    with transaction.atomic():
        before = _timeout_setting()
        got = queue.assignment_next(project=project, annotator=asker)
        after = _timeout_setting()
    holder.join(15)

    assert holder.error is None and holder.committed.is_set()
    assert holder.waiter_seen  # the request queued on the task's lock
    assert got is not None and got.task_id == last.pk
    leases = Assignment.objects.filter(task=last, status=Assignment.Status.LEASED)
    assert sorted(leases.values_list("annotator__username", flat=True)) == [
        "h18d-asker",
        "h18d-holder",
    ]
    assert after == before  # the wait's lock_timeout ends with it


def test_it_answers_none_when_the_lease_in_progress_fills_the_task():
    project, last = _project_with_one_open_task(k=2)
    first = queue.assignment_next(project=project, annotator=_member(project, "h18d-first"))
    assert first.task_id == last.pk  # one place of two taken, committed
    holder = LeaseInProgress(project, _member(project, "h18d-holder"))
    holder.start()
    assert holder.holding.wait(10)
    assert holder.leased_task_id == last.pk  # takes the other place

    asker = _member(project, "h18d-asker")
    with transaction.atomic():
        got = queue.assignment_next(project=project, annotator=asker)
        let_go = _free_to_lock(last.pk)  # while the asker's transaction is still open
    holder.join(15)

    assert holder.error is None and holder.committed.is_set()
    assert holder.waiter_seen  # it waited, then read the task again
    assert got is None
    assert Assignment.objects.filter(task=last).count() == 2
    assert let_go  # a task without room is not held while the request goes on


def test_a_lease_that_does_not_commit_costs_the_wait_not_a_hang(monkeypatch):
    monkeypatch.setattr(queue, "LOCK_WAIT_MS", 300)
    project, last = _project_with_one_open_task(k=2)
    holder = LeaseInProgress(project, _member(project, "h18d-holder"), until_waiter=False)
    asker = _member(project, "h18d-asker")
    holder.start()
    assert holder.holding.wait(10)

    with transaction.atomic():
        before = _timeout_setting()
        got = queue.assignment_next(project=project, annotator=asker)
        after = _timeout_setting()  # the transaction is still usable
    still_held = not holder.committed.is_set()
    holder.release.set()
    holder.join(15)

    assert holder.error is None and still_held
    assert got is None
    assert after == before
    again = queue.assignment_next(project=project, annotator=asker)
    assert again is not None and again.task_id == last.pk


def test_a_free_task_with_room_is_leased_without_the_wait(monkeypatch):
    def no_wait(**kwargs):
        raise AssertionError("waited although a task was free")

    monkeypatch.setattr(queue, "_wait_for_locked", no_wait)
    project, last = _project_with_one_open_task(k=2)
    got = queue.assignment_next(project=project, annotator=_member(project, "h18d-asker"))
    assert got is not None and got.task_id == last.pk
