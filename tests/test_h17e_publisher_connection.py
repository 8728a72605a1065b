"""The publisher thread's database connection: a web server's keeps it between publishes a
moment apart and closes it once idle; every other process's closes it as soon as the work is
done (nothing holds a test database open from there).

Before, every publish that found the thread idle connected again (PostgreSQL, same run, jobs
50 ms apart on a loaded host: 30 -> 14 ms from put to done, 5.1 -> 3.8 ms of CPU, medians)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db.backends.signals import connection_created

from workers import jobs
from workers.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    log: list[int] = []
    monkeypatch.setattr(
        jobs, "_send", lambda name, kwargs, queue_name, task_id=None: log.append(kwargs["job_id"])
    )
    return log


@pytest.fixture
def opened():
    """The database connections the publisher thread opens."""
    wrappers: list = []

    def created(sender, connection, **kwargs):
        if threading.current_thread().name == "quorum-job-publisher":
            wrappers.append(connection)

    connection_created.connect(created, weak=False, dispatch_uid="h17e-opened")
    yield wrappers
    connection_created.disconnect(dispatch_uid="h17e-opened")


def _publish_apart(publisher, ids: list[int]) -> None:
    for job_id in ids:
        publisher.put(("jobs", [job_id]))
        assert publisher.flush(5.0)
        time.sleep(0.05)


def _closed(wrapper, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if wrapper.connection is None:
            return True
        time.sleep(0.02)
    return wrapper.connection is None


def _jobs(n: int) -> list[int]:
    return [Job.objects.create(name="quorum.noop", kwargs={}).pk for _ in range(n)]


def test_a_server_publisher_keeps_its_connection_between_publishes_then_closes_it(sent, opened):
    ids = _jobs(3)
    publisher = jobs._Publisher(keep_connection=0.5)
    _publish_apart(publisher, ids)
    assert sent == ids
    assert set(Job.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"published"}
    assert len(opened) == 1  # one connection for the three publishes
    assert opened[0].connection is not None  # still held a moment after the last one
    assert _closed(opened[0], within=5.0)  # and closed once the thread had nothing to do


def test_any_other_publisher_closes_its_connection_when_the_work_is_done(sent, opened):
    ids = _jobs(3)
    publisher = jobs._Publisher()
    _publish_apart(publisher, ids)
    assert sent == ids
    assert len(opened) == 3  # each publish connected again
    assert all(wrapper.connection is None for wrapper in opened)


def test_only_the_prepared_web_process_keeps_it(monkeypatch):
    monkeypatch.setattr(jobs, "_publisher_state", {})
    assert jobs._publisher().keep_connection == 0
    monkeypatch.setattr(jobs, "_publisher_state", {})
    jobs.publisher_prepare()
    assert jobs._publisher().keep_connection == jobs.SERVER_KEEP_CONNECTION_SECONDS > 0
