# SPDX-License-Identifier: GPL-3.0-or-later
"""Change: status derivation (with the Wait rule), data, tasks, lanes, aborts, err, readiness."""

from __future__ import annotations

import math
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Change,
    ChangeError,
    EngineError,
    NoStateError,
    State,
    Status,
    Task,
    TaskDependencyCycleError,
    TaskSet,
)
from engine.testing import FakeClock

WAIT = 30  # seconds; generous, only reached when something is broken

# snapd's statusOrder, with Wait where snapd put it.
ORDER = [
    Status.ABORT, Status.UNDOING, Status.UNDO, Status.DOING, Status.DO, Status.WAIT,
    Status.ERROR, Status.UNDONE, Status.DONE, Status.HOLD,
]

WORDS = {s.value.lower(): s for s in Status if s not in (Status.DEFAULT, Status.WAIT)}


def set_word(t: Task, word: str) -> None:
    """set_word sets a status by its lower-case name; wait[-<status>] uses set_to_wait."""
    if word.startswith("wait"):
        waited = word.partition("-")[2] or "done"
        t.set_to_wait(WORDS[waited])
    else:
        t.set_status(WORDS[word])


def make_tasks(st: State, chg: Change, names: list[str], kind: str = "do") -> dict[str, Task]:
    tasks = {}
    for name in names:
        tasks[name] = st.new_task(kind, name)
        chg.add_task(tasks[name])
    return tasks


def add_order(tasks: dict[str, Task], order: str) -> None:
    """add_order reads 'a->b' as: b waits for a."""
    for pair in order.split():
        first, second = pair.split("->")
        tasks[second].wait_for(tasks[first])


def expand(spec: str, names: list[str]) -> list[list[str]]:
    """expand splits '<task>:<status>[:<lanes>]' items, '*' standing for every task not named before it."""
    items: list[list[str]] = []
    seen: set[str] = set()
    for item in spec.split():
        parts = item.split(":")
        if parts[0] == "*":
            items += [[name, *parts[1:]] for name in names if name not in seen]
            seen.update(names)
            continue
        seen.add(parts[0])
        items.append(parts)
    return items


def apply_setup(tasks: dict[str, Task], setup: str, names: list[str]) -> None:
    for parts in expand(setup, names):
        set_word(tasks[parts[0]], parts[1])
        if len(parts) > 2:
            for lane in parts[2].split(","):
                tasks[parts[0]].join_lane(int(lane))


def statuses(tasks: dict[str, Task], result: str, names: list[str]) -> tuple[str, str]:
    expected = [f"{p[0]}:{p[1]}" for p in expand(result, names)]
    obtained = [f"{p[0]}:{tasks[p[0]].status.value.lower()}" for p in expand(result, names)]
    return " ".join(obtained), " ".join(expected)


# -- status ------------------------------------------------------------------------


def test_new_change(st: State) -> None:
    with st:
        chg = st.new_change("install", "summary...")
        assert chg.kind == "install"
        assert chg.summary == "summary..."
        assert chg.status is Status.HOLD  # nothing to do without tasks
        assert not chg.is_ready()
        assert chg.ready_time is None


@pytest.mark.parametrize("i", range(len(ORDER)), ids=[s.value for s in ORDER])
def test_status_derived_from_tasks(st: State, i: int) -> None:
    """The first status of snapd's order present among the tasks wins."""
    with st:
        chg = st.new_change("install", "...")
        for status in ORDER[i:]:
            t = st.new_task("download", status.value)
            set_word(t, status.value.lower())
            chg.add_task(t)
        assert chg.status is ORDER[i]


@pytest.mark.parametrize("status", ORDER, ids=[s.value for s in ORDER])
def test_status_of_a_single_task(st: State, status: Status) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        set_word(t, status.value.lower())
        assert chg.status is status


def test_status_follows_tasks_as_they_change(st: State) -> None:
    """snapd's TestStatusDerivedFromTasks: every task moves down the order together."""
    with st:
        chg = st.new_change("install", "...")
        tasks = {}
        for status in ORDER:
            t = st.new_task("download", status.value)
            set_word(t, status.value.lower())
            chg.add_task(t)
            tasks[status] = t
        for s in ORDER:
            for s2 in ORDER:
                if s2 is s:
                    break
                set_word(tasks[s2], s.value.lower())
            assert chg.status is s


def test_status_explicitly_defined(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        assert chg.status is Status.HOLD
        t = st.new_task("download", "...")
        chg.add_task(t)
        assert chg.status is Status.DO
        t.set_status(Status.DOING)
        assert chg.status is Status.DOING
        chg.set_status(Status.ERROR)
        assert chg.status is Status.ERROR
        t.set_status(Status.DONE)  # an explicit status wins over the tasks
        assert chg.status is Status.ERROR
        chg.set_status(Status.DEFAULT)  # back to computing it
        assert chg.status is Status.DONE
    with st:
        assert chg.status is Status.DONE


def test_explicit_ready_status_makes_the_change_ready(st: State, clock: FakeClock) -> None:
    with st:
        chg = st.new_change("install", "...")
        assert not chg.is_ready()
        clock.advance(5)
        chg.set_status(Status.ERROR)
        assert chg.is_ready()
        assert chg.ready_time == clock()


def test_explicit_unready_status_does_not_make_the_change_ready(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        chg.set_status(Status.DOING)
        assert chg.status is Status.DOING
        assert not chg.is_ready()
        assert chg.ready_time is None


# -- the Wait rule: a change is Wait only when all its pending work waits ----------------

# (name, order, setup, expected): tasks are named in setup; 'a->b' means b waits
# for a; 'wait' is set_to_wait(Done), 'wait-undone' set_to_wait(Undone). Cases
# from snapd's change_test.go TestIsWaiting*.
WAIT_CASES = [
    # TestIsWaitingSingle
    ("single-do", "", "t1:do", "do"),
    ("single-wait", "", "t1:wait", "wait"),
    ("single-wait-undone", "", "t1:wait-undone", "wait"),
    # TestIsWaitingStatusOrderWithWaits: higher statuses still win
    ("order-doing", "t2->t1 t3->t1", "t1:do t2:wait t3:doing t4:wait", "doing"),
    ("order-undoing", "t2->t1 t3->t1", "t1:wait t2:wait t3:undoing t4:wait", "undoing"),
    ("order-abort", "t2->t1 t3->t1", "t1:wait t2:wait t3:abort t4:wait", "abort"),
    # TestIsWaitingTwoTasks
    ("two-do-do", "t1->t2", "t1:do t2:do t3:wait", "do"),
    ("two-done-do", "t1->t2", "t1:done t2:do t3:wait", "do"),
    ("two-wait-do", "t1->t2", "t1:wait t2:do t3:wait", "wait"),
    ("two-done-wait", "t1->t2", "t1:done t2:wait t3:wait", "wait"),
    # TestIsWaitingCircularDependency: a cycle of Do tasks is not waiting
    ("circular-do", "t1->t2 t2->t3 t3->t1", "t1:do t2:do t3:do t4:wait", "do"),
    ("circular-doing", "t1->t2 t2->t3 t3->t1", "t1:done t2:doing t3:do t4:wait", "doing"),
    ("circular-wait", "t1->t2 t2->t3 t3->t1", "t1:done t2:wait t3:do t4:wait", "wait"),
    # TestIsWaitingMultipleDependencies
    ("multi-do", "t1->t3 t2->t3", "t1:do t2:do t3:do t4:wait", "do"),
    ("multi-done-done", "t1->t3 t2->t3", "t1:done t2:done t3:do t4:wait", "do"),
    ("multi-done-do", "t1->t3 t2->t3", "t1:done t2:do t3:do t4:wait", "do"),
    ("multi-error-wait", "t1->t3 t2->t3", "t1:error t2:wait t3:do t4:wait", "wait"),
    ("multi-wait-error", "t1->t3 t2->t3", "t1:wait t2:error t3:do t4:wait", "wait"),
    ("multi-done-wait", "t1->t3 t2->t3", "t1:done t2:wait t3:do t4:wait", "wait"),
    ("multi-wait-wait", "t1->t3 t2->t3", "t1:wait t2:wait t3:do t4:wait", "wait"),
    ("multi-done-done-wait", "t1->t3 t2->t3", "t1:done t2:done t3:wait t4:wait", "wait"),
    ("multi-wait-abort", "t1->t3 t2->t3", "t1:wait t2:abort t3:do t4:wait", "abort"),
    # TestIsWaitingUndoTwoTasks: an Undo task waits for the tasks that wait for it
    ("undo-undo-undo", "t1->t2", "t1:undo t2:undo t3:wait", "undo"),
    ("undo-undo-undone", "t1->t2", "t1:undo t2:undone t3:wait", "undo"),
    ("undo-undo-wait", "t1->t2", "t1:undo t2:wait t3:wait", "wait"),
    ("undo-wait-undone", "t1->t2", "t1:wait t2:undone t3:wait", "wait"),
    # TestIsWaitingUndoMultipleDependencies
    ("undo-multi-1", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:undo t2:undo t3:undo t4:do t5:wait", "undo"),
    ("undo-multi-2", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:undo t2:undo t3:undone t4:do t5:wait", "undo"),
    ("undo-multi-3", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:undo t2:undo t3:error t4:wait-undone t5:wait", "wait"),
    ("undo-multi-4", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:undo t2:undo t3:wait-undone t4:error t5:wait", "wait"),
    ("undo-multi-5", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:wait t2:wait t3:undone t4:undo t5:wait", "undo"),
    ("undo-multi-6", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:wait t2:done t3:undone t4:undone t5:wait", "wait"),
    ("undo-multi-7", "t1->t3 t2->t3 t1->t4 t2->t4", "t1:wait t2:wait t3:undone t4:undone t5:wait", "wait"),
    # More: chains, independent runnable work, final tasks around a waiter.
    ("chain", "t1->t2 t2->t3", "t1:wait t2:do t3:do", "wait"),
    ("independent-do", "", "t1:wait t2:do", "do"),
    ("independent-undo", "", "t1:wait t2:undo", "undo"),
    ("one-branch-runnable", "t1->t3 t2->t4", "t1:wait t2:done t3:do t4:do", "do"),
    ("finals-around", "", "t1:wait t2:done t3:undone t4:error t5:hold", "wait"),
    # Only a waiting task blocks: a Do task behind a Hold one is not waiting.
    ("behind-hold", "t1->t2", "t1:hold t2:do t3:wait", "do"),
]


@pytest.mark.parametrize(("order", "setup", "expected"), [c[1:] for c in WAIT_CASES], ids=[c[0] for c in WAIT_CASES])
def test_wait_rule(st: State, order: str, setup: str, expected: str) -> None:
    names = [item.split(":")[0] for item in setup.split()]
    with st:
        chg = st.new_change("change", "...")
        tasks = make_tasks(st, chg, names)
        add_order(tasks, order)
        apply_setup(tasks, setup, names)
        assert chg.status is WORDS.get(expected, Status.WAIT), setup
    with st:  # the same after a commit, read back
        assert chg.status is WORDS.get(expected, Status.WAIT), setup


def test_wait_rule_follows_status_changes(st: State) -> None:
    """snapd's TestIsWaitingTwoTasks as one sequence on the same change."""
    with st:
        chg = st.new_change("change", "...")
        t1, t2, t3 = (st.new_task(f"task{i}", "...") for i in (1, 2, 3))
        t2.wait_for(t1)
        for t in (t1, t2, t3):
            chg.add_task(t)
        t3.set_to_wait(Status.DONE)
        assert chg.status is Status.DO
        t1.set_status(Status.DONE)
        assert chg.status is Status.DO
        t1.set_to_wait(Status.DONE)
        assert chg.status is Status.WAIT
        t1.set_status(Status.DONE)
        t2.set_to_wait(Status.DONE)
        assert chg.status is Status.WAIT
        t2.set_status(Status.DONE)
        t3.set_status(Status.DONE)
        assert chg.status is Status.DONE
        assert chg.is_ready()


def test_waiting_change_is_not_ready(st: State) -> None:
    with st:
        chg = st.new_change("change", "...")
        t = st.new_task("task", "...")
        chg.add_task(t)
        t.set_to_wait(Status.DONE)
        assert chg.status is Status.WAIT
        assert not chg.is_ready()
        assert chg.ready_time is None


# -- data --------------------------------------------------------------------------


def test_get_set_has(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        assert not chg.has("a")
        chg.set("a", 1)
        assert chg.has("a")
        assert chg.get("a") == 1
        chg.set("b", {"x": [1, 2]})
        assert chg.get("b") == {"x": [1, 2]}
        with pytest.raises(NoStateError) as info:
            chg.get("missing")
        assert isinstance(info.value, KeyError)
        assert chg.get("missing", 7) == 7
        chg.set("a", None)
        assert not chg.has("a")
        with pytest.raises(KeyError):
            chg.get("a")
    with st:
        assert chg.get("b") == {"x": [1, 2]}
        assert not chg.has("a")


def test_data_is_per_change(st: State) -> None:
    with st:
        c1 = st.new_change("install", "...")
        c2 = st.new_change("install", "...")
        c1.set("k", 1)
        st.set("k", 2)
        assert not c2.has("k")
        assert c1.get("k") == 1


@pytest.mark.parametrize(
    "value", [object(), math.nan, math.inf, {1, 2}, b"x"], ids=["object", "nan", "inf", "set", "bytes"]
)
def test_set_refuses_non_json_naming_the_key(st: State, value: Any) -> None:
    with st:
        chg = st.new_change("install", "...")
        chg.set("chg-key", "before")
        with pytest.raises(TypeError) as info:
            chg.set("chg-key", value)
        assert "chg-key" in str(info.value)
        assert chg.get("chg-key") == "before"


# -- tasks and lanes ---------------------------------------------------------------------


def test_add_task_and_tasks(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "1...")
        chg.add_task(t1)
        t2 = st.new_task("verify", "2...")
        chg.add_task(t2)
        assert chg.tasks() == [t1, t2]  # in the order they were added
        assert t1.change() == chg
        assert t2.change() == chg
    with st:
        assert chg.tasks() == [t1, t2]


def test_adding_a_task_to_a_second_change_raises(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "1...")
        chg.add_task(t1)
        chg2 = st.new_change("install", "...")
        with pytest.raises(EngineError):
            chg2.add_task(t1)
        assert t1.change() == chg
        assert chg2.tasks() == []
        assert chg.tasks() == [t1]


def test_add_all(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "1...")
        t2 = st.new_task("verify", "2...")
        chg.add_all(TaskSet(t1, t2))
        assert chg.tasks() == [t1, t2]
        assert t1.change() == chg
        assert t2.change() == chg
        assert chg.status is Status.DO


def test_lane_tasks(st: State) -> None:
    with st:
        chg = st.new_change("change", "...")
        lane1 = st.new_lane()
        lane2 = st.new_lane()
        t1, t2, t3, t4, t5, t6 = (st.new_task(f"task{i}", "...") for i in range(1, 7))
        t1.join_lane(lane1)
        t2.join_lane(lane1)
        t3.join_lane(lane2)
        t4.join_lane(lane1)
        t4.join_lane(lane2)
        for t in (t1, t2, t3, t4, t5, t6):
            chg.add_task(t)

        def ids(tasks: list[Task]) -> list[str]:
            return sorted(t.id for t in tasks)

        assert chg.lane_tasks() == []
        assert ids(chg.lane_tasks(0)) == ids([t5, t6])
        assert ids(chg.lane_tasks(0, lane2)) == ids([t3, t4, t5, t6])
        assert ids(chg.lane_tasks(lane1)) == ids([t1, t2, t4])
        assert ids(chg.lane_tasks(lane2)) == ids([t3, t4])
        assert ids(chg.lane_tasks(lane1, lane2)) == ids([t1, t2, t3, t4])
        assert chg.lane_tasks(99) == []
    with st:
        assert ids(chg.lane_tasks(lane1)) == ids([t1, t2, t4])
        assert ids(chg.lane_tasks(0)) == ids([t5, t6])


# -- abort ----------------------------------------------------------------------------------

ABORTED = {
    "do": Status.HOLD,
    "doing": Status.ABORT,
    "done": Status.UNDO,
    "wait": Status.UNDO,  # waiting to become Done: undo it
}


def test_abort(st: State) -> None:
    words = [*WORDS, "wait", "wait-undone"]
    with st:
        chg = st.new_change("install", "...")
        tasks = {}
        for word in words:
            t = st.new_task("download", word)
            set_word(t, word)
            chg.add_task(t)
            tasks[word] = t
        before = {word: t.status for word, t in tasks.items()}
        chg.abort()
        for word, t in tasks.items():
            assert t.status is ABORTED.get(word, before[word]), word
    with st:
        for word, t in tasks.items():
            assert t.status is ABORTED.get(word, before[word]), word


def test_abort_circular(st: State) -> None:
    with st:
        chg = st.new_change("circular", "...")
        t1 = st.new_task("one", "one")
        t2 = st.new_task("two", "two")
        t1.wait_for(t2)
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
        chg.abort()
        assert [t.status for t in chg.tasks()] == [Status.HOLD, Status.HOLD]


def test_abort_dense_graph(st: State) -> None:
    """snapd's TestAbortKⁿ, smaller: layers that wait for all of the previous one, many lanes."""
    n = 8
    with st:
        chg = st.new_change("Kn", "...")
        prev: TaskSet | None = None
        for _ in range(n):
            layer = TaskSet(*(st.new_task(f"task-{j}", "...") for j in range(n)))
            if prev is not None:
                layer.wait_all(prev)
            prev = layer
            chg.add_all(layer)
            for _ in range(n):
                lane = st.new_lane()
                ts = TaskSet(*(st.new_task(f"task-{lane}-{k}", "...") for k in range(n)))
                ts.wait_all(prev)
                ts.join_lane(lane)
                chg.add_all(ts)
        chg.abort()
        assert {t.status for t in chg.tasks()} == {Status.HOLD}
        assert chg.status is Status.HOLD


# Task wait order for the lane tables:
#
#             => t21 => t22
#           /               \
# t11 => t12                 => t41 => t42
#           \               /
#             => t31 => t32
LANE_NAMES = ["t11", "t12", "t21", "t22", "t31", "t32", "t41", "t42"]
LANE_ORDER = "t11->t12 t12->t21 t21->t22 t12->t31 t31->t32 t22->t41 t32->t41 t41->t42"

# snapd's abortLanesTests: (setup, lanes to abort, result).
ABORT_LANES = [
    ("*:do", [], "*:do"),
    ("*:do", [1], "*:do"),
    ("*:do", [0], "*:hold"),
    ("t11:done t12:doing t22:do", [0], "t11:undo t12:abort t22:hold"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [0], "*:do"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [1], "*:hold"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [2],
     "t21:hold t22:hold t41:hold t42:hold *:do"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [3],
     "t31:hold t32:hold t41:hold t42:hold *:do"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [2, 3],
     "t21:hold t22:hold t31:hold t32:hold t41:hold t42:hold *:do"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [4], "t41:hold t42:hold *:do"),
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [5], "*:do"),
    ("t11:do:2,3 t12:do:2,3 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [2],
     "t21:hold t22:hold t41:hold t42:hold *:do"),
    ("t11:do:2,3 t12:do:2,3 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [3],
     "t31:hold t32:hold t41:hold t42:hold *:do"),
    ("t11:do:2,3 t12:do:2,3 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4", [2, 3], "*:hold"),
    ("t41:error:4 t42:do:4 *:do:1", [1], "t41:error *:hold"),
    # A task waiting to become Done counts as Done: it is undone.
    ("t11:done:1 t12:wait:1 *:do:2", [1], "t11:undo t12:undo *:hold"),
]


@pytest.mark.parametrize(("setup", "lanes", "result"), ABORT_LANES, ids=[f"{s}|{a}" for s, a, _ in ABORT_LANES])
def test_abort_lanes(st: State, setup: str, lanes: list[int], result: str) -> None:
    with st:
        chg = st.new_change("install", "...")
        tasks = make_tasks(st, chg, LANE_NAMES)
        add_order(tasks, LANE_ORDER)
        apply_setup(tasks, setup, LANE_NAMES)
        chg.abort_lanes(lanes)
        obtained, expected = statuses(tasks, result, LANE_NAMES)
        assert obtained == expected, setup
    with st:
        obtained, expected = statuses(tasks, result, LANE_NAMES)
        assert obtained == expected, setup


# snapd's abortUnreadyLanesTests: (setup, order, result).
ABORT_UNREADY = [
    ("*:do", "", "*:hold"),
    ("*:done", "", "*:done"),
    ("*:error", "", "*:error"),
    # t11 (1) => t12 (1) => t21 (1) => t22 (1)
    # t31 (2) => t32 (2) => t41 (2) => t42 (2)
    ("t11:do:1 t12:do:1 t21:do:1 t22:do:1 t31:do:2 t32:do:2 t41:do:2 t42:do:2",
     "t11->t12 t12->t21 t21->t22 t31->t32 t32->t41 t41->t42", "*:hold"),
    ("t11:done:1 t12:done:1 t21:done:1 t22:done:1 t31:do:2 t32:do:2 t41:do:2 t42:do:2",
     "t11->t12 t12->t21 t21->t22 t31->t32 t32->t41 t41->t42",
     "t11:done t12:done t21:done t22:done t31:hold t32:hold t41:hold t42:hold"),
    ("t11:done:1 t12:done:1 t21:done:1 t22:done:1 t31:done:2 t32:done:2 t41:done:2 t42:do:2",
     "t11->t12 t12->t21 t21->t22 t31->t32 t32->t41 t41->t42",
     "t11:done t12:done t21:done t22:done t31:undo t32:undo t41:undo t42:hold"),
    # the diamond, t11 and t12 in lanes 2 and 3
    ("t11:do:2,3 t12:do:2,3 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t12->t31 t21->t22 t31->t32 t22->t41 t32->t41 t41->t42", "*:hold"),
    # lane 2 is fully complete so it does not get aborted
    ("t11:done:2,3 t12:done:2,3 t21:done:2 t22:done:2 t31:doing:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t12->t31 t21->t22 t31->t32 t22->t41 t32->t41 t41->t42",
     "t11:done t12:done t21:done t22:done t31:abort t32:hold t41:hold t42:hold *:undo"),
    ("t11:done:2,3 t12:done:2,3 t21:doing:2 t22:do:2 t31:doing:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t12->t31 t21->t22 t31->t32 t22->t41 t32->t41 t41->t42",
     "t21:abort t22:hold t31:abort t32:hold t41:hold t42:hold *:undo"),
    # four independent lanes
    ("t11:do:1 t12:do:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t21->t22 t31->t32 t41->t42", "*:hold"),
    ("t11:do:1 t12:do:1 t21:doing:2 t22:do:2 t31:done:3 t32:doing:3 t41:undone:4 t42:error:4",
     "t11->t12 t21->t22 t31->t32 t41->t42",
     "t11:hold t12:hold t21:abort t22:hold t31:undo t32:abort t41:undone t42:error"),
    # auto-refresh like: snapd (1) => base (2) => apps (3) and (4)
    ("t11:done:1 t12:done:1 t21:done:2 t22:done:2 t31:doing:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t21->t22 t22->t31 t22->t41 t31->t32 t41->t42",
     "t11:done t12:done t21:done t22:done t31:abort *:hold"),
    ("t11:done:1 t12:done:1 t21:done:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t21->t22 t22->t31 t22->t41 t31->t32 t41->t42",
     "t11:done t12:done t21:undo *:hold"),
    # the same with a cycle t32 -> t21
    ("t11:done:1 t12:done:1 t21:do:2 t22:do:2 t31:do:3 t32:do:3 t41:do:4 t42:do:4",
     "t11->t12 t12->t21 t21->t22 t22->t31 t22->t41 t31->t32 t41->t42 t32->t21",
     "t11:done t12:done *:hold"),
]


@pytest.mark.parametrize(("setup", "order", "result"), ABORT_UNREADY, ids=[str(i) for i in range(len(ABORT_UNREADY))])
def test_abort_unready_lanes(st: State, setup: str, order: str, result: str) -> None:
    with st:
        chg = st.new_change("install", "...")
        tasks = make_tasks(st, chg, LANE_NAMES)
        add_order(tasks, order)
        apply_setup(tasks, setup, LANE_NAMES)
        chg.abort_unready_lanes()
        obtained, expected = statuses(tasks, result, LANE_NAMES)
        assert obtained == expected, setup


# -- err -------------------------------------------------------------------------------------


def test_err(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "Download")
        t2 = st.new_task("activate", "Activate")
        chg.add_task(t1)
        chg.add_task(t2)
        assert chg.err() is None

        # t2 still to run: the change is not in Error yet.
        t1.set_status(Status.ERROR)
        assert chg.err() is None

        t2.set_status(Status.ERROR)
        err = chg.err()
        assert isinstance(err, ChangeError)
        assert isinstance(err, EngineError)
        assert str(err) == 'internal inconsistency: change "install" in ErrorStatus with no task errors logged'

        t1.logf("just information")
        t1.errorf("Download error")
        assert str(chg.err()) == "cannot perform the following tasks:\n- Download (Download error)"

        t2.errorf("Activate %s", "error")
        assert str(chg.err()) == (
            "cannot perform the following tasks:\n"
            "- Download (Download error)\n"
            "- Activate (Activate error)"
        )
    with st:
        assert str(chg.err()) == (
            "cannot perform the following tasks:\n"
            "- Download (Download error)\n"
            "- Activate (Activate error)"
        )


def test_err_lists_every_error_line_of_failed_tasks_only(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        failed = st.new_task("download", "Download foo")
        other = st.new_task("link", "Link foo")
        chg.add_task(failed)
        chg.add_task(other)
        failed.errorf("first %d", 1)
        failed.logf("info in between")
        failed.errorf("second")
        other.errorf("not reported: the task did not fail")
        other.set_status(Status.UNDONE)
        failed.set_status(Status.ERROR)
        assert chg.status is Status.ERROR
        assert str(chg.err()) == (
            "cannot perform the following tasks:\n"
            "- Download foo (first 1)\n"
            "- Download foo (second)"
        )


def test_err_with_explicit_error_status_and_no_tasks(st: State) -> None:
    with st:
        chg = st.new_change("remove", "...")
        chg.set_status(Status.ERROR)
        assert str(chg.err()) == 'internal inconsistency: change "remove" in ErrorStatus with no task errors logged'


def test_err_is_none_unless_error(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "Download")
        chg.add_task(t)
        t.errorf("boom")
        for word in ("do", "doing", "done", "undo", "undone", "hold", "abort"):
            set_word(t, word)
            assert chg.err() is None, word


# -- readiness, cleanliness, times ------------------------------------------------------------


def test_ready_when_all_tasks_are_ready(st: State, clock: FakeClock) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "...")
        t2 = st.new_task("download", "...")
        chg.add_task(t1)
        chg.add_task(t2)
        assert not chg.is_ready()
        clock.advance(10)
        t1.set_status(Status.DONE)
        assert not chg.is_ready()
        assert chg.ready_time is None
        clock.advance(10)
        t2.set_status(Status.ERROR)
        assert chg.is_ready()
        assert chg.ready_time == clock()
    with st:
        assert chg.is_ready()
        assert chg.ready_time == clock()


def test_spawn_and_ready_times_come_from_the_clock(st: State, clock: FakeClock) -> None:
    clock.set(datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        assert chg.spawn_time == datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        assert chg.spawn_time.tzinfo is not None
        assert chg.spawn_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert chg.ready_time is None
    clock.advance(hours=2)
    with st:
        t.set_status(Status.DONE)
        assert chg.ready_time == datetime(2031, 5, 6, 9, 8, 9, 123456, tzinfo=UTC)
        assert chg.spawn_time == datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def test_ready_time_is_not_moved_by_later_changes(st: State, clock: FakeClock) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        t.set_status(Status.DONE)
        first = chg.ready_time
        clock.advance(60)
        chg.set_status(Status.ERROR)
        assert chg.ready_time == first


def test_is_clean(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "1...")
        t2 = st.new_task("verify", "2...")
        chg.add_all(TaskSet(t1, t2))
        t1.set_status(Status.DONE)
        with pytest.raises(EngineError):
            t1.set_clean()  # the change is not ready
        assert not t1.is_clean()
        t2.set_status(Status.DONE)
        t1.set_clean()
        assert not chg.is_clean()
        t2.set_clean()
        assert chg.is_clean()
    with st:
        assert chg.is_clean()
        assert t1.is_clean() and t2.is_clean()


def test_state(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
    assert chg.state is st


# -- task dependencies ----------------------------------------------------------------------------

# snapd's cyclicDependencyTests: (tasks, order, error message, ids).
CYCLES = [
    ("t1", "", None, None),
    ("", "", None, None),
    ("t1 t2 t3", "", None, None),
    ("t1 t2 t3 t4", "t2->t3", None, None),
    ("t1 t2 t3 t4", "t1->t2 t1->t3 t2->t3 t1->t4 t2->t4 t3->t4", None, None),
    ("t1 t2", "t1->t2 t2->t1", "dependency cycle involving tasks [1:t1 2:t2]", ["1", "2"]),
    ("t1 t2 t3 t4 t5 t6 t7 t8", "t1->t2 t2->t3 t3->t4 t5->t6 t6->t7 t7->t8", None, None),
    ("t11 t12 t21 t22 t31 t32 t41 t42",
     "t11->t12 t12->t21 t12->t31 t21->t22 t31->t32 t22->t41 t32->t41 t41->t42", None, None),
    ("t11 t12 t21 t22 t31 t32 t41 t42", "t11->t12 t21->t22 t31->t32 t41->t42", None, None),
    ("t11 t12 t21 t22 t31 t32 t41 t42",
     "t11->t12 t12->t21 t21->t22 t22->t31 t22->t41 t31->t32 t41->t42", None, None),
    ("t11 t12 t21 t22 t31 t32 t41 t42",
     "t11->t12 t12->t21 t21->t22 t22->t31 t22->t41 t31->t32 t41->t42 t32->t21",
     "dependency cycle involving tasks [3:t21 4:t22 5:t31 6:t32 7:t41 8:t42]", ["3", "4", "5", "6", "7", "8"]),
    ("t1 t2 t3 t4 t5 t6 t7 t8",
     "t1->t2 t2->t3 t3->t4 t4->t6 t5->t6 t6->t7 t7->t8 t8->t2",
     "dependency cycle involving tasks [2:t2 3:t3 4:t4 6:t6 7:t7 8:t8]", ["2", "3", "4", "6", "7", "8"]),
    ("t1", "t1->t1", "dependency cycle involving tasks [1:t1]", ["1"]),
]


@pytest.mark.parametrize(("names", "order", "message", "ids"), CYCLES, ids=[str(i) for i in range(len(CYCLES))])
def test_check_task_dependencies(st: State, names: str, order: str, message: str | None,
                                 ids: list[str] | None) -> None:
    with st:
        chg = st.new_change("install", "...")
        tasks = {}
        for name in names.split():
            tasks[name] = st.new_task(name, name)
            chg.add_task(tasks[name])
        add_order(tasks, order)
        if message is None:
            chg.check_task_dependencies()
            return
        with pytest.raises(TaskDependencyCycleError) as info:
            chg.check_task_dependencies()
        assert str(info.value) == message
        assert info.value.ids == ids
        assert isinstance(info.value, EngineError)


def test_check_task_dependencies_ignores_edges_to_other_changes(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        other = st.new_change("other", "...")
        t1 = st.new_task("t1", "...")
        t2 = st.new_task("t2", "...")
        chg.add_task(t1)
        other.add_task(t2)
        t1.wait_for(t2)
        chg.check_task_dependencies()
        other.check_task_dependencies()


# -- wait_ready -------------------------------------------------------------------------------------


def test_wait_ready_returns_true_once_ready(file_st: State) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
    results: queue.SimpleQueue[bool] = queue.SimpleQueue()
    started = threading.Event()

    def waiter() -> None:
        started.set()
        results.put(chg.wait_ready(WAIT))

    th = threading.Thread(target=waiter)
    th.start()
    assert started.wait(WAIT)
    with st:
        t.set_status(Status.DONE)
    assert results.get(timeout=WAIT) is True
    th.join(WAIT)


def test_wait_ready_after_explicit_status(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
    results: queue.SimpleQueue[bool] = queue.SimpleQueue()
    th = threading.Thread(target=lambda: results.put(chg.wait_ready(WAIT)))
    th.start()
    with st:
        chg.set_status(Status.DONE)
    assert results.get(timeout=WAIT) is True
    th.join(WAIT)


def test_wait_ready_times_out(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        chg.add_task(st.new_task("download", "..."))
    assert chg.wait_ready(0.05) is False


def test_wait_ready_returns_at_once_when_already_ready(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        t.set_status(Status.DONE)
    assert chg.wait_ready(0) is True
    assert chg.wait_ready() is True


def test_wait_ready_with_the_lock_held_raises(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        with pytest.raises(RuntimeError):
            chg.wait_ready(0)


def test_wait_ready_not_woken_by_a_rolled_back_unit(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
    with pytest.raises(ZeroDivisionError), st:
        t.set_status(Status.DONE)
        1 / 0  # noqa: B018 - the rollback is the point
    assert chg.wait_ready(0.05) is False
    with st:
        assert not chg.is_ready()
        assert chg.status is Status.DO


# -- the lock ------------------------------------------------------------------------------------------


CHANGE_CALLS = {
    "id": lambda c, t: c.id,
    "kind": lambda c, t: c.kind,
    "summary": lambda c, t: c.summary,
    "status": lambda c, t: c.status,
    "set_status": lambda c, t: c.set_status(Status.DONE),
    "get": lambda c, t: c.get("a"),
    "set": lambda c, t: c.set("a", 1),
    "has": lambda c, t: c.has("a"),
    "add_task": lambda c, t: c.add_task(t),
    "add_all": lambda c, t: c.add_all(TaskSet(t)),
    "tasks": lambda c, t: c.tasks(),
    "lane_tasks": lambda c, t: c.lane_tasks(0),
    "abort": lambda c, t: c.abort(),
    "abort_lanes": lambda c, t: c.abort_lanes([0]),
    "abort_unready_lanes": lambda c, t: c.abort_unready_lanes(),
    "err": lambda c, t: c.err(),
    "is_ready": lambda c, t: c.is_ready(),
    "is_clean": lambda c, t: c.is_clean(),
    "spawn_time": lambda c, t: c.spawn_time,
    "ready_time": lambda c, t: c.ready_time,
    "check_task_dependencies": lambda c, t: c.check_task_dependencies(),
}


@pytest.mark.parametrize("call", list(CHANGE_CALLS.values()), ids=list(CHANGE_CALLS))
def test_change_methods_need_the_lock(st: State, call: Any) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
    with pytest.raises(RuntimeError):
        call(chg, t)
    with st:
        assert chg.tasks() == []
        assert not chg.has("a")
        assert chg.status is Status.HOLD
        assert not chg.is_ready()


def test_a_ready_change_without_tasks_is_clean_and_settle_converges(tmp_path: Path) -> None:
    """snapd's IsClean: every task is clean, so a change with none is clean once ready."""
    from engine import Overlord

    o = Overlord(tmp_path / "state.db")
    try:
        with o.state:
            chg = o.state.new_change("empty", "nothing to do")
            chg.set_status(Status.DONE)
            assert chg.is_ready() and chg.is_clean()
        o.settle(30)
        with o.state:
            again = o.state.change(chg.id)
            assert again is not None and again.is_clean()
    finally:
        o.stop()
