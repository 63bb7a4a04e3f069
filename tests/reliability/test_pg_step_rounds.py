# SPDX-License-Identifier: GPL-3.0-or-later
"""What a chain's step costs the PostgreSQL server and the connection: statements kept prepared, and round trips.

docs/performance.md, "... (issue 25, hpg6, 2026-12-08)".
"""

from __future__ import annotations

from engine import State, Status
from tests.support.helpers import task_of
from tests.support.pgcluster import connect

_PREPARED = "SELECT statement FROM pg_prepared_statements"


def test_a_unit_of_work_that_wrote_nothing_keeps_the_connection_s_prepared_statements(pg_url: str) -> None:
    """A read (an empty ensure pass, a waiter looking at its change) ends its transaction without taking the
    statements psycopg prepared on the connection with it: psycopg deallocates them all at a ROLLBACK, and a chain's
    step then parsed and planned its statements from scratch for five runs (the status probe alone about 1 ms to
    plan), every few steps. What the read locked is let go all the same."""
    st = State.open(url=pg_url)
    try:
        with st:
            chg = st.new_change("c", "one task")
            t = st.new_task("k", "a task")
            chg.add_task(t)
            tid = t.id
        store = st._uow.store
        for _ in range(8):  # (psycopg prepares a statement at its sixth run)
            with st:
                assert task_of(st, tid).status is Status.DO  # (the task's row locked, nothing written)
        with st:
            before = {r[0] for r in store.run(_PREPARED)}
        assert any("FOR NO KEY UPDATE" in s for s in before), before
        with st:
            assert task_of(st, tid).status is Status.DO
        with st:
            after = {r[0] for r in store.run(_PREPARED)}
        assert before <= after, before - after
        with connect(pg_url) as other:  # (the read's row lock went with its transaction)
            assert other.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE NOWAIT", (int(tid),)).fetchall()
    finally:
        st.close()
