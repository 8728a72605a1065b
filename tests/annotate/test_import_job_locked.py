"""An import that finds the (SQLite) database locked by another long write past the timeout
is run again, nothing of the failed run being written; after the last try it fails with words
a person can act on, and other database errors are not retried."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError

from annotate import services
from annotate.models import ImportJob, Judgment, Project

pytestmark = pytest.mark.django_db

VOTES = [{"model_a": f"m{i}", "model_b": "base", "winner": "model_a"} for i in range(6)]


@pytest.fixture
def votes(tmp_path):
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(VOTES))
    return path


def _failing(monkeypatch, message: str, failures: int) -> list[int]:
    real, calls = services.import_file, []

    def import_file(**kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise OperationalError(message)
        return real(**kwargs)

    monkeypatch.setattr(services, "import_file", import_file)
    return calls


def test_it_runs_a_locked_import_again(monkeypatch, votes):
    calls = _failing(
        monkeypatch, "database is locked", failures=services.IMPORT_LOCKED_ATTEMPTS - 1
    )
    job = services.import_job_create(path=votes, project_name="locked once")
    assert len(calls) == services.IMPORT_LOCKED_ATTEMPTS
    assert job.status == ImportJob.Status.DONE, job.errors
    assert Judgment.objects.filter(project__name="locked once").count() == 6


def test_it_says_what_to_do_when_the_database_stays_locked(monkeypatch, votes):
    calls = _failing(monkeypatch, "database is locked", failures=99)
    job = services.import_job_create(path=votes, project_name="always locked")
    assert len(calls) == services.IMPORT_LOCKED_ATTEMPTS
    assert job.status == ImportJob.Status.FAILED
    (error,) = job.errors
    assert "one writer at a time" in error and "nothing was imported" in error
    assert not Project.objects.filter(name="always locked").exists()


def test_it_does_not_retry_other_database_errors(monkeypatch, votes):
    calls = _failing(monkeypatch, "disk I/O error", failures=99)
    job = services.import_job_create(path=votes, project_name="broken disk")
    assert len(calls) == 1
    assert job.status == ImportJob.Status.FAILED
    assert job.errors == ["internal error (OperationalError); the server log has the details"]


@pytest.mark.django_db(transaction=True)
def test_it_outlasts_a_real_sqlite_writer_holding_the_lock(monkeypatch, votes):
    """The real thing on SQLite: another connection holds the write lock longer than this
    connection's timeout when the import begins; the first run fails "database is locked", the
    next one gets the lock once the other writer lets go."""
    import sqlite3
    import threading

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    job = ImportJob.objects.create(project_name="real lock", source_file=str(votes), total_rows=6)
    connection.ensure_connection()
    connection.lock_timeout_s = 0.5
    real, runs, holders = services.import_file, [], []

    def import_file(**kwargs):
        runs.append(1)
        if len(runs) == 1:  # a long write of someone else's starts just before ours
            other = sqlite3.connect(connection.settings_dict["NAME"], check_same_thread=False)
            other.isolation_level = None
            other.execute("BEGIN IMMEDIATE")
            holder = threading.Timer(0.7, lambda: (other.execute("ROLLBACK"), other.close()))
            holder.start()
            holders.append(holder)
        return real(**kwargs)

    monkeypatch.setattr(services, "import_file", import_file)
    try:
        job = services.import_job_run(job_id=job.pk)
    finally:
        for holder in holders:
            holder.join()
        connection.close()
    assert len(runs) >= 2  # the first run met the lock; a later one got it
    assert job.status == ImportJob.Status.DONE, job.errors
    assert Judgment.objects.filter(project__name="real lock").count() == 6
