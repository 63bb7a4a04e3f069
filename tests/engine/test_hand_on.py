# SPDX-License-Identifier: GPL-3.0-or-later
"""Hand-on: under an Overlord's loop, the outcome of a task and the claim of the next one of a chain
are one transaction, and the next task starts without an ensure pass in between (docs/runner.md).

Driven by hand (ensure() and wait()) a runner still runs one step per pass: tests/engine/test_taskrunner.py.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from engine import Change, Overlord, Status, Task, Wait
from engine.tomb import Tomb
from tests.support.helpers import count_writes

TIMEOUT = 30.0


def chain(o: Overlord, kind: str, n: int) -> Change:
    st = o.state
    with st:
        chg = st.new_change("chain", f"{n} chained tasks")
        prev = None
        for i in range(n):
            t = st.new_task(kind, f"step {i + 1}")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
    return chg


def test_a_chain_never_shows_its_change_between_two_steps(overlord: Overlord, tmp_path: Path) -> None:
    """The stored change goes Do -> Doing -> Done: never Do between two steps; one change-update notice each way."""
    o = overlord
    stored: list[str] = []
    reader = sqlite3.connect(tmp_path / "state.db", check_same_thread=False)

    def step(task: Task, tomb: Tomb) -> None:
        stored.extend(row[0] for row in reader.execute("SELECT status FROM changes"))

    o.task_runner.add_handler("step", step)
    chg = chain(o, "step", 20)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    reader.close()
    with o.state:
        assert chg.status is Status.DONE
        (notice,) = o.state.notices(types=["change-update"], keys=[chg.id])
    assert stored == ["Doing"] * 20
    assert notice.occurrences == 3  # spawned, Doing, Done


class Passes:
    """Passes is a manager that counts the loop's ensure passes."""

    def __init__(self) -> None:
        self.count = 0

    def ensure(self) -> None:
        self.count += 1


def test_the_next_step_starts_without_an_ensure_pass(overlord: Overlord) -> None:
    """Each step is claimed by the commit of the step before: the loop passes only at the start and the end."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    during: list[int] = []
    o.task_runner.add_handler("step", lambda task, tomb: during.append(passes.count))
    chg = chain(o, "step", 20)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    assert len(during) == 20
    assert during[-1] - during[0] <= 2, during  # (a pass woken by the submit's commit may still come)


def test_a_blocked_predicate_still_holds_back_the_next_step(overlord: Overlord) -> None:
    o = overlord
    release = threading.Event()
    asked = threading.Event()

    def blocked(task: Task, running: list[Task]) -> bool:
        if task.summary == "step 3" and not release.is_set():
            asked.set()
            return True
        return False

    o.task_runner.add_handler("step", lambda task, tomb: None)
    o.task_runner.add_blocked(blocked)
    chg = chain(o, "step", 4)
    o.loop()
    assert asked.wait(TIMEOUT)
    with o.state:
        statuses = [t.status for t in chg.tasks()]
    assert statuses[2] is Status.DO and statuses[3] is Status.DO
    release.set()
    with o.state:
        o.state.ensure_before(0)
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE


def test_a_wait_in_a_chain_is_not_handed_on(overlord: Overlord) -> None:
    """A step that waits (Wait) stops the chain there; the change shows Wait."""
    o = overlord

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            summary = task.summary
        if summary == "step 2":
            raise Wait(reason="waiting for a reboot")

    o.task_runner.add_handler("step", do)
    chg = chain(o, "step", 3)
    waited = threading.Event()
    with o.state:
        o.state.add_change_status_changed_handler(lambda c, old, new: waited.set() if new is Status.WAIT else None)
    o.loop()
    assert waited.wait(TIMEOUT)
    with o.state:
        assert [t.status for t in chg.tasks()] == [Status.DONE, Status.WAIT, Status.DO]


def test_a_chain_of_sync_and_async_steps_is_handed_on(overlord: Overlord) -> None:
    """Async handlers report to the recorder thread: their outcomes hand on too, and sync ones run after them."""
    o = overlord
    ran: list[str] = []

    def sync_step(task: Task, tomb: Tomb) -> None:
        ran.append("sync")

    async def async_step(task: Task, tomb: Tomb) -> None:
        ran.append("async")

    o.task_runner.add_handler("sync", sync_step)
    o.task_runner.add_handler("async", async_step)
    st = o.state
    with st:
        chg = st.new_change("chain", "sync and async steps in turn")
        prev = None
        for i in range(10):
            t = st.new_task("async" if i % 2 else "sync", f"step {i + 1}")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with st:
        assert chg.status is Status.DONE
        (notice,) = st.notices(types=["change-update"], keys=[chg.id])
    assert ran == ["sync", "async"] * 5
    assert notice.occurrences == 3


def _add_next(task: Task, n: int) -> None:
    """_add_next adds to task's change the next step of a chain of n, waiting for task (a handler's spawn)."""
    st = task.state
    with st:
        i = task.get("i")
        if i + 1 < n:
            nxt = st.new_task(task.kind, f"step {i + 2}")
            nxt.set("i", i + 1)
            nxt.wait_for(task)
            chg = task.change()
            assert chg is not None
            chg.add_task(nxt)


def _first_step(o: Overlord, kind: str) -> Change:
    st = o.state
    with st:
        chg = st.new_change("spawn", "each step adds the next")
        t = st.new_task(kind, "step 1")
        t.set("i", 0)
        chg.add_task(t)
    return chg


def test_a_step_added_by_the_handler_before_it_starts_without_an_ensure_pass(overlord: Overlord) -> None:
    """A handler adds the next step after itself: its commit does not wake the loop, its outcome hands the step on."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    during: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        _add_next(task, 20)

    o.task_runner.add_handler("step", step)
    chg = _first_step(o, "step")
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
        assert [t.summary for t in chg.tasks()] == [f"step {i + 1}" for i in range(20)]
        assert all(t.status is Status.DONE for t in chg.tasks())
    assert len(during) == 20
    assert during[-1] - during[0] <= 2, during


def test_a_step_added_by_a_handler_that_then_fails_is_held(overlord: Overlord) -> None:
    """The added step waits for its handler's outcome: an error holds it, as any task waiting for a failed one."""
    o = overlord

    def step(task: Task, tomb: Tomb) -> None:
        _add_next(task, 3)
        raise RuntimeError("broken")

    o.task_runner.add_handler("step", step)
    chg = _first_step(o, "step")
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.ERROR
        assert [t.status for t in chg.tasks()] == [Status.ERROR, Status.HOLD]


def test_a_step_added_by_a_handler_runs_under_settle(overlord: Overlord) -> None:
    """Without the loop's hand-on (settle), the outcome of the handler's task asks for the pass that runs the step."""
    o = overlord
    ran: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        with task.state:
            ran.append(task.get("i"))
        _add_next(task, 5)

    o.task_runner.add_handler("step", step)
    chg = _first_step(o, "step")
    o.settle(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    assert ran == [0, 1, 2, 3, 4]


def test_a_step_added_by_a_handler_after_a_task_not_yet_running_wakes_the_loop(overlord: Overlord) -> None:
    """Only a step after a running task waits for its outcome; one added after a task in Do starts that task at once."""
    o = overlord
    ran: list[str] = []
    done = threading.Event()

    def first(task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            chg = st.new_change("other", "added by a handler")
            a = st.new_task("second", "a")
            b = st.new_task("second", "b")
            b.wait_for(a)
            chg.add_task(a)
            chg.add_task(b)
        assert done.wait(TIMEOUT)  # the handler is still running when the new change runs

    def second(task: Task, tomb: Tomb) -> None:
        with task.state:
            ran.append(task.summary)
        if len(ran) == 2:
            done.set()

    o.task_runner.add_handler("first", first)
    o.task_runner.add_handler("second", second)
    chg = _first_step(o, "first")
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    assert ran == ["a", "b"]


def _add_next_and_finish(task: Task, n: int, ran: list[int]) -> None:
    """_add_next_and_finish adds the next step of a chain of n, and sets task Done, in one block (self-finishing)."""
    st = task.state
    with st:
        i = task.get("i")
        ran.append(i)
        if i + 1 < n:
            nxt = st.new_task(task.kind, f"step {i + 2}")
            nxt.set("i", i + 1)
            nxt.wait_for(task)
            chg = task.change()
            assert chg is not None
            chg.add_task(nxt)
        task.set_status(Status.DONE)


def test_a_self_finishing_handler_hands_its_next_step_on_without_an_ensure_pass(overlord: Overlord) -> None:
    """A handler that adds the next step and sets its own task Done in one block: its outcome hands the step on."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    during: list[int] = []
    ran: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        _add_next_and_finish(task, 20, ran)

    o.task_runner.add_handler("step", step)
    chg = _first_step(o, "step")
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
        assert all(t.status is Status.DONE for t in chg.tasks())
    assert ran == list(range(20))
    assert during[-1] - during[0] <= 2, during


def test_a_self_finishing_chain_built_up_front_is_handed_on(overlord: Overlord) -> None:
    """Each step of a prebuilt chain sets its own task Done: one pass at the start, none between the steps."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    during: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        with task.state:
            task.set_status(Status.DONE)

    o.task_runner.add_handler("step", step)
    chg = chain(o, "step", 20)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert all(t.status is Status.DONE for t in chg.tasks())
    assert len(during) == 20
    assert during[-1] - during[0] <= 2, during


def test_a_handler_finishing_another_task_too_wakes_the_loop(overlord: Overlord) -> None:
    """Only a handler's own Done waits for its outcome: Done given to another task wakes the loop at the commit."""
    o = overlord
    started = threading.Event()
    release = threading.Event()

    def first(task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            chg = task.change()
            assert chg is not None
            other = next(t for t in chg.tasks() if t.summary == "other")
            other.set_status(Status.DONE)
            task.set_status(Status.DONE)
        assert started.wait(TIMEOUT)  # the step after "other" runs while this handler still runs
        release.set()

    def after(task: Task, tomb: Tomb) -> None:
        started.set()

    o.task_runner.add_handler("first", first)
    o.task_runner.add_handler("other", lambda task, tomb: None)
    o.task_runner.add_handler("after", after)
    st = o.state
    with st:
        chg = st.new_change("two", "a handler finishes another task")
        a = st.new_task("first", "first")
        gate = st.new_task("first", "gate")  # keeps "other" from running before the first handler
        b = st.new_task("other", "other")
        c = st.new_task("after", "after")
        b.wait_for(gate)
        c.wait_for(b)
        gate.wait_for(a)
        for t in (a, gate, b, c):
            chg.add_task(t)
    o.loop()
    assert release.wait(TIMEOUT)
    assert chg.wait_ready(TIMEOUT)


def test_a_self_finishing_chain_syncs_one_commit_a_step(overlord: Overlord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's block is the step's one synced commit; its outcome (the run's time, the next claim) is relaxed."""
    o = overlord
    writes = count_writes(o.state, monkeypatch)  # per write transaction: relaxed (committed without its own sync)
    ran: list[int] = []
    marks: list[int] = []  # the write transactions begun before each step's handler started

    def step(task: Task, tomb: Tomb) -> None:
        marks.append(len(writes))
        _add_next_and_finish(task, 20, ran)

    o.task_runner.add_handler("step", step)
    chg = _first_step(o, "step")
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    assert ran == list(range(20))
    between = writes[marks[0]:marks[-1]]  # from the first step's start to the last's
    shown = "".join("r" if relaxed else "S" for relaxed in between)
    assert between.count(False) <= 19 + 1, shown  # each step's own block (one more of the loop's at most)


def test_a_self_finishing_async_handler_is_handed_on(overlord: Overlord) -> None:
    """An async handler's own Done is known by its asyncio task's context: its outcome hands the next step on."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    during: list[int] = []

    async def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        with task.state:
            task.set_status(Status.DONE)

    o.task_runner.add_handler("step", step)
    chg = chain(o, "step", 10)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert all(t.status is Status.DONE for t in chg.tasks())
    assert len(during) == 10
    assert during[-1] - during[0] <= 2, during
