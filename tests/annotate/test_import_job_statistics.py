"""The planner-statistics refresh after an import's commit cannot undo or repeat the import: an
import job whose refresh fails (SQLite's "database is locked") is done once, with its counts."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from annotate import services, table_stats
from annotate.models import ImportJob, Prompt, TaskCandidate
from tests.factories import write_pair_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_pair_rows(path, 4)
    return path


@pytest.fixture
def refresh_fails(monkeypatch):
    calls = []

    def analyze(tables):
        calls.append(tables)
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "ANALYZE_AFTER_ROWS", 1)
    monkeypatch.setattr(table_stats, "_analyze", analyze)
    return calls


def test_it_records_the_counts_of_an_import_whose_refresh_failed(rows, refresh_fails):
    job = services.import_job_create(path=rows, project_name="refreshed", run_async=False)

    assert refresh_fails  # the refresh ran, and failed
    assert job.status == ImportJob.Status.DONE
    assert (job.counts["prompts"], job.counts["candidates"], job.counts["tasks"]) == (4, 8, 4)
    assert (Prompt.objects.count(), TaskCandidate.objects.count()) == (4, 8)


def test_it_refreshes_sqlite_statistics_inside_a_write_transaction(rows):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        table_stats._analyze(["annotate_prompt"])

    # The write lock first, then the refresh inside that transaction.
    assert [sql for sql, _ in seen] == ["BEGIN IMMEDIATE", "PRAGMA optimize"]
    assert seen[1][1] is True
