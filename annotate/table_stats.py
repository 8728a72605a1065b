"""Planner statistics for the tables a bulk import fills.

PostgreSQL plans from per-table statistics that autovacuum refreshes only some time after a
large change. Right after a bulk import the planner still believes ``annotate_task`` and its
neighbours are nearly empty and picks plans made for a few rows: the annotator queue's
"remaining" count took 300-500 ms per next-task request (issue 8) until autovacuum caught up. Analysing the touched tables as soon as the import commits avoids that
window.
"""

from __future__ import annotations

import logging

from django.db import connection, transaction

logger = logging.getLogger("quorum.import")


def _import_tables() -> list[str]:
    from annotate.models import Assignment, Candidate, Judgment, Prompt, Task, TaskCandidate

    return [
        m._meta.db_table for m in (Prompt, Candidate, Task, TaskCandidate, Judgment, Assignment)
    ]


def tables_analyze(tables: list[str] | None = None) -> None:
    """Refreshes planner statistics of the import tables once the current transaction commits.

    ``tables``: the tables to analyse (names); default, all six an import or the queue fills.
    An import names those it wrote: analysing an unchanged table spends its sampling for
    nothing (hundreds of milliseconds for a table of long texts).

    Called inside a transaction it waits for the commit (the import's transaction should not
    grow, and a rollback would waste the work); outside, it runs at once. PostgreSQL: ``ANALYZE`` of the tables (samples a bounded
    number of rows per table, a fraction of a second). SQLite: ``PRAGMA optimize``, which
    analyses only the tables whose statistics are missing or stale.
    """
    chosen = list(tables) if tables is not None else _import_tables()
    if not chosen:
        return
    if connection.in_atomic_block:
        # Robust: by then the import has committed, and a refresh that fails must not make its
        # caller take the import for failed (an import job re-ran it on "database is locked").
        transaction.on_commit(lambda: _analyze(chosen), robust=True)
    else:
        _analyze(chosen)


def _analyze(tables: list[str]) -> None:
    if connection.vendor == "postgresql":
        names = ", ".join(connection.ops.quote_name(t) for t in tables)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {names}")
    elif connection.vendor == "sqlite":
        # In a transaction that holds the write lock from its start (the settings' IMMEDIATE),
        # queued behind other writers as any write is: in autocommit, PRAGMA optimize reads
        # the tables and then writes sqlite_stat1, and SQLite fails that write at once
        # ("database is locked", no busy wait) when another write committed in between.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("PRAGMA optimize")
    logger.debug("analysed the import tables (%s)", connection.vendor)
