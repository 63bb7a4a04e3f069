# SPDX-License-Identifier: GPL-3.0-or-later
"""What a chain's step asks the PostgreSQL server: the change row's share lock comes with the claim of the next step.

A step's unit of work records task n's outcome and claims task n+1 (the
hand-on); its commit keeps the change's status (Doing), so the change's row
is only share-locked (engine.shared). That lock, and the check keep_changes
makes under it, travel with the claim's round trip (CLAIMED_SHARED): the
commit sends nothing but the writes and the COMMIT. docs/performance.md,
"## PostgreSQL".
"""

from __future__ import annotations

from typing import Any

from engine import Overlord, State, Status, Task
from engine.store.postgresql_sql import CHANGES_LOCKED, CHANGES_SHARED, CLAIM_DO, RECOUNT_HALTED
from engine.tomb import Tomb
from tests.support.helpers import chain_change
from tests.support.pgcluster import connect

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion


def _record_round_trips(store: Any) -> list[str]:
    """_record_round_trips notes the first statement of every read ahead (a round trip) the store makes."""
    seen: list[str] = []
    read_ahead = store._read_ahead

    def spy(first: tuple[str, Any], more: dict[str, Any], doing: str = "read") -> Any:
        seen.append(first[0])
        return read_ahead(first, more, doing)

    store._read_ahead = spy
    return seen


def test_a_chain_step_share_locks_its_change_with_the_claim(overlord: Overlord) -> None:
    """No step's commit makes a round trip of its own for the change's row: the claim brought its share lock."""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)
    chg = chain_change(o.state, 10)
    seen = _record_round_trips(o.state._uow.store)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE and all(t.status is Status.DONE for t in chg.tasks())
    assert seen.count(CLAIM_DO) >= 10  # (a claim per step, by a pass or a hand-on)
    assert CHANGES_SHARED not in seen, seen
    # Settled under the exclusive lock only where the status moved: Do -> Doing at the first claim, then Done.
    assert seen.count(CHANGES_LOCKED) <= 3, seen


def test_a_step_whose_outcome_moves_the_status_still_settles_the_change(overlord: Overlord) -> None:
    """A step that fails after the claim share-locked the change (the next step claimed by another pass) still
    settles it: the change goes to Error, its status and ready time exact."""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    o.task_runner.add_handler("fail", fail)
    with o.state:
        chg = o.state.new_change("c", "a chain, then a failure beside a step")
        first = o.state.new_task("step", "first")
        chg.add_task(first)
        for i in range(3):
            t = o.state.new_task("step", f"after {i}")
            t.wait_for(first)
            chg.add_task(t)
        bad = o.state.new_task("fail", "fails")
        bad.wait_for(first)
        chg.add_task(bad)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.ERROR
        assert bad.status is Status.ERROR
        assert chg.ready_time is not None


def test_the_blockers_recount_finds_its_tasks_by_index(pg_url: str) -> None:
    """The recount at every outcome (the finished tasks' waiters, found by the statement) reaches its rows through
    indexes: written `id = ANY (%s) OR id IN (SELECT ...)`, it scanned every task of the table at each outcome
    (W1 with 2 hosts spent half its server time there, more as dead rows piled up)."""
    st = State.open(url=pg_url)
    try:
        with st:
            chg = st.new_change("c", "a step and its waiter")
            a, b = st.new_task("k", "a"), st.new_task("k", "b")
            b.wait_for(a)
            chg.add_task(a)
            chg.add_task(b)
            tid = int(a.id)
    finally:
        st.close()
    with connect(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")  # (a table this small is cheaper to scan: ask for what indexes do)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + RECOUNT_HALTED, ([tid], [tid])))
    assert "Seq Scan on tasks" not in plan, plan


def test_a_bulk_submit_has_the_server_analyze_the_tasks(pg_url: str) -> None:
    """A commit that inserted a thousand tasks or more has the tables analyzed at once: the planner then knows
    their size (until autovacuum's turn, it went through every Do task to find the ones a runner leases)."""
    st = State.open(url=pg_url)
    try:
        with connect(pg_url) as conn:
            def analyzed() -> object:
                row = conn.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'tasks'").fetchone()
                return row[0] if row else None

            before = analyzed()  # (a database reused from an earlier test may have been analyzed already)
            with st:
                chg = st.new_change("c", "a few")
                chg.add_task(st.new_task("k", "one"))
            assert analyzed() == before
            with st:
                chg = st.new_change("c", "a thousand")
                for i in range(1000):
                    chg.add_task(st.new_task("k", f"task {i}"))
            assert analyzed() not in (None, before)
    finally:
        st.close()
