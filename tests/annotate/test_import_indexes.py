"""The import tables keep one index per look-up they serve, and no single-column index that a
wider one already leads with (migration 0007): every foreign key is still the first column of
some index (deleting a parent finds its children through it, on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection

from annotate.models import Candidate, Prompt, Task, TaskCandidate

IMPORT_MODELS = (Prompt, Candidate, Task, TaskCandidate)


def _indexes(table: str) -> list[list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [c["columns"] for c in constraints.values() if c["index"] or c["unique"]]


@pytest.mark.django_db
@pytest.mark.parametrize("model", IMPORT_MODELS, ids=lambda m: m.__name__)
def test_every_foreign_key_leads_an_index(model):
    indexes = _indexes(model._meta.db_table)
    for field in model._meta.concrete_fields:
        if field.is_relation:
            assert any(cols and cols[0] == field.column for cols in indexes), field.name


@pytest.mark.django_db
@pytest.mark.parametrize("model", IMPORT_MODELS, ids=lambda m: m.__name__)
def test_no_single_column_index_repeats_the_head_of_a_wider_one(model):
    indexes = _indexes(model._meta.db_table)
    pk = model._meta.pk.column
    wide_heads = {cols[0] for cols in indexes if len(cols) > 1}
    single = [cols[0] for cols in indexes if len(cols) == 1 and cols[0] != pk]
    assert not set(single) & wide_heads, single


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_keeps_no_statistics_of_the_long_texts():
    from tests.conftest import is_postgres

    if not is_postgres():
        pytest.skip("PostgreSQL only")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname IN ('annotate_prompt', 'annotate_candidate') AND a.attnum > 0 "
            "AND NOT a.attisdropped"
        )
        targets = {(table, column): target for table, column, target in cursor.fetchall()}
    for table in ("annotate_prompt", "annotate_candidate"):
        for column in ("text", "text_html", "metadata"):
            assert targets[(table, column)] == 0, (table, column)
        assert targets[(table, "external_id")] != 0  # the rest keep the default
