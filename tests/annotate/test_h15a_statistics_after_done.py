"""An import job refreshes the planner statistics of the tables it wrote (and, on SQLite,
checkpoints the write-ahead log) right after it marks the job done, not before: the client
waiting for the job does not wait for them, and they are fresh when ``import_job_run`` returns."""

from __future__ import annotations

import pytest
from django.db import connection

from annotate import services
from annotate.models import ImportJob
from tests.conftest import is_postgres
from tests.factories import write_pair_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rows(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "ANALYZE_AFTER_ROWS", 1)
    path = tmp_path / "rows.jsonl"
    write_pair_rows(path, 3)
    return path


def _statements(path) -> tuple[ImportJob, list[tuple[str, object]]]:
    """Runs an import job of ``path``; returns it and the statements it ran, in order."""
    seen: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        job = services.import_job_create(path=path, project_name="fresh", run_async=False)
    return job, seen


def _done_at(seen) -> int:
    return next(
        i
        for i, (sql, params) in enumerate(seen)
        if sql.startswith('UPDATE "annotate_importjob"') and ImportJob.Status.DONE in (params or ())
    )


def _last_analyze() -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname IN "
            "('annotate_prompt', 'annotate_candidate', 'annotate_task', 'annotate_taskcandidate')"
        )
        return dict(cursor.fetchall())


def test_it_analyses_the_written_tables_once_the_job_is_done_on_postgresql(rows):
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    before = _last_analyze()

    job, seen = _statements(rows)

    assert job.status == ImportJob.Status.DONE
    analyses = [i for i, (sql, _) in enumerate(seen) if sql.startswith("ANALYZE")]
    assert len(analyses) == 1
    assert analyses[0] > _done_at(seen)
    assert seen[analyses[0]][0] == (
        'ANALYZE "annotate_prompt", "annotate_candidate", "annotate_task", "annotate_taskcandidate"'
    )
    after = _last_analyze()
    assert len(after) == 4
    for table, when in after.items():  # fresh when import_job_run returned
        assert when is not None and when != before.get(table), table


def test_it_refreshes_and_checkpoints_sqlite_once_the_job_is_done(rows):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")

    job, seen = _statements(rows)

    assert job.status == ImportJob.Status.DONE
    sqls = [sql for sql, _ in seen]
    done = _done_at(seen)
    assert sqls.count("PRAGMA optimize") == 1
    # The import's own commits (and the job row's) checkpoint nothing...
    deferred = sqls.index("PRAGMA wal_autocheckpoint = 0")
    assert deferred < done and "BEGIN IMMEDIATE" in sqls[deferred:done]  # the import's
    # ...then, after "done", the setting is back, the statistics refreshed, the log checkpointed.
    assert sqls[done + 1 : done + 5] == [
        "PRAGMA wal_autocheckpoint = 1000",
        "BEGIN IMMEDIATE",
        "PRAGMA optimize",
        "PRAGMA wal_checkpoint(PASSIVE)",
    ]
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone() == (1000,)


def test_it_checkpoints_after_a_failed_import_too(tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p1", "prompt": "x", "candidates": []}\n')

    job, seen = _statements(bad)

    assert job.status == ImportJob.Status.FAILED
    sqls = [sql for sql, _ in seen]
    assert "PRAGMA optimize" not in sqls
    failed = next(
        i for i, (_, params) in enumerate(seen) if ImportJob.Status.FAILED in (params or ())
    )
    assert sqls[failed + 1 : failed + 3] == [
        "PRAGMA wal_autocheckpoint = 1000",
        "PRAGMA wal_checkpoint(PASSIVE)",
    ]


def test_an_import_outside_a_job_analyses_on_its_commit(rows):
    seen: list[str] = []

    def record(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        result = services.import_file(path=rows, project_name="cli")

    assert result.stale_tables == []  # refreshed already
    refresh = "PRAGMA optimize" if connection.vendor == "sqlite" else "ANALYZE"
    assert sum(sql.startswith(refresh) for sql in seen) == 1
