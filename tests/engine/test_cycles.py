# SPDX-License-Identifier: GPL-3.0-or-later
"""Dependency cycles: the runner's search starts only where a cycle may be reached (engine.statusrules), and
still finds every cycle, whatever the order tasks and edges were made in, across changes, task sets and a
restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from engine import Change, Overlord, State, Status, Task, TaskSet, Tomb, statusrules
from engine.statusrules import dependency_cycles
from tests.support.helpers import chain_across, task_of

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
        chain = chain_across(st, one, two)
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


# -- cycles a status change alone brings to life (engine correctness) ---------------------------------------------
#
# The edges are made while their tasks are Done (or Hold), which waits for nothing: the pass after finds no
# cycle. Then a status change makes the circle live, and the pass after it must find it: else the change
# sits unready for ever (a restart found it: every change with waiting tasks is searched then).


def _done_pair(o: Overlord, keeper: str = "idle") -> tuple[Change, Task, Task, Task]:
    """_done_pair makes a change of a and b (b waits for a), run to Done, then wires a to wait for b.

    c, of kind keeper, waits for b; of kind "idle" (no handler) it stays Do and keeps the change unready.
    """
    st = o.state
    o.task_runner.add_handler("k", _noop)
    with st:
        chg = st.new_change("c", "done tasks wired in a circle")
        a, b, c = st.new_task("k", "a"), st.new_task("k", "b"), st.new_task(keeper, "c")
        b.wait_for(a)
        c.wait_for(b)
        for t in (a, b, c):
            t.join_lane(1)
            chg.add_task(t)
    o.settle(WAIT)
    with st:
        assert [a.status, b.status, c.status] == [Status.DONE, Status.DONE, Status.DO]
        a.wait_for(b)  # a circle of Done tasks: nothing waits
    _pass(o)
    with st:
        assert [a.status, b.status] == [Status.DONE, Status.DONE]
    return chg, a, b, c


def _cycle_logged(st: State, *tasks: Task) -> bool:
    with st:
        return all(t.status is Status.ERROR and any("dependency cycle involving tasks" in line for line in t.log())
                   for t in tasks)


def test_done_tasks_of_a_circle_set_back_to_do_are_failed_at_the_next_pass(overlord: Overlord) -> None:
    _, a, b, _ = _done_pair(overlord)
    with overlord.state:
        a.set_status(Status.DO)  # user code: do them again
        b.set_status(Status.DO)
    _pass(overlord)
    assert _cycle_logged(overlord.state, a, b)


def test_tasks_of_a_ready_change_wired_and_set_back_to_do_are_failed(overlord: Overlord) -> None:
    """The change is ready (its search is skipped), but the tasks moved into Do are searched from all the same."""
    st = overlord.state
    overlord.task_runner.add_handler("k", _noop)
    with st:
        chg = st.new_change("c", "done, then wired and done again")
        a, b = st.new_task("k", "a"), st.new_task("k", "b")
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
    overlord.settle(WAIT)
    with st:
        assert chg.is_ready()
        a.wait_for(b)
        a.set_status(Status.DO)
        b.set_status(Status.DO)
    _pass(overlord)
    assert _cycle_logged(st, a, b)


def test_an_abort_that_undoes_done_tasks_of_a_circle_fails_them_on_postgresql(pg_url: str) -> None:
    """The same on a shared store: the runner of the host that moved the tasks searches from them."""
    o = Overlord(url=pg_url, workers=2)
    try:
        chg, a, b, _ = _done_pair(o)
        with o.state:
            chg.abort()
        _pass(o)
        assert _cycle_logged(o.state, a, b)
    finally:
        o.stop()
        o.state.close()


def test_past_the_bound_of_tasks_noted_every_change_is_searched(overlord: Overlord,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A State keeps at most REVIVED_MAX tasks for the next pass; past that the pass searches every change."""
    monkeypatch.setattr(statusrules, "REVIVED_MAX", 1)
    _, a, b, _ = _done_pair(overlord)
    with overlord.state:
        a.set_status(Status.DO)
        b.set_status(Status.DO)  # one too many: no task is kept, every change is searched
        assert overlord.state._uow.revived == set() and overlord.state._uow.new_waits is None
    _pass(overlord)
    assert _cycle_logged(overlord.state, a, b)


def test_held_tasks_of_a_circle_set_back_to_do_are_failed_at_the_next_pass(overlord: Overlord) -> None:
    st = overlord.state
    with st:
        chg = st.new_change("c", "held tasks wired in a circle")
        a, b, keep = st.new_task("idle", "a"), st.new_task("idle", "b"), st.new_task("idle", "keeps it unready")
        b.wait_for(a)
        for t in (a, b):
            t.join_lane(1)
        for t in (a, b, keep):
            chg.add_task(t)
        chg.abort_lanes([1])
        assert [a.status, b.status] == [Status.HOLD, Status.HOLD]
    _pass(overlord)
    with st:
        a.wait_for(b)  # Hold waits for nothing
    _pass(overlord)
    with st:
        assert [a.status, b.status] == [Status.HOLD, Status.HOLD]
        a.set_status(Status.DO)
        b.set_status(Status.DO)
    _pass(overlord)
    assert _cycle_logged(st, a, b)


def test_an_abort_that_undoes_done_tasks_of_a_circle_fails_them_and_the_change_ends(overlord: Overlord) -> None:
    """Done -> Undo reverses what a task waits for: a waits for b and b for a, both to be undone first."""
    chg, a, b, c = _done_pair(overlord)
    st = overlord.state
    overlord.loop()
    with st:
        chg.abort()
        assert [a.status, b.status, c.status] == [Status.UNDO, Status.UNDO, Status.HOLD]
    assert chg.wait_ready(WAIT), "the aborted change never ended"
    assert _cycle_logged(st, a, b)
    with st:
        assert chg.status is Status.ERROR
        assert "dependency cycle involving tasks" in str(chg.err())


def test_an_abort_of_a_running_task_that_closes_a_circle_fails_it_once_undone(overlord: Overlord) -> None:
    """a is Done, b runs; a is wired to wait for b; the abort makes a Undo, and b, whose handler returns on its
    tomb, Undo too: each waits for the other to be undone first."""
    st = overlord.state
    started = threading.Event()

    def until_aborted(task: Task, tomb: Tomb) -> None:
        started.set()
        tomb.wait_dying(WAIT)

    overlord.task_runner.add_handler("k", _noop)
    overlord.task_runner.add_handler("long", until_aborted)
    with st:
        chg = st.new_change("c", "an abort closes a circle")
        a, b = st.new_task("k", "a"), st.new_task("long", "b")
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
    _pass(overlord)  # a runs
    overlord.task_runner.ensure()  # b starts
    assert started.wait(WAIT)
    with st:
        a.wait_for(b)  # a is Done, b Doing: no live circle
        chg.abort()
        assert [a.status, b.status] == [Status.UNDO, Status.ABORT]
    overlord.settle(WAIT)
    assert _cycle_logged(st, a, b)
    with st:
        assert chg.status is Status.ERROR and chg.is_ready()


def _fail(task: Task, tomb: Tomb) -> None:
    raise RuntimeError("broken")


def test_a_failed_task_whose_lane_undoes_done_tasks_of_a_circle_fails_them(overlord: Overlord) -> None:
    """The recorder's abort of the failed task's lane moves a and b to Undo, in a circle."""
    chg, a, b, c = _done_pair(overlord, keeper="fails")
    overlord.task_runner.add_handler("fails", _fail)
    overlord.settle(WAIT)
    assert _cycle_logged(overlord.state, a, b)
    with overlord.state:
        assert c.status is Status.ERROR and chg.status is Status.ERROR


def test_a_task_woken_from_wait_that_closes_a_circle_is_failed(overlord: Overlord) -> None:
    """x waits for y (Done), y for x; x's handler sets y back to Do and parks x for an event.

    The pass after that finds no cycle (x is in Wait); the event moves x
    Wait -> Do, which closes the circle: that move is looked at too.
    """
    st = overlord.state

    def set_y_and_wait(task: Task, tomb: Tomb) -> None:
        with task.state:
            y.set_status(Status.DO)
        with task.state:
            task.wait_event("go")

    overlord.task_runner.add_handler("k", _noop)
    overlord.task_runner.add_handler("x", set_y_and_wait)
    with st:
        chg = st.new_change("c", "an event closes a circle")
        y, x, keep = st.new_task("k", "y"), st.new_task("x", "x"), st.new_task("idle", "keeps it unready")
        x.wait_for(y)
        for t in (y, x, keep):
            chg.add_task(t)
    _pass(overlord)  # y runs
    with st:
        assert y.status is Status.DONE
        y.wait_for(x)  # y is Done: no live circle
    _pass(overlord)  # x runs, sets y to Do and waits
    _pass(overlord)  # y waits for x, in Wait: no cycle
    with st:
        assert [x.status, y.status] == [Status.WAIT, Status.DO]
        assert st.emit("go", None) == 1
        assert [x.status, y.status] == [Status.DO, Status.DO]
    _pass(overlord)
    assert _cycle_logged(st, x, y)


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
    picks = data.draw(hs.lists(hs.booleans(), min_size=n, max_size=n), label="tasks searched from")
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
        # From any tasks (those moved into Do or Undo, in any change or none): every cycle they reach.
        moved = [t for t, pick in zip(tasks, picks, strict=True) if pick]
        got = dependency_cycles(w, w.records.trecs([int(t.id) for t in moved]))
        assert {frozenset(str(r.id) for r in c) for c in got} == _reference(tasks, moved)

