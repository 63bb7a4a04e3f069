# SPDX-License-Identifier: GPL-3.0-or-later
"""How a unit of work that wrote nothing ends its transaction on PostgreSQL: with a COMMIT, not a ROLLBACK.

psycopg prepares a statement once it ran prepare_threshold (5) times on a
connection, and deallocates every statement it prepared at a ROLLBACK (a
rollback may take back what the transaction made). A runner ends a read of
its own (an ensure pass that found nothing, a waiter looking at its
change) every few steps of a chain: each such rollback cost a round trip
more (DEALLOCATE ALL), and the step's statements were parsed and planned
from scratch for five runs before they were prepared again; the status
probe alone takes about 1 ms to plan on a busy machine. A transaction that
wrote nothing commits to the same effect as it rolls back: its row locks
go, and nothing else was there. It commits with synchronous_commit off: a
transaction that locked rows has an id, and its commit record would
otherwise wait for a flush of the WAL, where a rollback waits for none.
docs/performance.md, "A chain's step on PostgreSQL: prepared statements
kept, planned once".
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import DatabaseError
from .postgresql_link import PostgresLink

log = logging.getLogger("engine.store")

__all__ = ["PostgresReads"]


class PostgresReads(PostgresLink):
    """PostgresReads ends the transaction of a unit of work that wrote nothing with a COMMIT."""

    def check_read(self) -> None:
        """check_read ends the transaction of a unit of work that wrote nothing, keeping the connection's prepared
        statements; it forgets what the transaction read (rollback(), which then finds no transaction to roll
        back). Errors still roll back (convert)."""
        if self._in_write:
            return
        conn = self._conn
        if self._began and not self._lost() and conn.info.transaction_status in self._open_statuses():
            try:
                with self.guard("read"):
                    self._pipelined()
                    conn.execute("SET LOCAL synchronous_commit TO OFF")
                    conn.execute("COMMIT")
                    self._end_pipeline(raising=True)
            except DatabaseError as e:  # (rolled back by the guard: nothing was written anyway)
                log.debug("ending a read of %s: %s", self.target, e)
        self.rollback()

    def _open_statuses(self) -> tuple[Any, ...]:
        """_open_statuses are psycopg's statuses of a connection in a transaction that met no error (ACTIVE: in a
        pipeline)."""
        status = self._psycopg.pq.TransactionStatus
        return status.INTRANS, status.ACTIVE
