# SPDX-License-Identifier: GPL-3.0-or-later
"""TaskSet: building sets of tasks, their edges, and what they do to their tasks."""

from __future__ import annotations

from typing import Any

import pytest

from engine import EngineError, State, Task, TaskSet


def new_tasks(st: State, *kinds: str) -> list[Task]:
    return [st.new_task(kind, f"{i + 1}...") for i, kind in enumerate(kinds)]


def test_constructing_needs_no_lock(st: State) -> None:
    assert len(TaskSet()) == 0
    with st:
        t1, t2 = new_tasks(st, "download", "install")
    ts = TaskSet(t1, t2)  # no lock held
    with st:
        assert ts.tasks() == [t1, t2]
        assert TaskSet().tasks() == []


TASKSET_CALLS = {
    "add_task": lambda ts, t, other: ts.add_task(t),
    "add_all": lambda ts, t, other: ts.add_all(other),
    "wait_for": lambda ts, t, other: ts.wait_for(t),
    "wait_all": lambda ts, t, other: ts.wait_all(other),
    "join_lane": lambda ts, t, other: ts.join_lane(1),
    "tasks": lambda ts, t, other: ts.tasks(),
    "mark_edge": lambda ts, t, other: ts.mark_edge(t, "edge"),
    "edge": lambda ts, t, other: ts.edge("edge"),
    "maybe_edge": lambda ts, t, other: ts.maybe_edge("edge"),
    "add_all_with_edges": lambda ts, t, other: ts.add_all_with_edges(other),
}


@pytest.mark.parametrize("call", list(TASKSET_CALLS.values()), ids=list(TASKSET_CALLS))
def test_methods_need_the_lock(st: State, call: Any) -> None:
    with st:
        t1, t2, t3 = new_tasks(st, "download", "install", "setup")
    ts = TaskSet(t1)
    other = TaskSet(t3)
    with pytest.raises(RuntimeError):
        call(ts, t2, other)
    with st:
        assert ts.tasks() == [t1]
        assert ts.maybe_edge("edge") is None
        assert t1.wait_tasks() == [] and t1.lanes() == [0]


def test_add_task_and_add_all_dedupe(st: State) -> None:
    with st:
        t1, t2, t3, t4 = new_tasks(st, "download", "check", "setup", "link")
        ts0 = TaskSet(t1)
        ts0.add_task(t2)
        ts0.add_all(TaskSet(t3, t4))
        # these do nothing
        ts0.add_task(t2)
        ts0.add_all(TaskSet(t3, t4))
        ts0.add_all(TaskSet(t1))
        assert ts0.tasks() == [t1, t2, t3, t4]


def test_dedupe_by_task_identity_not_handle(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        (t1,) = new_tasks(st, "download")
        chg.add_task(t1)
        again = st.task(t1.id)
        assert again is not None
        ts = TaskSet(t1)
        ts.add_task(again)
        assert ts.tasks() == [t1]


def test_wait_for(st: State) -> None:
    with st:
        t1, t2, t3 = new_tasks(st, "download", "install", "setup")
        ts23 = TaskSet(t2, t3)
        ts23.wait_for(t1)
        assert t2.wait_tasks() == [t1]
        assert t3.wait_tasks() == [t1]
        assert t1.num_halt_tasks() == 2


def test_wait_all(st: State) -> None:
    with st:
        t1, t2, t3, t4 = new_tasks(st, "download", "check", "setup", "link")
        ts12 = TaskSet(t1, t2)
        ts34 = TaskSet(t3, t4)
        ts34.wait_all(ts12)
        assert t3.wait_tasks() == [t1, t2]
        assert t4.wait_tasks() == [t1, t2]
        assert t1.num_halt_tasks() == 2
        assert t2.num_halt_tasks() == 2
        assert t1.wait_tasks() == [] and t2.wait_tasks() == []


def test_join_lane(st: State) -> None:
    with st:
        t1, t2, t3 = new_tasks(st, "download", "install", "setup")
        lane = st.new_lane()
        TaskSet(t1, t2).join_lane(lane)
        assert t1.lanes() == [lane]
        assert t2.lanes() == [lane]
        assert t3.lanes() == [0]


def test_tasks_is_a_copy(st: State) -> None:
    with st:
        t1, t2 = new_tasks(st, "download", "install")
        ts = TaskSet(t1)
        got = ts.tasks()
        got.append(t2)
        got.remove(t1)
        assert ts.tasks() == [t1]


def test_edges(st: State) -> None:
    with st:
        t1, t2, t3 = new_tasks(st, "download", "verify", "install")
        ts = TaskSet(t1, t2, t3)

        # no edge marked yet
        for name in ("on-edge", "eddie"):
            with pytest.raises(KeyError) as info:
                ts.edge(name)
            assert name in str(info.value)
        assert ts.maybe_edge("on-edge") is None

        ts.mark_edge(t1, "on-edge")
        assert ts.edge("on-edge") == t1

        ts.mark_edge(t2, "eddie")
        assert ts.edge("on-edge") == t1
        assert ts.edge("eddie") == t2

        # edges can be reassigned
        ts.mark_edge(t3, "on-edge")
        assert ts.edge("on-edge") == t3
        assert ts.maybe_edge("on-edge") == t3
        assert ts.maybe_edge("not-found") is None


def test_mark_edge_refuses_no_task(st: State) -> None:
    with st:
        (t1,) = new_tasks(st, "download")
        ts = TaskSet(t1)
        with pytest.raises((ValueError, TypeError)):
            ts.mark_edge(None, "on-edge")  # type: ignore[arg-type]
        assert ts.maybe_edge("on-edge") is None


def test_add_all_with_edges(st: State) -> None:
    with st:
        t1, t2, t3, t4 = new_tasks(st, "download", "verify", "install", "another-kind")
        ts = TaskSet(t1, t2, t3)
        ts.mark_edge(t1, "install")
        assert ts.edge("install") == t1

        ts2 = TaskSet()
        ts2.add_all_with_edges(ts)
        assert ts2.edge("install") == t1
        assert ts2.tasks() == [t1, t2, t3]

        # doing it again is no harm
        ts2.add_all_with_edges(ts)
        assert ts2.edge("install") == t1
        assert ts2.tasks() == [t1, t2, t3]

        # but conflicting edges are an error, and nothing is added
        dup = TaskSet(t4)
        dup.mark_edge(t4, "install")
        with pytest.raises(ValueError) as info:
            ts2.add_all_with_edges(dup)
        assert "duplicated edge" in str(info.value)
        assert "install" in str(info.value)
        assert ts2.tasks() == [t1, t2, t3]
        assert ts2.edge("install") == t1


def test_add_all_with_edges_merges_distinct_edges(st: State) -> None:
    with st:
        t1, t2 = new_tasks(st, "download", "install")
        a = TaskSet(t1)
        a.mark_edge(t1, "begin")
        b = TaskSet(t2)
        b.mark_edge(t2, "end")
        a.add_all_with_edges(b)
        assert a.tasks() == [t1, t2]
        assert a.edge("begin") == t1
        assert a.edge("end") == t2


def test_wait_all_keeps_snapds_orders_and_adds_each_edge_once(st: State) -> None:
    with st:
        t1, t2, t3, t4, t5 = new_tasks(st, "download", "check", "setup", "link", "start")
        t3.wait_for(t2)
        TaskSet(t3, t4, t5).wait_all(TaskSet(t2, t1, t2))  # (t2 once in the set; t3 waits for it already)
        assert [t.wait_tasks() for t in (t3, t4, t5)] == [[t2, t1]] * 3
        assert t1.halt_tasks() == [t3, t4, t5] and t2.halt_tasks() == [t3, t4, t5]
        t5.wait_all(TaskSet(t1, t4, t5))  # t5 waits for itself too, as with wait_for
        assert t5.wait_tasks() == [t2, t1, t4, t5]
        assert t4.halt_tasks() == [t5]


def test_wait_all_refuses_a_task_of_another_state(st: State) -> None:
    other = State.open(None)
    try:
        with st, other:
            (t1,) = new_tasks(st, "download")
            (stranger,) = new_tasks(other, "download")
            with pytest.raises(EngineError, match="of another State"):
                t1.wait_all(TaskSet(stranger))
            with pytest.raises(EngineError, match="of another State"):
                TaskSet(t1).wait_all(TaskSet(stranger))
    finally:
        other.close()



def test_a_change_refuses_a_task_of_another_state(st: State) -> None:
    other = State.open(None)
    try:
        with other:
            # (the same change id as the one below: a task of the other State would join it silently)
            cid = other.new_change("c", "the other's").id
        with st, other:
            mine = st.new_change("c", "mine")
            assert mine.id == cid
            (stranger,) = new_tasks(other, "download")
            with pytest.raises(EngineError, match=f"cannot add task {stranger.id} to change {cid}: it belongs to "
                                                  "another State"):
                mine.add_task(stranger)
            assert mine.tasks() == [] and stranger.change() is None
        with st, pytest.raises(EngineError, match="belongs to another State"):  # (the other's lock not held)
            mine.add_task(stranger)
    finally:
        other.close()
