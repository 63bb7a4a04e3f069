# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain's step from the cache: on SQLite the hand-on knows the next task from the records it holds.

The outcome of task n and the claim of task n+1 are written by the commit's
one flush, the blockers counts of the tasks waiting for n as values (no
recount statement, no query of runnable tasks); every blockers count in the
file stays exact at every step, and a cache that may miss an outside write
is never trusted for them (docs/performance.md, "A chain's step from the
cache").
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from engine import DatabaseBusyError, Overlord, State, Status, Task, TaskRunner
from engine.session import session_of
from engine.tomb import Tomb
from tests.support.helpers import chain_change, noting_summaries, without_timing_rows

TIMEOUT = 30.0

#: Tasks whose stored blockers count is not the number of their wait tasks not Done.
STALE = """SELECT t.id, t.blockers FROM tasks t WHERE t.blockers != (
    SELECT count(*) FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id
    WHERE d.task_id = t.id AND w.status != 'Done')"""


def traced(o: Overlord) -> list[str]:
    """traced collects the statements the overlord's connection runs from now on."""
    seen: list[str] = []
    session_of(o.state).uow.store.raw.set_trace_callback(seen.append)
    return seen


def test_a_chain_step_writes_outcome_and_claim_in_one_flush_without_a_recount(overlord: Overlord,
                                                                               tmp_path: Path) -> None:
    """Between two steps: one BEGIN, two task UPDATEs, COMMIT; no recount, no runnable query; counts exact."""
    o = overlord
    reader = sqlite3.connect(tmp_path / "state.db", check_same_thread=False)
    stale: list[list[tuple[int, int]]] = []
    marks: list[int] = []
    seen = traced(o)

    def step(task: Task, tomb: Tomb) -> None:
        marks.append(len(seen))
        stale.append(reader.execute(STALE).fetchall())

    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 20)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    reader.close()
    with o.state:
        assert chg.status is Status.DONE
    assert stale == [[]] * 20  # every step saw every blockers count right
    for a, b in itertools.pairwise(marks[1:-1]):  # the middle steps, handler to handler
        step = without_timing_rows(seen[a:b])  # (a slow pass's timing rows may ride on any commit)
        statements = [s.split()[0] for s in step if not s.startswith("PRAGMA")]
        between = " | ".join(step)
        assert statements == ["BEGIN", "UPDATE", "UPDATE", "COMMIT"], between
        assert "blockers = (" not in between and "SELECT" not in between, between
    assert sqlite3.connect(tmp_path / "state.db").execute(STALE).fetchall() == []


def test_fan_out_and_fan_in_are_handed_on_with_exact_counts(overlord: Overlord, tmp_path: Path) -> None:
    """a -> (b, c) -> d, and e waiting for b and d: each Done hands on what it unblocked, counts stay exact."""
    o = overlord
    reader = sqlite3.connect(tmp_path / "state.db", check_same_thread=False)
    order: list[str] = []
    stale: list[list[tuple[int, int]]] = []
    lock = threading.Lock()

    def step(task: Task, tomb: Tomb) -> None:
        with lock:
            stale.append(reader.execute(STALE).fetchall())
            with task.state:
                order.append(task.summary)

    o.task_runner.add_handler("step", step)
    st = o.state
    with st:
        chg = st.new_change("graph", "a small graph")
        a, b, c, d, e = (st.new_task("step", name) for name in "abcde")
        for later, earlier in ((b, a), (c, a), (d, b), (d, c), (e, b), (e, d)):
            later.wait_for(earlier)
        for t in (a, b, c, d, e):
            chg.add_task(t)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    reader.close()
    with st:
        assert chg.status is Status.DONE
    assert order[0] == "a" and set(order[1:3]) == {"b", "c"} and order[3:] == ["d", "e"]
    assert stale == [[]] * 5
    assert sqlite3.connect(tmp_path / "state.db").execute(STALE).fetchall() == []


def test_a_cache_kept_over_an_outside_write_is_read_afresh_and_counts_stay_exact(tmp_path: Path) -> None:
    """An edge written by another connection while a unit was kept (busy) is seen, and counted when its task is Done.

    The kept unit keeps the cache, which misses the edge: it is not taken
    for the database's edges (counts are the store's recount) and is
    dropped once the kept writes are committed.
    """
    db = tmp_path / "state.db"
    st = State.open(db, busy_timeout=0.05, busy_budget=0.1)
    try:
        runner = TaskRunner(st)
        with st:
            chg = st.new_change("edges", "a, b waiting for a, c waiting for nothing")
            a, b, c = (st.new_task("idle", name) for name in "abc")
            b.wait_for(a)
            for t in (a, b, c):
                chg.add_task(t)
            aid, cid = int(a.id), int(c.id)
        runner.ensure()  # the blockers counts checked: the cache is trusted from now on
        with st:
            assert [t.summary for t in a.halt_tasks()] == ["b"]  # a's edges cached
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusyError), st:
            st.set("kept", 1)  # kept in memory, with the cache
        other.execute("INSERT INTO task_dependencies (task_id, wait_task_id) VALUES (?, ?)", (cid, aid))
        other.execute("UPDATE tasks SET blockers = 1 WHERE id = ?", (cid,))
        other.execute("COMMIT")
        with st:  # the outside write is seen while the kept unit is pending; it is written first, then read afresh
            assert st.get("kept") == 1
            assert sorted(t.summary for t in a.halt_tasks()) == ["b", "c"]
        runner.ensure()  # counts checked again (they are right)
        with st:
            a.set_status(Status.DONE)
        assert other.execute(STALE).fetchall() == []
        assert other.execute("SELECT blockers FROM tasks WHERE id = ?", (cid,)).fetchone() == (0,)
        other.close()
    finally:
        st.close()


def test_a_task_in_no_change_waiting_for_a_done_one_is_not_handed_on(overlord: Overlord) -> None:
    """A task never added to a change never runs (snapd), even when a task it waits for is Done by a chain's step."""
    o = overlord
    ran: list[str] = []
    o.task_runner.add_handler("step", noting_summaries(ran))
    st = o.state
    with st:
        chg = st.new_change("chain", "a, then b")
        a, b = st.new_task("step", "a"), st.new_task("step", "b")
        orphan = st.new_task("step", "orphan")
        b.wait_for(a)
        orphan.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    o.stop()
    with st:
        assert orphan.status is Status.DO
    assert ran == ["a", "b"]


def test_a_wide_fan_in_is_counted_right_at_every_outcome(overlord: Overlord, tmp_path: Path) -> None:
    """A task waiting for more tasks than the cache counts (COUNT_LIMIT) gets the store's recount: exact throughout."""
    from engine.cache import COUNT_LIMIT

    o = overlord
    reader = sqlite3.connect(tmp_path / "state.db", check_same_thread=False)
    stale: list[list[tuple[int, int]]] = []
    lock = threading.Lock()

    def step(task: Task, tomb: Tomb) -> None:
        with lock:
            stale.append(reader.execute(STALE).fetchall())

    o.task_runner.add_handler("step", step)
    st = o.state
    with st:
        chg = st.new_change("fan-in", "many tasks, then one waiting for them all")
        last = st.new_task("step", "last")
        for i in range(COUNT_LIMIT + 8):
            t = st.new_task("step", f"first {i}")
            last.wait_for(t)
            chg.add_task(t)
        chg.add_task(last)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    reader.close()
    with st:
        assert chg.status is Status.DONE
    assert len(stale) == COUNT_LIMIT + 9 and not any(stale)
    assert sqlite3.connect(tmp_path / "state.db").execute(STALE).fetchall() == []
