"""Planner statistics for the tables a bulk import fills.

PostgreSQL plans from per-table statistics that autovacuum refreshes only some time after a
large change. Right after a bulk import the planner still believes ``annotate_task`` and its
neighbours are nearly empty and picks plans made for a few rows: the annotator queue's
"remaining" count took 300-500 ms per next-task request (issue 8) until autovacuum caught up. Analysing the touched tables as soon as the import commits avoids that
window.

An import job refreshes them right after it marks the job done (``statistics_refresh``), so the
client that waits for the job does not wait for the sampling too (0.1-0.4 s on PostgreSQL); the
same worker runs the refresh at once, before it takes another job. SQLite's checkpoint of the
import's write-ahead log (the whole import copied into the database file, ~0.1 s for 10,000
prompts) is held back to the same moment (``checkpoints_deferred``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

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


# PostgreSQL: the statistics target (``default_statistics_target``, 100 by default) of the
# refresh of the tables a bulk import fills (``_bulk_tables``): ANALYZE samples 300 rows per
# unit, so 10 samples 3,000 rows a table instead of 30,000. The server's CPU for the peer
# import's four tables (10,000 prompts, 40,000 candidates) 0.21-0.27 -> 0.03-0.05 s, and the
# worker runs it before its next job (issue 13: the next import waited for it). Row counts
# stay exact up to 3,000 pages a table; the 18 SELECTs of a next-task, submit, next-task
# sequence over HTTP keep the plans a full ANALYZE gives (EXPLAIN after two 10,000-task
# imports, h21b). Other tables (judgments) keep the server's target.
BULK_STATISTICS_TARGET = 10


def _bulk_tables() -> set[str]:
    from annotate.models import Candidate, Prompt, Task, TaskCandidate

    return {m._meta.db_table for m in (Prompt, Candidate, Task, TaskCandidate)}


def _analyze(tables: list[str]) -> None:
    if connection.vendor == "postgresql":
        bulk = _bulk_tables()
        quote = connection.ops.quote_name
        sampled = ", ".join(quote(t) for t in tables if t in bulk)
        full = ", ".join(quote(t) for t in tables if t not in bulk)
        with connection.cursor() as cursor:
            if sampled:
                # SET LOCAL lasts until the transaction ends: set back after the statement,
                # in case this block is a savepoint of a longer transaction.
                with transaction.atomic():
                    cursor.execute("SELECT current_setting('default_statistics_target')")
                    (target,) = cursor.fetchone()
                    cursor.execute(
                        f"SET LOCAL default_statistics_target = {BULK_STATISTICS_TARGET}"
                    )
                    cursor.execute(f"ANALYZE {sampled}")
                    cursor.execute(f"SET LOCAL default_statistics_target = {int(target)}")
            if full:
                cursor.execute(f"ANALYZE {full}")
    elif connection.vendor == "sqlite":
        # In a transaction that holds the write lock from its start (the settings' IMMEDIATE),
        # queued behind other writers as any write is: in autocommit, PRAGMA optimize reads
        # the tables and then writes sqlite_stat1, and SQLite fails that write at once
        # ("database is locked", no busy wait) when another write committed in between.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("PRAGMA optimize")
    logger.debug("analysed the import tables (%s)", connection.vendor)


@contextmanager
def checkpoints_deferred() -> Iterator[None]:
    """SQLite: this connection's commits in the block do not checkpoint the write-ahead log
    (``wal_autocheckpoint`` 0, restored after); ``statistics_refresh`` checkpoints it. Other
    connections checkpoint as ever, so the log still cannot grow without bound. Elsewhere a
    no-op."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        (pages,) = cursor.fetchone()
        cursor.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")


def statistics_refresh(tables: list[str]) -> None:
    """After an import job is marked done: refreshes the statistics of ``tables`` (the tables
    the import wrote; none when it wrote too little to matter) and, on SQLite, checkpoints the
    write-ahead log that ``checkpoints_deferred`` held back. Call outside a transaction. A
    failure is logged, never raised: the import is committed and reported done."""
    try:
        if tables:
            _analyze(tables)
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception:
        logger.warning("statistics refresh after an import failed", exc_info=True)
