"""Django's SQLite backend, waiting for the write lock in short steps.

The settings open every transaction with ``BEGIN IMMEDIATE`` (writers queue at the start
instead of failing mid-way). A writer that finds the lock taken waits in SQLite's busy
handler, whose sleeps grow to 25, 50 and then 100 ms between tries: with eight annotators
submitting at once, most of the 95th-percentile submit time was spent asleep after the lock
was already free. Here the ``BEGIN`` is tried with the busy handler off and retried after
sleeps of 0.5 ms growing to 4 ms, up to the connection's ``timeout`` as before; then the
error is SQLite's own "database is locked". Statements outside a transaction keep SQLite's
busy handler.
"""

from __future__ import annotations

import time

from django.db import OperationalError
from django.db.backends.sqlite3 import base

FIRST_WAIT_S = 0.0005
LONGEST_WAIT_S = 0.004


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        self.lock_timeout_s = float(conn_params.get("timeout", 5.0))
        return super().get_new_connection(conn_params)

    def _start_transaction_under_autocommit(self):
        busy_ms = int(self.lock_timeout_s * 1000)
        deadline = time.monotonic() + self.lock_timeout_s
        wait = FIRST_WAIT_S
        self.connection.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    return super()._start_transaction_under_autocommit()
                except OperationalError as exc:
                    locked = "locked" in str(exc) or "busy" in str(exc)
                    if not locked or time.monotonic() + wait > deadline:
                        raise
                time.sleep(wait)
                wait = min(wait * 1.5, LONGEST_WAIT_S)
        finally:
            self.connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
