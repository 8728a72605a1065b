"""On SQLite (no row locks: IMMEDIATE transactions serialise writers) next-task never waits for
a task's lock: the end of the queue is answered by the locked picks alone, as before."""

from __future__ import annotations

import pytest
from django.db import connection

from annotate import queue
from tests.annotate.conftest import new_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_it_answers_nothing_left_without_waiting_for_locks_on_sqlite(
    ranking_project, users, monkeypatch
):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's path; PostgreSQL's is tests/annotate/test_h18d_locked_last_task.py")

    def no_wait(**kwargs):
        raise AssertionError("waited for a row lock SQLite does not take")

    monkeypatch.setattr(queue, "_wait_for_locked", no_wait)
    annotator = users["annotator"]
    served = []
    while (
        assignment := queue.assignment_next(project=ranking_project, annotator=annotator)
    ) is not None:
        served.append(assignment.task_id)
        queue.judgment_submit(
            assignment=assignment,
            project=ranking_project,
            idempotency_key=new_key(),
            ranking=[[c] for c in assignment.presented_order],
        )
    assert len(served) == len(set(served)) == 3
