# SPDX-License-Identifier: GPL-3.0-or-later
"""Dependency cycles: the runner's search starts only where a cycle may be reached (engine.statusrules), and
still finds every cycle, whatever the order tasks and edges were made in, across changes, task sets and a
restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from engine import Overlord, State, Status, Task, TaskSet, Tomb
from engine.statusrules import dependency_cycles
from tests.support.helpers import task_of

WAIT = 30.0  # generous bound for settle; never a timing assertion


def _noop(task: Task, tomb: Tomb) -> None:
    pass


def _pass(o: Overlord) -> None:
    """_pass runs one pass of the runner (tasks of kind "idle" have no handler: they stay Do) and waits for it."""
    o.task_runner.ensure()
    o.task_runner.wait()


def _statuses(st: State, ids: list[str]) -> list[Status]:
    with st:
        return [task_of(st, tid).status for tid in ids]


def test_a_cycle_closed_by_an_older_task_waiting_for_a_task_set_made_after_it(overlord: Overlord) -> None:
    """Each task waits for an older one; then, after a pass, the oldest waits for the newer set."""
    st = overlord.state
    with st:
        chg = st.new_change("c", "two task sets")
        first = [st.new_task("idle", f"first {i}") for i in range(3)]
        second = [st.new_task("idle", f"second {i}") for i in range(3)]
        for ts in (first, second):
            for later, earlier in zip(ts[1:], ts, strict=False):
                later.wait_for(earlier)
        TaskSet(*second).wait_all(TaskSet(*first))
        for t in (*first, *second):
            chg.add_task(t)
        ids = [t.id for t in (*first, *second)]
    _pass(overlord)  # nothing runs, no cycle yet
    assert _statuses(st, ids) == [Status.DO] * 6
    with st:
        first[0].wait_all(TaskSet(*second))  # edges to newer tasks, added after creation
    _pass(overlord)
    assert _statuses(st, ids) == [Status.ERROR] * 6
    with st:
        assert "dependency cycle involving tasks" in str(chg.err())


def test_a_cycle_closed_in_another_change_by_a_task_waiting_for_an_older_one(overlord: Overlord) -> None:
    """The edge that closes the cycle points to an older task of a change that got no new edge.

    Only the change of the closing edge is looked at again; its task's edge
    leaves the change, so the search starts there (an edge to an older task
    alone could not close a cycle within the change).
    """
    st = overlord.state
    with st:
        one, two = st.new_change("one", "older"), st.new_change("two", "newer")
        a, b = st.new_task("idle", "a"), st.new_task("idle", "b")
        one.add_task(a)
        two.add_task(b)
        a.wait_for(b)
        ids = [a.id, b.id]
    _pass(overlord)
    assert _statuses(st, ids) == [Status.DO, Status.DO]
    with st:
        b.wait_for(a)
    _pass(overlord)
    assert _statuses(st, ids) == [Status.ERROR, Status.ERROR]


def test_a_cycle_of_tasks_in_no_change_reached_from_a_change_is_found(overlord: Overlord) -> None:
    st = overlord.state
    with st:
        x, y = st.new_task("idle", "x"), st.new_task("idle", "y")
        x.wait_for(y)
        y.wait_for(x)
        chg = st.new_change("c", "waits for a cycle outside it")
        t = st.new_task("idle", "t")
        t.wait_for(x)
        chg.add_task(t)
    _pass(overlord)
    with st:
        assert [x.status, y.status] == [Status.ERROR, Status.ERROR]


def test_a_cycle_of_undo_tasks_is_found(overlord: Overlord) -> None:
    """Undo tasks wait for the tasks that wait for them: a cycle of such is found through those edges."""
    st = overlord.state
    with st:
        chg = st.new_change("c", "to undo in a cycle")
        a, b = st.new_task("idle", "a"), st.new_task("idle", "b")
        chg.add_task(a)
        chg.add_task(b)
        ids = [a.id, b.id]
    _pass(overlord)
    with st:
        b.wait_for(a)
        a.wait_for(b)
        a.set_status(Status.UNDO)
        b.set_status(Status.UNDO)
    _pass(overlord)
    assert _statuses(st, ids) == [Status.ERROR, Status.ERROR]


def test_a_cycle_written_before_a_restart_is_found_at_the_first_pass(tmp_path: Path) -> None:
    """A chain of older-first edges whose cycle an edge added in a later unit of work closed, across two changes."""
    db = tmp_path / "state.db"
    st = State.open(db)
    with st:
        one, two = st.new_change("one", "a chain"), st.new_change("two", "another")
        chain = [st.new_task("k", f"t{i}") for i in range(5)]
        for later, earlier in zip(chain[1:], chain, strict=False):
            later.wait_for(earlier)
        for t in chain[:3]:
            one.add_task(t)
        for t in chain[3:]:
            two.add_task(t)
        ids, cids = [t.id for t in chain], (one.id, two.id)
    with st:
        chain[2].wait_for(chain[4])  # closes t2 -> t4 -> t3 -> t2, across the changes
    st.close()
    o = Overlord(db)
    o.task_runner.add_handler("k", _noop)
    try:
        o.settle(WAIT)
        assert _statuses(o.state, ids)[2:] == [Status.ERROR] * 3
        with o.state:
            for cid in cids:
                chg = o.state.change(cid)
                assert chg is not None and chg.status is Status.ERROR
    finally:
        o.stop()


# -- the search against a plain one, on graphs made in any order ------------------------------------------------

# (Weighted: a cycle needs tasks all in Do or all in Undo.)
_KINDS = (Status.DO, Status.DO, Status.DO, Status.UNDO, Status.UNDO, Status.DONE, Status.HOLD)


def _reference(tasks: list[Task], starts: list[Task]) -> set[frozenset[str]]:
    """_reference is every cycle reachable from starts, by reachability sets (the definition, not a search)."""
    status = {t.id: t.status for t in tasks}

    def succ(tid: str) -> list[str]:
        t = next(x for x in tasks if x.id == tid)
        if status[tid] is Status.DO:
            return [x.id for x in t.wait_tasks() if status[x.id] is Status.DO]
        if status[tid] is Status.UNDO:
            return [x.id for x in t.halt_tasks() if status[x.id] is Status.UNDO]
        return []

    reach: dict[str, set[str]] = {}
    for t in tasks:
        seen: set[str] = set()
        todo = succ(t.id)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(succ(n))
        reach[t.id] = seen
    live = [t.id for t in starts if status[t.id] in (Status.DO, Status.UNDO)]
    reachable = set(live).union(*(reach[s] for s in live)) if live else set()
    return {frozenset({u} | {v for v in reach[u] if u in reach[v]}) for u in reachable if u in reach[u]}


@pytest.fixture(scope="module")
def state() -> Iterator[State]:
    st = State.open(None)
    yield st
    st.close()


@settings(max_examples=200, deadline=None)
@given(data=hs.data())
def test_the_search_finds_every_cycle_a_plain_search_finds(state: State, data: hs.DataObject) -> None:
    n = data.draw(hs.integers(2, 9), label="tasks")
    # Where each task goes (0: the change searched, 1: another change, 2: no change), made in any order.
    homes = data.draw(hs.lists(hs.sampled_from((0, 0, 1, 2)), min_size=n, max_size=n), label="homes")
    statuses = data.draw(hs.lists(hs.sampled_from(_KINDS), min_size=n, max_size=n), label="statuses")
    edges = data.draw(hs.lists(hs.tuples(hs.integers(0, n - 1), hs.integers(0, n - 1)), max_size=3 * n),
                      label="edges")
    split = data.draw(hs.integers(0, len(edges)), label="edges in a later unit of work")
    st = state
    with st:
        chgs = [st.new_change("c", "searched"), st.new_change("c", "other")]
        tasks = [st.new_task("k", f"t{i}") for i in range(n)]
        for t, home in zip(tasks, homes, strict=True):
            if home < 2:
                chgs[home].add_task(t)
        for i, j in edges[:split]:
            tasks[i].wait_for(tasks[j])
    with st:
        for i, j in edges[split:]:
            tasks[i].wait_for(tasks[j])
        for t, s in zip(tasks, statuses, strict=True):
            t.set_status(s)
    with st:
        w = st._uow
        starts = [t for t, home in zip(tasks, homes, strict=True) if home == 0]
        got = dependency_cycles(w, w.records.change_trecs(w.records.crec(int(chgs[0].id))))
        assert {frozenset(str(r.id) for r in c) for c in got} == _reference(tasks, starts)
        for c in got:
            assert [r.id for r in c] == sorted(r.id for r in c)

