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

import pytest

from engine import Overlord, State, Status, Task
from engine.store.postgresql_generic import RECOUNT_HALTED_BY_ONE
from engine.store.postgresql_sql import (
    CAP,
    CATALOG,
    CHANGES_LOCKED,
    CHANGES_SHARED,
    CLAIM_DO,
    PROBE,
    PROBE_CLAIMED,
    RECOUNT_HALTED,
    SMALL,
)
from engine.tomb import Tomb
from tests.support.helpers import chain_change, task_of
from tests.support.pgcluster import connect

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion


def _record_round_trips(store: Any, sent: list[str] | None = None, asked: list[str] | None = None) -> list[str]:
    """_record_round_trips notes the first statement of every read ahead (a round trip) the store makes, every
    statement read (sent: also those read ahead) and those read on their own (asked)."""
    seen: list[str] = []
    read_ahead, run = store._read_ahead, store.run

    def spy(first: tuple[str, Any], more: dict[str, Any], doing: str = "read") -> Any:
        seen.append(first[0])
        if sent is not None:
            sent.extend([first[0], *(sql for sql, _args in more.values())])
        return read_ahead(first, more, doing)

    def spy_run(sql: str, args: Any = (), doing: str = "read") -> Any:
        for into in (sent, asked):
            if into is not None:
                into.append(sql)
        return run(sql, args, doing)

    store._read_ahead = spy
    store.run = spy_run
    return seen


def _counts_all(sql: str) -> bool:
    """_counts_all says whether a statement counts every task of a change by status."""
    return "count(" in sql and "GROUP BY" in sql and "tasks.status" in sql.replace("t.status", "tasks.status") \
        and sql != PROBE and PROBE_CLAIMED not in sql and "LIMIT" not in sql  # (PROBE_CLAIMED: counted apart)


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
        one = "\n".join(r[0] for r in conn.execute("EXPLAIN " + RECOUNT_HALTED_BY_ONE, (f"{{{tid}}}", tid)))
    assert "Seq Scan on tasks" not in plan, plan
    assert "Seq Scan" not in one, one  # (a chain's step: the one task's waiters by index too)


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


def test_a_chain_step_does_not_count_the_change_s_tasks(overlord: Overlord) -> None:
    """No step of a chain counts all the change's tasks by status (it grew with the change: about 0.35 ms a step on
    a chain of 1,000, 3 to 18 ms a unit of work in W1): what the change's status needs of the tasks the step does
    not hold (an unready one of each status, counted up to a few) comes with the lock of the task, and a step asks
    nothing more for it."""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)
    chg = chain_change(o.state, 12)
    sent: list[str] = []
    asked: list[str] = []
    store = o.state._uow.store
    store.small = 0  # (every change looked up, as a chain of 1,000: a change of 12 is counted whole)
    _record_round_trips(store, sent, asked)
    claimed_counted: list[int] = []  # the changes a claim counted whole (PROBE_CLAIMED: those not probed yet)
    runnable_do, note_probe = store.runnable_do, store._note_probe

    def spy_claim(after: int, limit: int) -> Any:
        def spy_note(rows: Any, cids: set[int], ex: Any, cap: int) -> None:
            claimed_counted.extend(cids)
            note_probe(rows, cids, ex, cap)

        store._note_probe = spy_note
        try:
            return runnable_do(after, limit)
        finally:
            store._note_probe = note_probe

    store.runnable_do = spy_claim
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE and chg.ready_time is not None
    # (Once the change is ready, the units of its cleanup count its tasks, all ready: the plain count's small plan.
    # Not 12 steps' worth.)
    assert len([sql for sql in sent if _counts_all(sql)]) <= 2, [sql for sql in sent if _counts_all(sql)]
    # Asked on their own, not read ahead: at most at the first step, the last one, and the cleanups' pass.
    assert asked.count(PROBE) <= 3, asked.count(PROBE)
    # A claim counts its change whole only where the transaction did not probe it already: the first step's pass.
    assert len(claimed_counted) <= 2, claimed_counted


@pytest.mark.parametrize("small", [0, SMALL], ids=["looked-up", "counted-whole"])
def test_a_unit_of_work_sees_its_change_s_status_exactly_as_it_moves_its_tasks(pg_url: str, small: int) -> None:
    """A unit of work that reads a change's tasks one at a time and moves them sees the change's status, its
    readiness and its status hooks exactly as the rules say at every move (the tasks it does not hold are counted
    up to a few of each unready status, and asked again when that no longer says; or, a small change, counted
    whole)."""
    n = CAP + 6
    st = State.open(url=pg_url)
    st._uow.store.small = small  # (0: every change looked up, as a big one)
    try:
        with st:
            chg = st.new_change("c", "many pending tasks")
            ids = []
            for i in range(n):
                t = st.new_task("k", f"task {i}")
                chg.add_task(t)
                ids.append(t.id)
        seen: list[tuple[Status, Status]] = []
        with st:
            st.add_change_status_changed_handler(lambda c, old, new: seen.append((old, new)))
            assert chg.status is Status.DO
            for i, tid in enumerate(ids):
                t = task_of(st, tid)
                t.set_status(Status.DOING)
                assert chg.status is Status.DOING
                t.set_status(Status.DONE if i % 2 else Status.ERROR)
                last = i == n - 1
                assert chg.status is (Status.ERROR if last else Status.DO), (i, chg.status)
                assert chg.is_ready() is last
        with st:
            assert chg.status is Status.ERROR and chg.ready_time is not None
        assert seen == [(Status.DO, Status.DOING), (Status.DOING, Status.DO)] * (n - 1) + [
            (Status.DO, Status.DOING), (Status.DOING, Status.ERROR)]
    finally:
        st.close()


def test_a_chain_that_adds_its_next_step_as_it_runs_asks_nothing_more_for_its_status(overlord: Overlord) -> None:
    """The peers' chain: each step adds the next one to its change, waiting for itself. The outcome's unit of work
    claims that step, the last unready task besides those it holds: what the change's status needs came with the
    lock of the outcome's task (the whole counts, where no unready status is many), and no step asks again. Nor
    does a step read every task id of its change to add one."""
    o = overlord
    n = 16

    def step(task: Task, tomb: Tomb) -> None:
        with task.state:
            i = task.get("i")
            if i + 1 < n:
                nxt = task.state.new_task("step", f"step {i + 2}")
                nxt.set("i", i + 1)
                nxt.wait_for(task)
                task.change().add_task(nxt)

    o.task_runner.add_handler("step", step)
    with o.state:
        chg = o.state.new_change("c", "a chain that grows as it runs")
        first = o.state.new_task("step", "step 1")
        first.set("i", 0)
        chg.add_task(first)
    asked: list[str] = []
    _record_round_trips(o.state._uow.store, asked=asked)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE and len(chg.tasks()) == n
    # (A pass that claims a step, rather than its predecessor's outcome, may ask: never most steps.)
    assert asked.count(PROBE) <= n // 4, asked.count(PROBE)
    assert asked.count(CATALOG["task_ids_of_change"].sql) <= n // 4, asked.count(CATALOG["task_ids_of_change"].sql)


def _tasks_read(plan: dict[str, Any]) -> int:
    """_tasks_read is how many rows of tasks the nodes of an EXPLAIN ANALYZE plan read (kept or filtered out)."""
    here = 0
    if plan.get("Relation Name") == "tasks":
        here = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * plan.get("Actual Loops", 1)
    return int(here) + sum(_tasks_read(p) for p in plan.get("Plans", ()))


def test_the_status_probe_reads_only_its_own_change_s_unready_tasks(pg_url: str) -> None:
    """What a change's status needs of the tasks a unit of work does not hold is looked up among that change's own
    unready tasks (ix_tasks_change_unready): neither the unready tasks of the other changes in flight (through the
    index on (status, id), the snap-install shape with 1,000 changes ran 5 times slower) nor the change's done ones
    (through ix_tasks_change_id, which the planner took for a change's Do tasks)."""
    st = State.open(url=pg_url)
    st.close()
    with connect(pg_url) as conn:
        # 300 changes in flight of 12 tasks (4 Do, 2 Doing, 6 Done), and one of 3,000 (2,000 Done, then 1,000 Do).
        conn.execute("INSERT INTO changes (id, kind, summary, status, spawn_time) "
                     "SELECT g, 'k', 's', 'Doing', 'x' FROM generate_series(1, 301) g")
        conn.execute("INSERT INTO tasks (id, change_id, kind, summary, status, spawn_time) SELECT g, (g - 1) / 12 + 1, "
                     "'k', 's', CASE WHEN (g - 1) % 12 < 4 THEN 'Do' WHEN (g - 1) % 12 < 6 THEN 'Doing' ELSE 'Done' "
                     "END, 'x' FROM generate_series(1, 3600) g")
        conn.execute("INSERT INTO tasks (id, change_id, kind, summary, status, spawn_time) SELECT 10000 + g, 301, "
                     "'k', 's', CASE WHEN g <= 2000 THEN 'Done' ELSE 'Do' END, 'x' FROM generate_series(1, 3000) g")
        conn.commit()
        conn.execute("ANALYZE tasks")

        def read(cid: int, held: int, small: int = 0) -> tuple[int, list[tuple[Any, ...]]]:
            args = {"cids": [cid], "ex": [held], "cap": CAP, "small": small, "big": []}
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + PROBE, args).fetchone()[0][0]["Plan"]
            return _tasks_read(plan), sorted(conn.execute(PROBE, args).fetchall())

        n, rows = read(150, 150 * 12 - 11)  # (holding one of its Do tasks)
        assert rows == [("c", 150, "", 0, 1), ("f", 150, "Do", 3, 3), ("f", 150, "Doing", 2, 2),
                        ("f", 150, "Done", 6, 6), ("u", 150, "Do", 3, 0), ("u", 150, "Doing", 2, 0)]
        assert n <= 3 * 12, n
        n, rows = read(150, 150 * 12 - 11, SMALL)  # (a change of fewer than SMALL tasks: counted whole)
        assert rows == [("f", 150, "Do", 3, 3), ("f", 150, "Doing", 2, 2), ("f", 150, "Done", 6, 6)]
        assert n <= 3 * 12, n
        n, rows = read(301, 12000, SMALL)
        assert rows == [("c", 301, "", 0, 1), ("u", 301, "Do", CAP, 0)]
        assert n <= SMALL + CAP + 12, n  # (its first SMALL tasks, to tell it is not small; then the look-ups)
