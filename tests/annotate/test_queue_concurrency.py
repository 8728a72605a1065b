"""20 annotators x 50 next/submit cycles in parallel threads on PostgreSQL: every task ends with
exactly k judgments, none duplicated, none lost."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection

from annotate import queue
from annotate.models import Judgment, Task
from tests.factories import add_member, make_project, make_user
from tests.threads import in_threads

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

ANNOTATORS, CYCLES, TASKS, K = 20, 50, 200, 3


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip(
            "row locks (SELECT ... FOR UPDATE SKIP LOCKED) are PostgreSQL's; SQLite serialises "
            "writers instead. Run with DATABASE_URL=postgres://... to test them."
        )


def test_it_gives_every_task_exactly_k_judgments_under_concurrency():
    # 600 places for up to 1,000 cycles: the pool runs dry, so the cap is what stops work.
    project = make_project(name="concurrency", n_prompts=TASKS, n_candidates=4, k=K)
    annotators = [make_user(f"conc{i}") for i in range(ANNOTATORS)]
    for user in annotators:
        add_member(project, user)
    replays = Counter()

    def work(user) -> None:
        for cycle in range(CYCLES):
            # None is final: next-task waits for tasks other requests hold locked
            # (their leases in progress) before it answers that nothing is left.
            assignment = queue.assignment_next(project=project, annotator=user)
            if assignment is None:
                break
            key = str(uuid.uuid4())
            ranking = [[c] for c in assignment.presented_order]
            first = queue.judgment_submit(
                assignment=assignment, project=project, idempotency_key=key, ranking=ranking
            )
            assert first.created
            if cycle % 4 == 0:  # a retried request: same key, same judgment
                again = queue.judgment_submit(
                    assignment=assignment, project=project, idempotency_key=key, ranking=ranking
                )
                assert (again.created, again.judgment.pk) == (False, first.judgment.pk)
                replays[user.pk] += 1

    assert in_threads(work, annotators) == []

    per_task = Counter(Judgment.objects.values_list("task_id", flat=True))
    tasks = list(Task.objects.filter(project=project))
    assert len(tasks) == TASKS
    assert all(per_task[t.pk] == K for t in tasks), sorted(per_task.values())
    assert all((t.judgment_count, t.status) == (K, Task.Status.COMPLETE) for t in tasks)
    pairs = list(Judgment.objects.values_list("task_id", "annotator_id"))
    assert len(pairs) == len(set(pairs)) == TASKS * K
    per_annotator = Counter(a for _t, a in pairs)
    assert max(per_annotator.values()) <= CYCLES
    assert sum(replays.values()) > 0


def test_a_submit_waiting_on_the_task_reads_the_assignment_as_the_writer_left_it():
    """The submit's one locked read waits for the task's lock without holding the assignment's
    (the writer ahead of it changes the assignment: no deadlock), then sees the change (the
    assignment skipped: nothing stored) rather than the row as it was when it started."""
    from django.db import transaction

    from annotate.models import Assignment

    project = make_project(name="lock-order", n_prompts=1, n_candidates=4, k=1)
    user = make_user("lockorder")
    add_member(project, user)
    assignment = queue.assignment_next(project=project, annotator=user)
    locked, release, done = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def writer() -> None:  # as assignment_skip writes: the task's lock, then the assignment
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '5s'")
                list(Task.objects.select_for_update().filter(pk=assignment.task_id))
                locked.set()
                release.wait(10)
                Assignment.objects.filter(pk=assignment.pk).update(
                    status=Assignment.Status.SKIPPED, skip_reason="gone"
                )
            outcome["writer"] = "committed"
        except BaseException as exc:
            outcome["writer"] = exc
        finally:
            connection.close()

    def submitter() -> None:
        try:
            queue.judgment_submit(
                assignment=assignment,
                project=project,
                idempotency_key=str(uuid.uuid4()),
                ranking=[[c] for c in assignment.presented_order],
            )
            outcome["submit"] = "stored"
        except BaseException as exc:
            outcome["submit"] = exc
        finally:
            done.set()
            connection.close()

    first = threading.Thread(target=writer)
    first.start()
    assert locked.wait(10)
    second = threading.Thread(target=submitter)
    second.start()
    assert not done.wait(0.5)  # queued on the task's lock
    release.set()
    first.join(30)
    second.join(30)

    assert outcome["writer"] == "committed", outcome
    assert isinstance(outcome["submit"], queue.AssignmentClosed), outcome
    assert not Judgment.objects.exists()
