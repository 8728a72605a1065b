"""config/sqlite_backend: a transaction's BEGIN waits for SQLite's write lock in short steps,
up to the connection's timeout, and the queue stays exact with writers in parallel threads."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections import Counter

import pytest
from django.db import OperationalError, connection, transaction

from annotate import queue
from annotate.models import Judgment, Task
from tests.factories import add_member, make_project, make_user
from tests.threads import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")


def _hold_write_lock(released: threading.Event, seconds: float) -> threading.Thread:
    """Another connection takes the write lock now and keeps it ``seconds``."""
    other = sqlite3.connect(connection.settings_dict["NAME"], check_same_thread=False)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")

    def release() -> None:
        released.wait(seconds)
        other.execute("ROLLBACK")
        other.close()

    holder = threading.Thread(target=release)
    holder.start()
    return holder


def test_it_begins_once_another_writer_lets_go():
    connection.ensure_connection()
    released = threading.Event()
    holder = _hold_write_lock(released, 0.3)

    with transaction.atomic():
        Task.objects.exists()  # BEGIN IMMEDIATE got the lock (SQLite's handler is off)

    holder.join()
    assert connection.connection.execute("PRAGMA busy_timeout").fetchone() == (30000,)


def test_it_raises_database_is_locked_after_the_timeout():
    connection.ensure_connection()
    connection.lock_timeout_s = 0.05
    released = threading.Event()
    holder = _hold_write_lock(released, 5)
    try:
        with pytest.raises(OperationalError, match="locked"), transaction.atomic():
            Task.objects.exists()
    finally:
        released.set()
        holder.join()
        connection.close()


def test_it_gives_every_task_exactly_k_judgments_with_writers_in_threads(fast_passwords):
    tasks_n, k, annotators_n, cycles = 24, 2, 6, 10
    project = make_project(name="sqlite-threads", n_prompts=tasks_n, n_candidates=4, k=k)
    annotators = [make_user(f"sq{i}") for i in range(annotators_n)]
    for user in annotators:
        add_member(project, user)

    def work(user) -> None:
        for _ in range(cycles):
            assignment = queue.assignment_next(project=project, annotator=user)
            if assignment is None:
                break
            queue.judgment_submit(
                assignment=assignment,
                project=project,
                idempotency_key=str(uuid.uuid4()),
                ranking=[[c] for c in assignment.presented_order],
            )

    assert in_threads(work, annotators) == []
    per_task = Counter(Judgment.objects.values_list("task_id", flat=True))
    assert sorted(per_task[t.pk] for t in Task.objects.filter(project=project)) == [k] * tasks_n
    pairs = list(Judgment.objects.values_list("task_id", "annotator_id"))
    assert len(pairs) == len(set(pairs)) == tasks_n * k
