"""Planner statistics are refreshed after bulk imports, once the import has committed."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from annotate.table_stats import tables_analyze
from tests.conftest import is_postgres
from tests.factories import make_project, write_pair_rows


def _last_analyze() -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname IN "
            "('annotate_prompt', 'annotate_candidate', 'annotate_task', "
            "'annotate_taskcandidate', 'annotate_judgment', 'annotate_assignment')"
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_it_waits_for_the_commit_inside_a_transaction(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        tables_analyze()

    assert len(callbacks) == 1


@pytest.mark.django_db(transaction=True)
def test_it_runs_at_once_outside_a_transaction():
    make_project(n_prompts=2)

    tables_analyze()  # raises on a bad statement for this backend


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_analyses_the_import_tables_on_postgresql():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    make_project(n_prompts=2)
    before = _last_analyze()

    with transaction.atomic():
        tables_analyze()
        assert _last_analyze() == before  # not inside the import's transaction

    after = _last_analyze()
    assert len(after) == 6
    for table, when in after.items():
        assert when is not None and when != before.get(table), table


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_analyses_only_the_tables_it_is_given():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    make_project(n_prompts=2)
    before = _last_analyze()

    tables_analyze(["annotate_task"])

    after = _last_analyze()
    assert after["annotate_task"] not in (None, before.get("annotate_task"))
    assert {t: w for t, w in after.items() if t != "annotate_task"} == {
        t: w for t, w in before.items() if t != "annotate_task"
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_analyses_the_tables_it_wrote(tmp_path, monkeypatch):
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    import annotate.services as services

    monkeypatch.setattr(services, "ANALYZE_AFTER_ROWS", 1)
    path = tmp_path / "rows.jsonl"
    write_pair_rows(path, 3)
    before = _last_analyze()

    services.import_file(path=path, project_name="analysed")

    after = _last_analyze()
    changed = {t for t in after if after[t] is not None and after[t] != before.get(t)}
    assert changed == {
        "annotate_prompt",
        "annotate_candidate",
        "annotate_task",
        "annotate_taskcandidate",
    }


def test_written_tables_follow_the_counts():
    from annotate.services import _written_tables

    assert _written_tables({"prompts": 0, "candidates": 0, "tasks": 0, "judgments": 0}) == []
    assert _written_tables({"prompts": 0, "candidates": 0, "tasks": 0, "judgments": 2}) == [
        "annotate_task",
        "annotate_judgment",
    ]
    assert set(_written_tables({"prompts": 1, "candidates": 2, "tasks": 1, "judgments": 0})) == {
        "annotate_prompt",
        "annotate_candidate",
        "annotate_task",
        "annotate_taskcandidate",
    }
