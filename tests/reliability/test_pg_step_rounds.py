# SPDX-License-Identifier: GPL-3.0-or-later
"""What a chain's step costs the PostgreSQL server and the connection: statements kept prepared, and round trips.

docs/performance.md, "... (issue 25, hpg6, 2026-12-08)".
"""

from __future__ import annotations

import threading
from typing import Any

from engine import Overlord, State, Status
from engine.store.postgresql_generic import LOCK_AHEAD_ONE
from engine.store.postgresql_sql import PROBE_OF, SMALL
from tests.support.helpers import chain_change, task_of
from tests.support.pgcluster import connect

from .test_pg_step_statements import _tasks_read

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion

_PREPARED = "SELECT statement FROM pg_prepared_statements"


#: The statements of a chain's step whose form is this branch's (the claim's are not), by what they start with.
_STEP = {
    "the lock of the step's task": "SELECT id, change_id, kind, summary, status, waited_status",
    # (Its edges and lanes, its change, the changes with tasks in Wait or queued, and the status probe.)
    "what is read ahead with it": "SELECT g.k, g.a, NULL::text",
    "the blockers recount": "UPDATE tasks SET blockers",
    # (The claimed tasks' changes not read yet, their counts, the changes with tasks in Wait.)
    "what is read ahead with the claim": "SELECT 'c', id, kind, summary, status, explicit_status, clean, data, "
                                         "spawn_time, ready_time, NULL::bigint",
}


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


def test_a_chain_s_steps_are_not_planned_again_at_every_run(overlord: Overlord, pg_url: str) -> None:
    """The statements a chain's step runs are prepared on the connection and planned for any parameters once (after
    the server's five custom plans): a list of ids as one array parameter, `id = ANY (%s)`, had the lock of the
    step's task, what is read ahead with it and the end of its lease planned again at every step (about 0.3 ms of
    the server's time a step on a busy machine)."""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)
    with connect(pg_url) as conn:  # (a table where a look-up by key costs less than a scan, as in a real one)
        conn.execute("INSERT INTO changes (id, kind, summary, status, spawn_time, ready_time, clean) "
                     "VALUES (1000000, 'k', 'done', 'Done', 'x', 'x', true)")
        conn.execute("INSERT INTO tasks (id, change_id, kind, summary, status, clean, spawn_time) "
                     "SELECT 1000000 + g, 1000000, 'k', 's', 'Done', true, 'x' FROM generate_series(1, 3000) g")
        conn.execute("INSERT INTO task_dependencies (task_id, wait_task_id) "
                     "SELECT 1000000 + g, 1000000 + g - 1 FROM generate_series(2, 3000) g")
        conn.execute("ANALYZE tasks, task_dependencies")
    n = 16
    chg = chain_change(o.state, n)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE
        rows = o.state._uow.store.run("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
    # (Run often enough: prepared at its sixth run.)
    ran = {sql: (generic, custom) for sql, generic, custom in rows if generic + custom >= n // 2}
    plans = {what: [p for sql, p in ran.items() if sql.startswith(start)] for what, start in _STEP.items()}
    assert all(len(p) == 1 for p in plans.values()), (plans, sorted(ran))
    assert {what: p[0] for what, p in plans.items() if p[0][1] > 5} == {}


def test_the_status_probe_of_a_big_change_does_not_count_its_first_tasks_again(pg_url: str) -> None:
    """A change found to have SMALL tasks or more is remembered as such: the next probes of it (one with every step
    of a chain of 1,000) look up its unready tasks without counting its first SMALL tasks again to tell its size (a
    third of the probe's time)."""
    st = State.open(url=pg_url)
    try:
        with st:
            chg = st.new_change("c", "big")
            ids = []
            for i in range(SMALL + 8):
                t = st.new_task("k", f"task {i}")
                chg.add_task(t)
                ids.append(t.id)
            cid = int(chg.id)
    finally:
        st.close()
    st = State.open(url=pg_url)  # (a store that never probed the change: its submit's did)
    try:
        store = st._uow.store
        probes: list[dict[str, Any]] = []
        read_ahead = store._read_ahead

        def spy(first: tuple[str, Any], more: dict[str, Any], doing: str = "read") -> Any:
            probes.extend(args for sql, args in more.values() if sql in (PROBE_OF, LOCK_AHEAD_ONE))
            return read_ahead(first, more, doing)

        store._read_ahead = spy
        for tid in ids[:2]:
            with st:
                assert task_of(st, tid).status is Status.DO
        assert len(probes) == 2
        assert str(cid) not in probes[0]["big"].strip("{}").split(",")
        assert probes[1]["big"] == f"{{{cid}}}"
    finally:
        st.close()
    with connect(pg_url) as conn:
        def read(big: str) -> int:
            args = {k: v for k, v in probes[1].items() if k != "one"}  # (PROBE_OF's own)
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + PROBE_OF, {**args, "big": big}).fetchone()
            return _tasks_read(plan[0][0]["Plan"])

        assert read("{}") - read(probes[1]["big"]) >= SMALL - 8  # (its first SMALL tasks, not read to tell its size)


def test_a_chain_s_step_is_three_round_trips_and_nine_statements(overlord: Overlord) -> None:
    """A step of a chain, counted: the lock of task n with what its outcome needs read ahead (2 statements: the
    lock, then its edges and lanes, its change, the changes with tasks in Wait or queued and the status probe in
    one), its outcome written (2, pipelined: its row with its lease ended, the blockers recount), the claim of task
    n+1 with what it needs read ahead (3: the claim, the share locks of its changes, then their rows, counts and the
    changes with tasks in Wait in one), task n+1 moved to Doing and the COMMIT (2): 3 round trips, 9 statements.
    (13 before those reads ahead were merged, hpgw2; 14 before hpg6 merged two.)"""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)
    n = 40
    chg = chain_change(o.state, n)
    store = o.state._uow.store
    trips: list[str] = []  # (by the workers, which record the outcomes and hand on: the loop's passes are apart)
    sent: list[str] = []

    def worker() -> bool:
        return threading.current_thread().name.startswith("engine-worker")
    read_ahead, run, send, executemany, commit = (store._read_ahead, store.run, store.send, store.executemany,
                                                  store.commit)

    def spy_ahead(first: tuple[str, Any], more: dict[str, Any], doing: str = "read") -> Any:
        if worker():
            trips.append(first[0])
            sent.extend([first[0], *(sql for sql, _args in more.values())])
        return read_ahead(first, more, doing)

    def spy_run(sql: str, args: Any = (), doing: str = "read") -> Any:
        if worker():
            trips.append(sql)
            sent.append(sql)
        return run(sql, args, doing)

    def spy_send(sql: str, args: Any = ()) -> None:
        if worker():
            sent.append(sql)
        send(sql, args)

    def spy_many(c: Any, rows: Any) -> None:
        if worker():
            sent.append(c.sql)
        executemany(c, rows)

    def spy_commit() -> None:
        if worker():
            trips.append("COMMIT")
            sent.append("COMMIT")
        commit()

    store._read_ahead, store.run, store.send, store.executemany, store.commit = (spy_ahead, spy_run, spy_send,
                                                                                 spy_many, spy_commit)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE
    # (Beside the steps: the last one settles the change, Done, under its exclusive lock.)
    assert len(trips) <= 3 * n + 3, len(trips)
    print(f"{len(trips)} round trips and {len(sent)} statements in {n} steps")
    assert len(sent) <= 9 * n + 15, len(sent)


def test_a_chain_s_steps_use_the_connection_s_cursors_again(overlord: Overlord) -> None:
    """The statements of a chain's step run on cursors used before (psycopg takes about 30 us to make one and close
    it, and a step runs nine statements): a cursor whose results were all read goes back to the store, and the
    writes whose results nobody reads share one, the COMMIT's too. (A cursor a statement before: 13 a step.)"""
    o = overlord
    o.task_runner.add_handler("step", lambda task, tomb: None)
    n = 40
    chg = chain_change(o.state, n)
    store = o.state._uow.store
    made: list[str] = []
    conn = store._conn
    cursor = conn.cursor

    def spy(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("engine-worker"):
            made.append("cursor")
        return cursor(*args, **kwargs)

    conn.cursor = spy
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE
    assert store._conn is conn  # (the same connection all along: what was counted is the steps')
    print(f"{len(made)} cursors made in {n} steps")
    assert len(made) <= n // 4 + 10, len(made)
