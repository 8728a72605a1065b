"""On SQLite an import writes with a grown page cache (``bulk_insert.page_cache_grown``), and the
connection's cache size is restored after."""

from __future__ import annotations

import json

import pytest

from annotate import services
from annotate.services import import_file
from tests.conftest import is_postgres


def _row(i: int) -> dict:
    return {
        "id": f"p{i}",
        "prompt": f"prompt {i}",
        "candidates": [
            {"id": f"p{i}-c{c}", "model": f"m{c}", "text": f"a {i}.{c}"} for c in range(2)
        ],
    }


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.skipif(is_postgres(), reason="SQLite's page cache")
@pytest.mark.django_db
def test_an_import_writes_with_a_grown_page_cache_and_restores_it(tmp_path, monkeypatch):
    from django.db import connection

    from annotate import bulk_insert

    def cache_size() -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size")
            return cursor.fetchone()[0]

    seen = []
    insert = services.columns_insert

    def spied(*args, **kwargs):
        seen.append(cache_size())
        return insert(*args, **kwargs)

    monkeypatch.setattr(services, "columns_insert", spied)
    before = cache_size()
    assert before > -bulk_insert.IMPORT_PAGE_CACHE_KIB  # the default is smaller
    import_file(path=_write(tmp_path / "a.jsonl", [_row(i) for i in range(3)]), project_name="c")
    assert seen and set(seen) == {-bulk_insert.IMPORT_PAGE_CACHE_KIB}
    assert cache_size() == before
