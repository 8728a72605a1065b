"""Django's PostgreSQL backend, health-checking a reused connection without a round trip.

With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first statement of every
request that reuses a persistent connection: one more round trip to the server on every
next task and every submit (a submit is otherwise 11). The failure it guards against is a
connection the server has ended (a restart, ``pg_terminate_backend``, an idle timeout): the
server then writes its termination notice and closes the socket, or the kernel closes it,
and either way the idle connection's socket becomes readable. An idle connection in
autocommit whose socket has nothing to read has had nothing happen to it, and is used as
is; one with something to read (or not idle) gets Django's ``SELECT 1`` check as before.
A peer that vanished without a word (a host gone from the network) is not detected here:
``SELECT 1`` would wait on it the same TCP timeout as the request's first statement.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self._quiet_and_idle()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def _quiet_and_idle(self) -> bool:
        """Idle outside a transaction, and the server has sent nothing since (no round trip)."""
        conn = self.connection
        if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable
