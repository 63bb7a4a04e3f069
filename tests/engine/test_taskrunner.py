# SPDX-License-Identifier: GPL-3.0-or-later
"""TaskRunner behaviour, after snapd's overlord/state/taskrunner_test.go.

The runner is driven by hand with ensure() and wait(), as snapd's tests do;
the `ensures` fixture stands in for the Overlord and records what the runner
asks for with st.ensure_before().
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Retry, State, Status, Task, TaskRunner, Wait
from engine.testing import FakeClock, drive
from engine.tomb import Tomb
from tests.support.ensure import EnsureRecorder
from tests.support.helpers import one_task_change, task_of

TIMEOUT = 30.0  # generous: the machine is shared; only a hang ever reaches it


# -- helpers -------------------------------------------------------------------


@pytest.fixture
def make_runner(st: State) -> Iterator[Callable[..., TaskRunner]]:
    """make_runner builds TaskRunners that are stopped after the test."""
    made: list[TaskRunner] = []

    def make(state: State | None = None, **kw: Any) -> TaskRunner:
        runner = TaskRunner(state if state is not None else st, **kw)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def run_quiet(runner: TaskRunner, ensures: EnsureRecorder, rounds: int = 30) -> int:
    """run_quiet runs ensure+wait while the runner keeps asking for an immediate pass."""
    for n in range(1, rounds + 1):
        ensures.reset()
        runner.ensure()
        runner.wait()
        if ensures.earliest is None or ensures.earliest > 0:
            return n
    pytest.fail(f"the runner still asks for passes after {rounds} rounds")


def drain(events: queue.SimpleQueue[str]) -> list[str]:
    out = []
    while not events.empty():
        out.append(events.get())
    return out


def statuses(st: State, chg_id: str) -> dict[str, Status]:
    with st:
        chg = st.change(chg_id)
        assert chg is not None
        return {t.summary: t.status for t in chg.tasks()}


def noop(task: Task, tomb: Tomb) -> None:
    return None






# -- abort across lanes (snapd's tables) --------------------------------------------

# Each case: the task names, wait-for edges (task, waits-for), lanes, the failing
# task, and the expected handler calls in groups: a list is a strict order, a set
# is a group whose members run in one round in any order.
LANE_CASES = [
    pytest.param(
        "t11 t12 t13 t14 t15 t21 t22 t23 t24 t25",
        [("t12", "t11"), ("t13", "t12"), ("t14", "t13"), ("t15", "t14"),
         ("t22", "t21"), ("t23", "t22"), ("t24", "t23"), ("t25", "t24"),
         ("t13", "t22"), ("t15", "t24"), ("t23", "t14")],
        {1: "t11 t12 t13 t14 t15 t23 t24", 2: "t21 t22 t23 t24 t25 t13 t14"},
        "t15",
        [{"t11:do", "t12:do", "t21:do", "t22:do"},
         ["t13:do", "t14:do", "t23:do", "t24:do"],
         {"t25:do", "t15:error"},
         {"t25:undo"},
         ["t24:undo", "t23:undo", "t14:undo", "t13:undo"],
         {"t21:undo", "t22:undo", "t12:undo", "t11:undo"}],
        id="descendant-task",
    ),
    pytest.param(
        "t11 t12 t13 t14 t21 t22 t23 t24",
        [("t12", "t11"), ("t13", "t12"), ("t14", "t13"),
         ("t22", "t21"), ("t23", "t22"), ("t24", "t23"),
         ("t13", "t22"), ("t23", "t14")],
        {1: "t11 t12 t13 t14 t23 t24", 2: "t21 t22 t23 t24 t13 t14"},
        "t24",
        [{"t11:do", "t12:do", "t21:do", "t22:do"},
         ["t13:do", "t14:do", "t23:do", "t24:error"],
         ["t23:undo", "t14:undo", "t13:undo"],
         {"t21:undo", "t22:undo", "t12:undo", "t11:undo"}],
        id="strictly-ordered",
    ),
]


@pytest.mark.parametrize(("names", "edges", "lanes", "failing", "expected"), LANE_CASES)
def test_abort_across_lanes(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner],
                            names: str, edges: list[tuple[str, str]], lanes: dict[int, str], failing: str,
                            expected: list[list[str] | set[str]]) -> None:
    events: queue.SimpleQueue[str] = queue.SimpleQueue()

    def do(task: Task, tomb: Tomb) -> None:
        with st:
            label = task.summary
        if label == failing:
            events.put(f"{label}:error")
            raise RuntimeError("mock error")
        events.put(f"{label}:do")

    def undo(task: Task, tomb: Tomb) -> None:
        with st:
            events.put(f"{task.summary}:undo")

    runner = make_runner()
    runner.add_handler("do", do, undo)
    with st:
        assert st.tasks() == []
        chg = st.new_change("install", "...")
        tasks = {name: st.new_task("do", name) for name in names.split()}
        for t in tasks.values():
            chg.add_task(t)
        for waiter, waited in edges:
            tasks[waiter].wait_for(tasks[waited])
        for lane, members in lanes.items():
            for name in members.split():
                tasks[name].join_lane(lane)
        chg_id = chg.id

    drive(runner, st, chg_id)

    seen = drain(events)
    assert len(seen) == sum(len(group) for group in expected), seen
    i = 0
    for group in expected:
        got = seen[i:i + len(group)]
        if isinstance(group, set):
            assert set(got) == group, f"calls {i}..: {seen}"
        else:
            assert got == group, f"calls {i}..: {seen}"
        i += len(group)
    want = {name: Status.UNDONE for name in names.split()}
    want[failing] = Status.ERROR
    assert statuses(st, chg_id) == want
    with st:
        assert st.change(chg_id).status is Status.ERROR  # type: ignore[union-attr]


# -- aborting running tasks ---------------------------------------------------------


def test_external_abort(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    """An abort while the handler runs kills its tomb (or the change would never end)."""
    started = threading.Event()

    def blocking(task: Task, tomb: Tomb) -> None:
        started.set()
        assert tomb.wait_dying(TIMEOUT), "tomb never died"

    runner = make_runner()
    runner.add_handler("blocking", blocking)
    chg_id, tid = one_task_change(st, "blocking")
    runner.ensure()
    assert started.wait(TIMEOUT)
    with st:
        st.change(chg_id).abort()  # type: ignore[union-attr]
    drive(runner, st, chg_id)
    with st:
        # It returned normally: it was done, and with nothing to undo it stays Done.
        assert task_of(st, tid).status is Status.DONE
        assert st.change(chg_id).is_ready()  # type: ignore[union-attr]


def test_tomb_dying_is_an_event_whoever_asks_first() -> None:
    """tomb.dying is a threading.Event set by kill, whether it is asked for before or after (API.md)."""
    asked_before, asked_after = Tomb(), Tomb()
    event = asked_before.dying
    assert not event.is_set() and not asked_before.is_dying()
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: event.wait(TIMEOUT) and woke.set())
    waiter.start()
    asked_before.kill()
    waiter.join(TIMEOUT)
    assert woke.is_set() and asked_before.dying is event and asked_before.is_dying()
    asked_after.kill()
    asked_after.kill()  # idempotent
    assert asked_after.dying.is_set() and asked_after.dying.wait(0) and asked_after.wait_dying(0)
    assert asked_after.dying is asked_after.dying
    assert repr(asked_after) == "<Tomb dying>" and repr(Tomb()) == "<Tomb alive>"


@pytest.mark.parametrize("has_undo", [True, False], ids=["with-undo", "no-undo"])
def test_abort_stops_running_task_in_flight(st: State, ensures: EnsureRecorder,
                                            make_runner: Callable[..., TaskRunner], has_undo: bool) -> None:
    """A handler stopped in flight (Retry on a dying tomb) is undone, or held when it cannot be."""
    started = threading.Event()
    calls: queue.SimpleQueue[str] = queue.SimpleQueue()

    def do(task: Task, tomb: Tomb) -> None:
        calls.put("do")
        started.set()
        assert tomb.wait_dying(TIMEOUT), "tomb never died"
        calls.put("do-dying")
        raise Retry()

    def undo(task: Task, tomb: Tomb) -> None:
        calls.put("undo")

    runner = make_runner()
    runner.add_handler("stoppable", do, undo if has_undo else None)
    chg_id, tid = one_task_change(st, "stoppable")
    runner.ensure()
    assert started.wait(TIMEOUT)
    with st:
        st.change(chg_id).abort()  # type: ignore[union-attr]
        assert task_of(st, tid).status is Status.ABORT
    drive(runner, st, chg_id)
    with st:
        if has_undo:
            assert drain(calls) == ["do", "do-dying", "undo"]
            assert task_of(st, tid).status is Status.UNDONE
        else:
            assert drain(calls) == ["do", "do-dying"]
            assert task_of(st, tid).status is Status.HOLD
        assert st.change(chg_id).is_ready()  # type: ignore[union-attr]


def test_done_task_without_undo_stays_done(st: State, ensures: EnsureRecorder,
                                           make_runner: Callable[..., TaskRunner]) -> None:
    calls: queue.SimpleQueue[str] = queue.SimpleQueue()

    def do(task: Task, tomb: Tomb) -> None:
        with st:
            calls.put(f"do:{task.summary}")

    def fail(task: Task, tomb: Tomb) -> None:
        calls.put("fail")
        raise RuntimeError("boom")

    runner = make_runner()
    runner.add_handler("no-undo", do)
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("no-undo", "t1")
        t2 = st.new_task("fail", "t2")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
        chg_id = chg.id
    drive(runner, st, chg_id)
    assert drain(calls) == ["do:t1", "fail"]
    assert statuses(st, chg_id) == {"t1": Status.DONE, "t2": Status.ERROR}
    with st:
        assert st.change(chg_id).status is Status.ERROR  # type: ignore[union-attr]


def test_undo_single_lane(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    """snapd's TestUndoSingleLane: handlers that set their own status race with the abort."""

    def slow(task: Task, tomb: Tomb) -> None:
        time.sleep(0.005)
        with st:
            task.set_status(Status.DONE)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("fail")

    runner = make_runner()
    runner.add_handler("noop", noop, noop)
    runner.add_handler("noop-slow", slow, noop)
    runner.add_handler("fail", fail)
    with st:
        lane = st.new_lane()
        chg = st.new_change("install", "...")
        prev: Task | None = None
        for kind in ["noop-slow"] * 10 + ["noop"] * 10 + ["fail"]:
            t = st.new_task(kind, "...")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            t.join_lane(lane)
            prev = t
        chg_id = chg.id

    # Ensure as the Overlord's loop would, without waiting for the handlers.
    deadline = time.monotonic() + TIMEOUT
    while True:
        runner.ensure()
        with st:
            chg = st.change(chg_id)
            assert chg is not None
            if chg.is_ready() and chg.is_clean():
                break
        assert time.monotonic() < deadline, f"change stuck: {statuses(st, chg_id)}"
        time.sleep(0.001)
    runner.wait()
    with st:
        for t in st.tasks():
            if t.kind == "fail":
                assert t.status is Status.ERROR
            else:
                assert t.status in (Status.UNDONE, Status.HOLD), (t.id, t.kind, t.status)


def test_premature_change_ready(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    """A change whose undo is still running is not ready and has no error yet."""
    in_undo = threading.Event()
    release = threading.Event()

    def block_undo(task: Task, tomb: Tomb) -> None:
        in_undo.set()
        assert release.wait(TIMEOUT)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("BAM")

    runner = make_runner()
    runner.add_handler("block-undo", noop, block_undo)
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        chg.add_task(st.new_task("block-undo", "..."))
        chg.add_task(st.new_task("fail", "..."))
        chg_id = chg.id
    try:
        runner.ensure()  # error
        runner.wait()
        runner.ensure()  # block on undo
        assert in_undo.wait(TIMEOUT)
        with st:
            chg = st.change(chg_id)
            assert chg is not None
            assert not chg.is_ready()
            assert not chg.status.ready
            assert chg.err() is None
        assert chg.wait_ready(0) is False
    finally:
        release.set()
        runner.wait()
    with st:
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.is_ready()
        assert chg.status is Status.ERROR
        assert "BAM" in str(chg.err())


# -- stopping ------------------------------------------------------------------------


def _block_then(outcome: Callable[[], None], started: threading.Event) -> Callable[[Task, Tomb], None]:
    def handler(task: Task, tomb: Tomb) -> None:
        started.set()
        assert tomb.wait_dying(TIMEOUT), "tomb never died"
        outcome()

    return handler


def test_stop_handler_just_finishing(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()
    runner = make_runner()
    runner.add_handler("just-finish", _block_then(lambda: None, started))
    _, tid = one_task_change(st, "just-finish")
    runner.ensure()
    assert started.wait(TIMEOUT)
    runner.stop()
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DONE
        assert t.doing_time > timedelta(0)
        assert t.undoing_time == timedelta(0)


def test_stop_kinds(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    started1, started2 = threading.Event(), threading.Event()
    runner = make_runner()
    runner.add_handler("just-finish1", _block_then(lambda: None, started1))
    runner.add_handler("just-finish2", _block_then(lambda: None, started2))
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("just-finish1", "...")
        t2 = st.new_task("just-finish2", "...")
        chg.add_task(t1)
        chg.add_task(t2)
    runner.ensure()
    assert started1.wait(TIMEOUT)
    assert started2.wait(TIMEOUT)
    runner.stop_kinds("just-finish1")
    with st:
        assert t1.status is Status.DONE
        assert t2.status is Status.DOING
    runner.stop()
    with st:
        assert t2.status is Status.DONE


def test_errors_on_stop_are_retried(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()

    def error() -> None:
        raise RuntimeError("error at stop")

    runner = make_runner()
    runner.add_handler("error-on-stop", _block_then(error, started))
    chg_id, tid = one_task_change(st, "error-on-stop")
    runner.ensure()
    assert started.wait(TIMEOUT)
    runner.stop()
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DOING  # still Doing: it runs again at the next start
        assert not any("ERROR" in line for line in t.log())
        assert st.change(chg_id).err() is None  # type: ignore[union-attr]


def test_stop_ask_for_retry(st: State, clock: FakeClock, make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()

    def retry() -> None:
        raise Retry(after=120)

    runner = make_runner()
    runner.add_handler("ask-for-retry", _block_then(retry, started))
    _, tid = one_task_change(st, "ask-for-retry")
    runner.ensure()
    assert started.wait(TIMEOUT)
    now = clock()
    runner.stop()
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DOING
        assert t.at_time == now + timedelta(minutes=2)


def test_stop_kills_every_tomb_and_waits(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    n = 4
    started: queue.SimpleQueue[str] = queue.SimpleQueue()
    returned: list[str] = []
    lock = threading.Lock()

    def handler(task: Task, tomb: Tomb) -> None:
        with st:
            name = task.summary
        started.put(name)
        assert tomb.wait_dying(TIMEOUT)
        time.sleep(0.01)  # returns a little after its tomb died: stop() must wait for it
        with lock:
            returned.append(name)
        raise RuntimeError("interrupted")

    runner = make_runner()
    runner.add_handler("long", handler)
    with st:
        chg = st.new_change("install", "...")
        for i in range(n):
            chg.add_task(st.new_task("long", f"t{i}"))
        chg_id = chg.id
    runner.ensure()
    for _ in range(n):
        started.get(timeout=TIMEOUT)
    runner.stop()
    with lock:
        assert sorted(returned) == [f"t{i}" for i in range(n)]
    assert set(statuses(st, chg_id).values()) == {Status.DOING}
    # A stopped runner starts nothing.
    runner.ensure()
    assert started.empty()


def test_stop_is_bounded_when_handler_ignores_its_tomb(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def stubborn(task: Task, tomb: Tomb) -> None:
        started.set()
        try:
            release.wait(TIMEOUT * 2)
        finally:
            finished.set()

    runner = make_runner(stop_timeout=0.5)
    runner.add_handler("stubborn", stubborn)
    _, tid = one_task_change(st, "stubborn")
    runner.ensure()
    assert started.wait(TIMEOUT)
    stopper = threading.Thread(target=runner.stop, daemon=True)
    try:
        stopper.start()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive(), "stop() did not return within its bound"
        assert not finished.is_set()  # stop returned while the handler still ran
        with st:
            assert task_of(st, tid).status is Status.DOING  # it runs again at the next start
    finally:
        release.set()
    assert finished.wait(TIMEOUT)


# -- retry ---------------------------------------------------------------------------


def test_retry_after_duration(st: State, clock: FakeClock, ensures: EnsureRecorder,
                              make_runner: Callable[..., TaskRunner]) -> None:
    asked = []

    def handler(task: Task, tomb: Tomb) -> None:
        asked.append(1)
        if len(asked) == 1:
            raise Retry(after=60)

    runner = make_runner()
    runner.add_handler("ask-for-retry", handler)
    _, tid = one_task_change(st, "ask-for-retry")
    t0 = clock()
    runner.ensure()  # runs, and is rescheduled in a minute
    runner.wait()
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DOING
        assert len(asked) == 1
        assert ensures.earliest == 60
        schedule = t.at_time
        assert schedule == t0 + timedelta(minutes=1)

    clock.advance(5)
    ensures.reset()
    runner.ensure()  # too soon
    runner.wait()
    with st:
        assert t.status is Status.DOING
        assert len(asked) == 1
        assert ensures.earliest == 55
        assert t.at_time == schedule

    clock.set(schedule)
    ensures.reset()
    runner.ensure()  # time to run again
    runner.wait()
    with st:
        assert t.status is Status.DONE
        assert len(asked) == 2
        assert ensures.requests == []
        assert t.at_time is None


def test_retry_reason_is_logged_and_attempts_count(st: State, ensures: EnsureRecorder,
                                                   make_runner: Callable[..., TaskRunner]) -> None:
    calls = []

    def handler(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise Retry(reason=f"not yet ({len(calls)})")

    runner = make_runner()
    runner.add_handler("patient", handler)
    _, tid = one_task_change(st, "patient")
    for attempt in (1, 2, 3):
        runner.ensure()
        runner.wait()
        with st:
            t = task_of(st, tid)
            assert t.status is Status.DOING
            assert t.attempts == attempt
            assert t.at_time is None  # Retry(after=0): the next ensure
    runner.ensure()
    runner.wait()
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DONE
        assert t.attempts == 3
        logs = t.log()
        assert [line.split(" ", 2)[1] for line in logs] == ["INFO"] * 3
        assert [line.split(" ", 2)[2] for line in logs] == ["not yet (1)", "not yet (2)", "not yet (3)"]
    assert len(calls) == 4


# -- blocked predicates ---------------------------------------------------------------


def _only_one_block(runner: TaskRunner, started_do1: list[bool]) -> None:
    def pred(t: Task, running: list[Task]) -> bool:
        if t.kind == "do2" and (running or not started_do1):
            return True
        if t.kind == "do1":
            started_do1.append(True)
        return False

    runner.set_blocked(pred)


def _two_add_blocked(runner: TaskRunner, started_do1: list[bool]) -> None:
    runner.add_blocked(lambda t, running: t.kind == "do2" and bool(running or not started_do1))

    def mark(t: Task, running: list[Task]) -> bool:
        if t.kind == "do1":
            started_do1.append(True)
        return False

    runner.add_blocked(mark)


@pytest.mark.parametrize("setup", [_only_one_block, _two_add_blocked], ids=["set_blocked", "add_blocked"])
def test_task_serialization(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner],
                            setup: Callable[[TaskRunner, list[bool]], None]) -> None:
    started1 = threading.Event()
    release1 = threading.Event()
    started2 = threading.Event()

    def do1(task: Task, tomb: Tomb) -> None:
        started1.set()
        assert release1.wait(TIMEOUT)

    def do2(task: Task, tomb: Tomb) -> None:
        started2.set()

    runner = make_runner()
    runner.add_handler("do1", do1)
    runner.add_handler("do2", do2)
    if setup is _only_one_block:
        runner.add_blocked(lambda t, running: True)  # set_blocked replaces what was there before
    setup(runner, [])
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("do1", "...")
        t2 = st.new_task("do2", "...")
        chg.add_task(t1)
        chg.add_task(t2)
    try:
        runner.ensure()  # starts only do1
        assert started1.wait(TIMEOUT)
        assert ensures.requests == []
        assert not started2.is_set()

        runner.ensure()  # starts nothing new
        assert ensures.requests == []
        assert not started2.is_set()
        with st:
            assert t1.status is Status.DOING
            assert t2.status is Status.DO
    finally:
        release1.set()
    # do1 finishing asks for a pass, since do2 was held back.
    assert ensures.event.wait(TIMEOUT)
    assert ensures.earliest == 0
    runner.wait()
    ensures.reset()
    runner.ensure()  # starts do2
    assert started2.wait(TIMEOUT)
    runner.wait()
    assert ensures.requests == []
    with st:
        assert t1.status is Status.DONE
        assert t2.status is Status.DONE


# -- optional handlers, kinds, unknown kinds ----------------------------------------


def test_optional_handler(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    def optional(task: Task, tomb: Tomb) -> None:
        with st:
            kind = task.kind
        raise RuntimeError(f"optional handler error for {kind!r}".replace("'", '"'))

    runner = make_runner()
    runner.add_optional_handler(lambda t: True, optional)
    chg_id, tid = one_task_change(st, "an unknown task")
    drive(runner, st, chg_id)
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR
        assert re.search(r'optional handler error for "an unknown task"', "".join(t.log()))


def test_optional_handler_only_for_matching_tasks(st: State, ensures: EnsureRecorder,
                                                  make_runner: Callable[..., TaskRunner]) -> None:
    ran: queue.SimpleQueue[str] = queue.SimpleQueue()

    def optional(task: Task, tomb: Tomb) -> None:
        with st:
            ran.put(task.kind)

    runner = make_runner()
    runner.add_handler("known", lambda task, tomb: ran.put("known"))
    runner.add_optional_handler(lambda t: t.kind.startswith("opt-") or t.kind == "known", optional)
    with st:
        chg = st.new_change("install", "...")
        for kind in ("known", "opt-a", "other"):
            chg.add_task(st.new_task(kind, kind))
        chg_id = chg.id
    run_quiet(runner, ensures)
    assert sorted(drain(ran)) == ["known", "opt-a"]  # a registered kind wins over an optional handler
    assert statuses(st, chg_id) == {"known": Status.DONE, "opt-a": Status.DONE, "other": Status.DO}


def test_known_task_kinds(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner()
    runner.add_handler("task-kind-1", noop)
    runner.add_handler("task-kind-2", noop, noop)
    assert sorted(runner.known_task_kinds()) == ["task-kind-1", "task-kind-2"]
    assert runner.task_kind_has_undo("task-kind-2")
    assert not runner.task_kind_has_undo("task-kind-1")
    assert not runner.task_kind_has_undo("unknown")


def test_unknown_kind_is_left_alone(st: State, ensures: EnsureRecorder,
                                    make_runner: Callable[..., TaskRunner]) -> None:
    """Tasks of kinds this runner has no handler for belong to another runner: never run, never failed."""
    ran = []
    runner = make_runner()
    runner.add_handler("mine", lambda task, tomb: ran.append(1))
    with st:
        chg = st.new_change("install", "...")
        mine = st.new_task("mine", "mine")
        theirs = st.new_task("theirs", "theirs")
        after = st.new_task("mine", "after-theirs")
        after.wait_for(theirs)
        for t in (mine, theirs, after):
            chg.add_task(t)
        chg_id = chg.id
    for _ in range(3):
        run_quiet(runner, ensures)
    assert len(ran) == 1
    with st:
        assert mine.status is Status.DONE
        assert theirs.status is Status.DO
        assert theirs.log() == []
        assert after.status is Status.DO
        chg = st.change(chg_id)
        assert chg is not None
        assert not chg.is_ready()
        assert chg.err() is None
        # Even aborted, an unknown kind is not touched by this runner.
        chg.abort()
    run_quiet(runner, ensures)
    with st:
        assert theirs.status is not Status.ERROR


# -- undo order ----------------------------------------------------------------------


def test_undo_sequence(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    events: queue.SimpleQueue[str] = queue.SimpleQueue()

    def record(label: str) -> Callable[[Task, Tomb], None]:
        def fn(task: Task, tomb: Tomb) -> None:
            with st:
                events.put(f"{label}:{task.id}")

        return fn

    def error(task: Task, tomb: Tomb) -> None:
        record("do-with-error")(task, tomb)
        raise RuntimeError("error")

    runner = make_runner()
    runner.add_handler("do-with-undo", record("do-with-undo"), record("undo"))
    runner.add_handler("do-no-undo", record("do-no-undo"))
    runner.add_handler("error-trigger", error)
    with st:
        chg = st.new_change("install", "...")
        prev: Task | None = None
        for kind in ["do-with-undo"] * 3 + ["do-no-undo"] + ["do-with-undo"] * 3 + ["do-no-undo"]:
            t = st.new_task(kind, "...")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
        terr = st.new_task("error-trigger", "provoking undo")
        assert prev is not None
        terr.wait_for(prev)
        chg.add_task(terr)
        assert len(chg.tasks()) == 9
        chg_id = chg.id
    drive(runner, st, chg_id)
    assert drain(events) == [
        "do-with-undo:1", "do-with-undo:2", "do-with-undo:3", "do-no-undo:4",
        "do-with-undo:5", "do-with-undo:6", "do-with-undo:7", "do-no-undo:8",
        "do-with-error:9",
        "undo:7", "undo:6", "undo:5", "undo:3", "undo:2", "undo:1",
    ]
    with st:
        got = {t.id: t.status for t in st.change(chg_id).tasks()}  # type: ignore[union-attr]
    assert got == {"1": Status.UNDONE, "2": Status.UNDONE, "3": Status.UNDONE, "4": Status.DONE,
                   "5": Status.UNDONE, "6": Status.UNDONE, "7": Status.UNDONE, "8": Status.DONE,
                   "9": Status.ERROR}


# -- cleanup -------------------------------------------------------------------------


def test_cleanup(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    called = []

    def cleanup(task: Task, tomb: Tomb) -> None:
        called.append(1)
        if len(called) == 1:
            raise RuntimeError("retry me")

    runner = make_runner()
    runner.add_handler("clean-it", noop)
    runner.add_handler("other", noop)
    runner.add_cleanup("clean-it", cleanup)
    with st:
        chg = st.new_change("install", "...")
        chg.add_task(st.new_task("clean-it", "..."))
        chg.add_task(st.new_task("other", "..."))
        chg_id = chg.id

    def is_clean() -> bool:
        with st:
            return st.change(chg_id).is_clean()  # type: ignore[union-attr]

    drive(runner, st, chg_id)
    # First it errors, then it works, then it is never called again.
    assert not is_clean()
    assert len(called) == 0
    runner.ensure()
    runner.wait()
    assert not is_clean()
    assert len(called) == 1
    runner.ensure()
    runner.wait()
    assert is_clean()
    assert len(called) == 2
    runner.ensure()
    runner.wait()
    assert is_clean()
    assert len(called) == 2
    with st:
        assert all(t.is_clean() for t in st.change(chg_id).tasks())  # type: ignore[union-attr]


def test_cleanup_waits_for_change_ready(st: State, ensures: EnsureRecorder,
                                        make_runner: Callable[..., TaskRunner]) -> None:
    called = []
    started = threading.Event()
    release = threading.Event()

    def slow(task: Task, tomb: Tomb) -> None:
        started.set()
        assert release.wait(TIMEOUT)

    runner = make_runner()
    runner.add_handler("clean-it", noop)
    runner.add_handler("slow", slow)
    runner.add_cleanup("clean-it", lambda task, tomb: called.append(1))
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("clean-it", "...")
        chg.add_task(t1)
        chg.add_task(st.new_task("slow", "..."))
        chg_id = chg.id
    try:
        runner.ensure()
        assert started.wait(TIMEOUT)
        for _ in range(3):
            runner.ensure()
            time.sleep(0.01)
        with st:
            assert t1.status is Status.DONE
            assert not t1.is_clean()
        assert called == []
    finally:
        release.set()
    runner.wait()
    drive(runner, st, chg_id)
    runner.ensure()
    runner.wait()
    assert called == [1]
    with st:
        assert t1.is_clean()


# -- errors: callback and logging -------------------------------------------------------


def test_error_callback_called_on_error(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner],
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="engine.taskrunner")
    errors: list[BaseException] = []
    raised: list[BaseException] = []

    def foo(task: Task, tomb: Tomb) -> None:
        with st:
            kind = task.kind
        exc = RuntimeError(f'handler error for "{kind}"')
        raised.append(exc)
        raise exc

    runner = make_runner()
    runner.on_task_error(errors.append)
    runner.add_handler("foo", foo)
    with st:
        # Make change and task ids differ, so the log line can be checked for both.
        st.new_task("filler", "...")
        st.new_task("filler", "...")
        chg = st.new_change("install", "change summary")
        t1 = st.new_task("foo", "task summary")
        chg.add_task(t1)
        chg_id, tid = chg.id, t1.id
    assert (chg_id, tid) == ("1", "3")
    drive(runner, st, chg_id)
    with st:
        assert t1.status is Status.ERROR
        assert re.search(r'ERROR handler error for "foo"$', t1.log()[-1])
        assert str(st.change(chg_id).err()) == (  # type: ignore[union-attr]
            'cannot perform the following tasks:\n- task summary (handler error for "foo")')
    assert errors == raised
    records = [r for r in caplog.records
               if r.name == "engine.taskrunner" and 'handler error for "foo"' in r.getMessage()]
    assert records, [r.getMessage() for r in caplog.records]
    assert any(r.levelno == logging.WARNING for r in records)
    msg = next(r for r in records if r.levelno == logging.WARNING).getMessage()
    assert re.search(r"\bchange 1\b", msg), msg
    assert re.search(r"\btask 3\b", msg), msg


def test_error_callback_not_called(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    errors: list[BaseException] = []
    runner = make_runner()
    runner.on_task_error(errors.append)
    runner.add_handler("foo", noop)
    chg_id, tid = one_task_change(st, "foo")
    drive(runner, st, chg_id)
    with st:
        assert task_of(st, tid).status is Status.DONE
    assert errors == []


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
def test_base_exception_errors_the_task_not_the_runner(st: State, ensures: EnsureRecorder,
                                                       make_runner: Callable[..., TaskRunner],
                                                       exc: BaseException) -> None:
    def bad(task: Task, tomb: Tomb) -> None:
        raise exc

    runner = make_runner()
    runner.add_handler("bad", bad)
    runner.add_handler("good", noop)
    chg_id, tid = one_task_change(st, "bad", "bad task")
    drive(runner, st, chg_id)
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR
        line = t.log()[-1]
        assert " ERROR " in line
        assert type(exc).__name__ in line, line
        assert type(exc).__name__ in str(st.change(chg_id).err())  # type: ignore[union-attr]
    # The runner (and its worker threads) still work.
    chg2_id, tid2 = one_task_change(st, "good")
    drive(runner, st, chg2_id)
    with st:
        assert task_of(st, tid2).status is Status.DONE


# -- Wait ------------------------------------------------------------------------------


def test_wait_parks_task_and_change(st: State, ensures: EnsureRecorder,
                                    make_runner: Callable[..., TaskRunner]) -> None:
    ran: queue.SimpleQueue[str] = queue.SimpleQueue()

    def waiter(task: Task, tomb: Tomb) -> None:
        ran.put("waiter")
        raise Wait("waiting for a reboot")

    runner = make_runner()
    runner.add_handler("waiter", waiter)
    runner.add_handler("next", lambda task, tomb: ran.put("next"))
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("waiter", "t1")
        t2 = st.new_task("next", "t2")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
        chg_id = chg.id
    for _ in range(3):
        run_quiet(runner, ensures)
    assert drain(ran) == ["waiter"]  # a waiting task is not run again
    with st:
        assert t1.status is Status.WAIT
        assert t1.waited_status is Status.DONE
        assert any("waiting for a reboot" in line for line in t1.log())
        assert t2.status is Status.DO
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.status is Status.WAIT
        assert not chg.is_ready()
        # The external event happened: the task takes its waited status.
        t1.set_status(t1.waited_status)
    drive(runner, st, chg_id)
    assert drain(ran) == ["next"]
    assert statuses(st, chg_id) == {"t1": Status.DONE, "t2": Status.DONE}
    with st:
        assert st.change(chg_id).status is Status.DONE  # type: ignore[union-attr]


def test_wait_change_not_waiting_while_other_work_pending(st: State, ensures: EnsureRecorder,
                                                          make_runner: Callable[..., TaskRunner]) -> None:
    def waiter(task: Task, tomb: Tomb) -> None:
        raise Wait()

    runner = make_runner()
    runner.add_handler("waiter", waiter)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("waiter", "t1")
        free = st.new_task("elsewhere", "independent")  # runnable, just not by this runner
        chg.add_task(t1)
        chg.add_task(free)
        chg_id = chg.id
    run_quiet(runner, ensures)
    with st:
        assert t1.status is Status.WAIT
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.status is not Status.WAIT
        assert not chg.status.ready


def test_wait_with_the_default_status_waits_for_done(st: State, ensures: EnsureRecorder,
                                                     make_runner: Callable[..., TaskRunner]) -> None:
    """snapd's TestTaskReturningWaitDefaultStatus: a Wait naming no status (Default) waits for Done."""
    def waits(task: Task, tomb: Tomb) -> None:
        raise Wait("needs a reboot", waited_status=Status.DEFAULT)

    runner = make_runner()
    runner.add_handler("reboot", waits)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("reboot", "t1")
        chg.add_task(t1)
    run_quiet(runner, ensures)
    with st:
        assert (t1.status, t1.waited_status) == (Status.WAIT, Status.DONE)
        assert chg.status is Status.WAIT


def test_wait_for_undone(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    def undo_waits(task: Task, tomb: Tomb) -> None:
        raise Wait("undo needs a reboot", waited_status=Status.UNDONE)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner = make_runner()
    runner.add_handler("reboot", noop, undo_waits)
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("reboot", "t1")
        t2 = st.new_task("fail", "t2")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
        chg_id = chg.id
    for _ in range(3):
        run_quiet(runner, ensures)
    with st:
        assert t1.status is Status.WAIT
        assert t1.waited_status is Status.UNDONE
        assert t2.status is Status.ERROR
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.status is Status.WAIT
        assert not chg.is_ready()
        t1.set_status(t1.waited_status)
    run_quiet(runner, ensures)
    with st:
        assert t1.status is Status.UNDONE
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.status is Status.ERROR
        assert chg.is_ready()


# -- handlers finishing their own task, times, attempts ---------------------------------


def test_handler_finishing_its_own_task_commits_with_its_writes(db_path: Path, file_st: State,
                                                                 clock: FakeClock) -> None:
    seen: dict[str, Any] = {}
    ran = []

    def look() -> tuple[Status, Any]:
        other = State.open(db_path, clock=clock, read_only=True)
        try:
            with other:
                t = other.task(tid)
                assert t is not None
                return t.status, other.get("installed", None)
        finally:
            other.close()

    def install(task: Task, tomb: Tomb) -> None:
        ran.append(1)
        with file_st:
            file_st.set("installed", "/snap/foo/1")
            task.set_status(Status.DONE)
            seen["inside"] = look()
        seen["after"] = look()

    rec = EnsureRecorder()
    file_st.set_ensure_before_hook(rec)
    runner = TaskRunner(file_st)
    try:
        runner.add_handler("install", install)
        chg_id, tid = one_task_change(file_st, "install")
        runner.ensure()
        runner.wait()
        runner.ensure()
        runner.wait()
    finally:
        runner.stop()
    assert ran == [1]
    assert seen["inside"] == (Status.DOING, None)  # neither is visible before the unit of work ends
    assert seen["after"] == (Status.DONE, "/snap/foo/1")  # both are, together
    with file_st:
        assert task_of(file_st, tid).status is Status.DONE
        assert file_st.change(chg_id).status is Status.DONE  # type: ignore[union-attr]


def test_doing_and_undoing_time_accumulate(st: State, ensures: EnsureRecorder,
                                           make_runner: Callable[..., TaskRunner]) -> None:
    runs = []

    def do(task: Task, tomb: Tomb) -> None:
        runs.append(1)
        time.sleep(0.01)
        if len(runs) == 1:
            raise Retry()

    def undo(task: Task, tomb: Tomb) -> None:
        time.sleep(0.01)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner = make_runner()
    runner.add_handler("timed", do, undo)
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("timed", "...")
        chg.add_task(t)
        chg_id = chg.id
    runner.ensure()
    runner.wait()
    with st:
        first = t.doing_time
        assert first > timedelta(0)
        assert t.undoing_time == timedelta(0)
    runner.ensure()
    runner.wait()
    with st:
        assert t.status is Status.DONE
        second = t.doing_time
        assert second > first
        # Now make it undo.
        f = st.new_task("fail", "...")
        f.wait_for(t)
        st.change(chg_id).add_task(f)  # type: ignore[union-attr]
    drive(runner, st, chg_id)
    with st:
        assert t.status is Status.UNDONE
        assert t.doing_time == second
        assert t.undoing_time > timedelta(0)


# -- workers ----------------------------------------------------------------------------


def test_ensure_claims_no_more_tasks_than_workers(st: State, ensures: EnsureRecorder,
                                                  make_runner: Callable[..., TaskRunner]) -> None:
    started: queue.SimpleQueue[str] = queue.SimpleQueue()
    release = {f"t{i}": threading.Event() for i in range(5)}

    def block(task: Task, tomb: Tomb) -> None:
        with st:
            name = task.summary
        started.put(name)
        assert release[name].wait(TIMEOUT)

    def counts() -> dict[Status, int]:
        out: dict[Status, int] = {}
        for s in statuses(st, chg_id).values():
            out[s] = out.get(s, 0) + 1
        return out

    runner = make_runner(workers=2)
    runner.add_handler("block", block)
    with st:
        chg = st.new_change("install", "...")
        for name in release:
            chg.add_task(st.new_task("block", name))
        chg_id = chg.id
    try:
        runner.ensure()
        first = {started.get(timeout=TIMEOUT), started.get(timeout=TIMEOUT)}
        runner.ensure()  # no free worker: nothing more is claimed
        assert counts() == {Status.DOING: 2, Status.DO: 3}
        assert started.empty()

        ensures.reset()
        release[sorted(first)[0]].set()
        # The finished handler frees a worker: the runner asks for a pass.
        assert ensures.event.wait(TIMEOUT)
        assert ensures.earliest == 0
        runner.ensure()
        third = started.get(timeout=TIMEOUT)
        assert third not in first
        assert counts() == {Status.DONE: 1, Status.DOING: 2, Status.DO: 2}
    finally:
        for ev in release.values():
            ev.set()
    run_quiet(runner, ensures)
    for _ in range(5):
        run_quiet(runner, ensures)
    assert counts() == {Status.DONE: 5}


def test_no_extra_pass_asked_when_nothing_waits_for_a_worker(st: State, ensures: EnsureRecorder,
                                                             make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(workers=2)
    runner.add_handler("quick", noop)
    with st:
        chg = st.new_change("install", "...")
        chg.add_task(st.new_task("quick", "a"))
        chg.add_task(st.new_task("quick", "b"))
        chg_id = chg.id
    runner.ensure()
    runner.wait()
    assert ensures.requests == []
    assert set(statuses(st, chg_id).values()) == {Status.DONE}


# -- async handlers ----------------------------------------------------------------------


def test_async_handlers_run_on_one_loop(st: State, ensures: EnsureRecorder,
                                        make_runner: Callable[..., TaskRunner]) -> None:
    seen: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()

    async def do(task: Task, tomb: Tomb) -> None:
        with st:
            name = task.summary
        seen.put((name, threading.get_ident(), id(asyncio.get_running_loop())))
        # Both handlers are suspended here at once: they share the loop without blocking it.
        for _ in range(int(TIMEOUT * 100)):
            if seen.qsize() >= 2:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the other async handler never ran while this one was suspended")

    runner = make_runner()
    runner.add_handler("async", do)
    with st:
        chg = st.new_change("install", "...")
        chg.add_task(st.new_task("async", "a"))
        chg.add_task(st.new_task("async", "b"))
        chg_id = chg.id
    drive(runner, st, chg_id)
    got = [seen.get() for _ in range(seen.qsize())]
    assert sorted(name for name, _, _ in got) == ["a", "b"]
    assert len({thread for _, thread, _ in got}) == 1
    assert len({loop for _, _, loop in got}) == 1
    assert got[0][1] != threading.get_ident()
    assert set(statuses(st, chg_id).values()) == {Status.DONE}


def test_async_handler_outcomes(st: State, ensures: EnsureRecorder, make_runner: Callable[..., TaskRunner]) -> None:
    calls = []

    async def retry_once(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Retry()

    async def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("async boom")

    runner = make_runner()
    runner.add_handler("retry-once", retry_once)
    runner.add_handler("fail", fail)
    _, tid = one_task_change(st, "retry-once")
    for _ in range(2):  # Retry() runs again at the next ensure, which nothing asks for (snapd)
        runner.ensure()
        runner.wait()
    with st:
        assert task_of(st, tid).status is Status.DONE
        assert task_of(st, tid).attempts == 1
    chg2, tid2 = one_task_change(st, "fail", "failing")
    drive(runner, st, chg2)
    with st:
        assert task_of(st, tid2).status is Status.ERROR
        assert "async boom" in str(st.change(chg2).err())  # type: ignore[union-attr]


def test_async_handler_tomb_and_abort(st: State, ensures: EnsureRecorder,
                                      make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()
    calls: queue.SimpleQueue[str] = queue.SimpleQueue()

    async def do(task: Task, tomb: Tomb) -> None:
        calls.put("do")
        started.set()
        await asyncio.wait_for(tomb.until_dying(), TIMEOUT)
        assert tomb.is_dying()
        calls.put("dying")
        raise Retry()

    async def undo(task: Task, tomb: Tomb) -> None:
        calls.put("undo")

    runner = make_runner()
    runner.add_handler("async", do, undo)
    chg_id, tid = one_task_change(st, "async")
    runner.ensure()
    assert started.wait(TIMEOUT)
    with st:
        st.change(chg_id).abort()  # type: ignore[union-attr]
    drive(runner, st, chg_id)
    assert drain(calls) == ["do", "dying", "undo"]
    with st:
        assert task_of(st, tid).status is Status.UNDONE


def test_async_handler_killed_by_stop(st: State, make_runner: Callable[..., TaskRunner]) -> None:
    started = threading.Event()

    async def do(task: Task, tomb: Tomb) -> None:
        started.set()
        await asyncio.wait_for(tomb.until_dying(), TIMEOUT)
        raise RuntimeError("cancelled")

    runner = make_runner()
    runner.add_handler("async", do)
    _, tid = one_task_change(st, "async")
    runner.ensure()
    assert started.wait(TIMEOUT)
    runner.stop()
    with st:
        assert task_of(st, tid).status is Status.DOING  # an error while stopping is a retry


# -- outcomes racing an abort ------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["set-done", "wait", "return"])
def test_abort_while_running_then_undone(st: State, ensures: EnsureRecorder,
                                         make_runner: Callable[..., TaskRunner], outcome: str) -> None:
    """Whatever the handler of an aborted task does on its way out, the task is undone."""
    started = threading.Event()
    calls: queue.SimpleQueue[str] = queue.SimpleQueue()

    def do(task: Task, tomb: Tomb) -> None:
        calls.put("do")
        started.set()
        assert tomb.wait_dying(TIMEOUT), "tomb never died"
        if outcome == "set-done":
            with st:
                task.set_status(Status.DONE)  # asking for Done keeps it in Abort
                assert task.status is Status.ABORT
        elif outcome == "wait":
            raise Wait("later")

    def undo(task: Task, tomb: Tomb) -> None:
        calls.put("undo")

    runner = make_runner()
    runner.add_handler("abortable", do, undo)
    chg_id, tid = one_task_change(st, "abortable")
    runner.ensure()
    assert started.wait(TIMEOUT)
    with st:
        st.change(chg_id).abort()  # type: ignore[union-attr]
    drive(runner, st, chg_id)
    assert drain(calls) == ["do", "undo"]
    with st:
        assert task_of(st, tid).status is Status.UNDONE
        assert st.change(chg_id).status is Status.UNDONE  # type: ignore[union-attr]


def test_retry_after_timedelta(st: State, clock: FakeClock, ensures: EnsureRecorder,
                               make_runner: Callable[..., TaskRunner]) -> None:
    calls = []

    def handler(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Retry(after=timedelta(minutes=2), reason="come back later")

    runner = make_runner()
    runner.add_handler("later", handler)
    _, tid = one_task_change(st, "later")
    t0 = clock()
    runner.ensure()
    runner.wait()
    with st:
        t = task_of(st, tid)
        assert t.at_time == t0 + timedelta(minutes=2)
        assert t.attempts == 1
        assert t.log()[-1].endswith(" INFO come back later")
    assert ensures.earliest == 120
    clock.advance(120)
    runner.ensure()
    runner.wait()
    with st:
        assert task_of(st, tid).status is Status.DONE
    assert len(calls) == 2


def test_finished_task_asks_for_followers(st: State, ensures: EnsureRecorder,
                                          make_runner: Callable[..., TaskRunner]) -> None:
    """The runner asks for a pass (0) when a finished task lets others follow, and only then."""
    runner = make_runner()
    runner.add_handler("step", noop)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("step", "t1")
        t2 = st.new_task("step", "t2")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
    runner.ensure()
    runner.wait()
    assert ensures.requests == [0]
    ensures.reset()
    runner.ensure()
    runner.wait()
    assert ensures.requests == []
    with st:
        assert t2.status is Status.DONE


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
def test_async_base_exception_errors_the_task_not_the_loop(st: State, ensures: EnsureRecorder,
                                                           make_runner: Callable[..., TaskRunner],
                                                           exc: BaseException) -> None:
    async def bad(task: Task, tomb: Tomb) -> None:
        raise exc

    async def good(task: Task, tomb: Tomb) -> None:
        await asyncio.sleep(0)

    runner = make_runner()
    runner.add_handler("bad", bad)
    runner.add_handler("good", good)
    chg_id, tid = one_task_change(st, "bad")
    drive(runner, st, chg_id)
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR
        assert type(exc).__name__ in t.log()[-1]
    chg2_id, tid2 = one_task_change(st, "good")
    drive(runner, st, chg2_id)
    with st:
        assert task_of(st, tid2).status is Status.DONE


def test_failing_error_callback_does_not_break_the_runner(st: State, ensures: EnsureRecorder,
                                                          make_runner: Callable[..., TaskRunner]) -> None:
    def callback(err: BaseException) -> None:
        raise RuntimeError("callback broken")

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner = make_runner()
    runner.on_task_error(callback)
    runner.add_handler("fail", fail)
    runner.add_handler("good", noop)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("fail", "t1")
        t2 = st.new_task("good", "t2")  # in another lane: not aborted by t1's failure
        t2.join_lane(st.new_lane())
        t1.join_lane(st.new_lane())
        chg.add_task(t1)
        chg.add_task(t2)
        chg_id = chg.id
    drive(runner, st, chg_id)
    with st:
        assert t1.status is Status.ERROR
        assert "boom" in t1.log()[-1]
        assert t2.status is Status.DONE
