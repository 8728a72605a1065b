"""PostgreSQL: the statistics refresh after a bulk import samples the tables an import fills
(prompts, candidates, tasks, slots) at ``BULK_STATISTICS_TARGET`` (3,000 rows a table, not
30,000: the worker's next job waited for the sampling, issue 13); other tables keep the
server's target, also when the refresh runs inside a longer transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from annotate import services, table_stats
from annotate.models import ImportJob
from tests.conftest import is_postgres
from tests.factories import make_project, write_pair_rows

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if not is_postgres():
        pytest.skip("PostgreSQL only")


def _bounds(table: str) -> int:
    """How many histogram bounds the statistics of ``table``'s ``id`` hold (a unique column:
    one per row up to the target + 1)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats "
            "WHERE tablename = %s AND attname = 'id'",
            [table],
        )
        row = cursor.fetchone()
    assert row is not None, f"{table} not analysed"
    return row[0]


def test_an_import_job_samples_the_tables_it_wrote_at_the_bulk_target(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "ANALYZE_AFTER_ROWS", 1)
    path = write_pair_rows(tmp_path / "rows.jsonl", 60)

    job = services.import_job_create(path=path, project_name="fresh", run_async=False)

    assert job.status == ImportJob.Status.DONE
    sampled = table_stats.BULK_STATISTICS_TARGET + 1
    for table in ("annotate_prompt", "annotate_candidate", "annotate_task"):
        assert _bounds(table) == sampled, table
    with connection.cursor() as cursor:  # the server's own target: one bound a task
        cursor.execute("ANALYZE annotate_task")
    assert _bounds("annotate_task") == 60


def test_other_tables_keep_the_servers_target_inside_a_transaction():
    for _ in range(40):
        make_project(n_prompts=1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('default_statistics_target')")
        (before,) = cursor.fetchone()

    with transaction.atomic():  # the refresh's own block is then a savepoint
        table_stats._analyze(["annotate_task", "annotate_project"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('default_statistics_target')")
            assert cursor.fetchone()[0] == before

    assert _bounds("annotate_task") == table_stats.BULK_STATISTICS_TARGET + 1
    assert _bounds("annotate_project") == 40
