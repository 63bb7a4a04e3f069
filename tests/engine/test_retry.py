# SPDX-License-Identifier: GPL-3.0-or-later
"""Retry policies: add_handler(kind, do, retry=tenacity.Retrying(...)).

The policy's retry predicate decides which exceptions retry, its wait gives
the delay (measured on the State's clock), its stop ends the retries; the
attempts are counted in the database, so a restart keeps the count.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import tenacity

from engine import Retry, State, Status, Task, TaskRunner
from engine.testing import FakeClock
from engine.tomb import Tomb
from tests.support.ensure import EnsureRecorder
from tests.support.helpers import one_task_change, task_of

TIMEOUT = 30.0


@pytest.fixture
def runner(st: State) -> Iterator[TaskRunner]:
    r = TaskRunner(st)
    yield r
    r.stop()






def run_once(runner: TaskRunner) -> None:
    runner.ensure()
    runner.wait()


class Flaky:
    """Flaky is a handler that raises the exceptions made by make(n) for its first `fails` calls."""

    def __init__(self, make: Callable[[int], BaseException], fails: int = 1_000_000) -> None:
        self.make = make
        self.fails = fails
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, task: Task, tomb: Tomb) -> None:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n <= self.fails:
            raise self.make(n)


def policy(**kw: Any) -> tenacity.Retrying:
    kw.setdefault("retry", tenacity.retry_if_exception_type(ConnectionError))
    kw.setdefault("wait", tenacity.wait_fixed(30))
    kw.setdefault("stop", tenacity.stop_after_attempt(3))
    return tenacity.Retrying(**kw)


def test_non_matching_exception_errors_at_once(st: State, runner: TaskRunner, ensures: EnsureRecorder) -> None:
    handler = Flaky(lambda n: ValueError(f"bad input {n}"))
    runner.add_handler("fetch", handler, retry=policy())
    chg_id, tid = one_task_change(st, "fetch", "fetch it")
    run_once(runner)
    run_once(runner)
    assert handler.calls == 1
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR
        assert t.at_time is None
        assert "bad input 1" in t.log()[-1]
        chg = st.change(chg_id)
        assert chg is not None
        assert chg.status is Status.ERROR
        assert "bad input 1" in str(chg.err())


def test_custom_predicate_decides(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    def make(n: int) -> Exception:
        return RuntimeError("transient glitch") if n == 1 else RuntimeError("fatal: disk gone")

    handler = Flaky(make)
    runner.add_handler("fetch", handler, retry=tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda e: "transient" in str(e)),
        wait=tenacity.wait_fixed(10), stop=tenacity.stop_after_attempt(10)))
    chg_id, tid = one_task_change(st, "fetch", "fetch it")
    run_once(runner)
    with st:
        assert task_of(st, tid).status is Status.DOING  # accepted by the predicate: scheduled again
    clock.advance(10)
    run_once(runner)
    assert handler.calls == 2
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR  # refused by the predicate: no more tries although stop allows them
        assert "fatal: disk gone" in str(st.change(chg_id).err())  # type: ignore[union-attr]


def test_delay_comes_from_wait(st: State, runner: TaskRunner, clock: FakeClock, ensures: EnsureRecorder) -> None:
    handler = Flaky(lambda n: ConnectionError(f"net down {n}"), fails=1)
    runner.add_handler("fetch", handler, retry=policy(wait=tenacity.wait_fixed(30)))
    chg_id, tid = one_task_change(st, "fetch", "fetch it")
    t0 = clock()
    run_once(runner)
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DOING
        assert t.at_time == t0 + timedelta(seconds=30)
        assert t.attempts == 1
    assert ensures.earliest == 30

    clock.advance(29)
    ensures.reset()
    run_once(runner)  # too soon
    assert handler.calls == 1
    assert ensures.earliest == 1
    with st:
        assert task_of(st, tid).status is Status.DOING

    clock.advance(1)
    run_once(runner)
    assert handler.calls == 2
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DONE
        assert t.at_time is None
        assert st.change(chg_id).status is Status.DONE  # type: ignore[union-attr]


def test_exponential_wait_grows(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    handler = Flaky(lambda n: ConnectionError("net down"))
    runner.add_handler("fetch", handler, retry=policy(
        wait=tenacity.wait_exponential(multiplier=10, max=1000), stop=tenacity.stop_after_attempt(10)))
    _, tid = one_task_change(st, "fetch")
    delays = []
    for _ in range(4):
        start = clock()
        run_once(runner)
        with st:
            at = task_of(st, tid).at_time
        assert at is not None
        delays.append((at - start).total_seconds())
        clock.set(at)
    assert delays == [10, 20, 40, 80]
    assert handler.calls == 4


def test_stop_after_attempt(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    handler = Flaky(lambda n: ConnectionError(f"net down #{n}"))
    runner.add_handler("fetch", handler, retry=policy(stop=tenacity.stop_after_attempt(3)))
    chg_id, tid = one_task_change(st, "fetch", "fetch it")
    for attempt in (1, 2):
        run_once(runner)
        with st:
            t = task_of(st, tid)
            assert t.status is Status.DOING
            assert t.attempts == attempt
        clock.advance(30)
    run_once(runner)
    assert handler.calls == 3
    with st:
        t = task_of(st, tid)
        assert t.status is Status.ERROR
        assert t.attempts == 3
        assert re.search(r" ERROR net down #3$", t.log()[-1]), t.log()
        assert str(st.change(chg_id).err()) == "cannot perform the following tasks:\n- fetch it (net down #3)"  # type: ignore[union-attr]
    clock.advance(3600)
    run_once(runner)
    assert handler.calls == 3


def test_each_retry_logs_reason_and_next_time(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    handler = Flaky(lambda n: ConnectionError(f"net down #{n}"), fails=2)
    runner.add_handler("fetch", handler, retry=policy(stop=tenacity.stop_after_attempt(5)))
    _, tid = one_task_change(st, "fetch")
    run_once(runner)
    clock.advance(30)
    run_once(runner)
    clock.advance(30)
    run_once(runner)
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DONE
        lines = t.log()
    assert len(lines) == 2, lines
    for line, n, nxt in ((lines[0], 1, "12:00:30"), (lines[1], 2, "12:01:00")):
        assert " INFO " in line
        assert f"net down #{n}" in line
        assert f"2030-01-01T{nxt}" in line  # the next attempt's time


def test_attempts_survive_reopen(db_path: Path, clock: FakeClock) -> None:
    """A new State and TaskRunner on the same file continue the count and stop at the right attempt."""
    calls = []

    def fetch(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        raise ConnectionError(f"net down #{len(calls)}")

    def session(rounds: int) -> None:
        st = State.open(db_path, clock=clock)
        runner = TaskRunner(st)
        runner.add_handler("fetch", fetch, retry=policy(stop=tenacity.stop_after_attempt(3)))
        try:
            for _ in range(rounds):
                run_once(runner)
                clock.advance(30)
        finally:
            runner.stop()
            st.close()

    st = State.open(db_path, clock=clock)
    chg_id, tid = one_task_change(st, "fetch", "fetch it")
    st.close()

    session(1)
    st = State.open(db_path, clock=clock)
    with st:
        assert task_of(st, tid).attempts == 1
        assert task_of(st, tid).status is Status.DOING
    st.close()

    session(1)
    session(1)  # the third attempt overall: the policy stops here
    assert len(calls) == 3
    session(2)  # and nothing runs again
    assert len(calls) == 3
    st = State.open(db_path, clock=clock)
    try:
        with st:
            t = task_of(st, tid)
            assert t.status is Status.ERROR
            assert t.attempts == 3
            assert "net down #3" in str(st.change(chg_id).err())
    finally:
        st.close()


def test_stop_after_delay_across_reopen(db_path: Path, clock: FakeClock) -> None:
    """The delay counts from the first failure, kept in the database, not from the process start."""
    calls = []

    def fetch(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        raise ConnectionError(f"net down #{len(calls)}")

    def session() -> None:
        st = State.open(db_path, clock=clock)
        runner = TaskRunner(st)
        runner.add_handler("fetch", fetch, retry=policy(
            wait=tenacity.wait_fixed(30), stop=tenacity.stop_after_delay(100)))
        try:
            run_once(runner)
        finally:
            runner.stop()
            st.close()

    def status() -> Status:
        st = State.open(db_path, clock=clock)
        try:
            with st:
                return task_of(st, tid).status
        finally:
            st.close()

    st = State.open(db_path, clock=clock)
    _, tid = one_task_change(st, "fetch")
    st.close()

    session()  # t=0: first failure
    assert status() is Status.DOING
    clock.advance(40)
    session()  # t=40: 40 s since the first failure, retried
    assert status() is Status.DOING
    clock.advance(70)
    session()  # t=110: past 100 s since the first failure: gives up
    assert len(calls) == 3
    assert status() is Status.ERROR


def test_no_sleep_in_workers(st: State, runner: TaskRunner, clock: FakeClock, ensures: EnsureRecorder) -> None:
    handler = Flaky(lambda n: ConnectionError("net down"), fails=1)
    runner.add_handler("fetch", handler, retry=policy(wait=tenacity.wait_fixed(3600)))
    _, tid = one_task_change(st, "fetch")
    done = threading.Event()

    def one_pass() -> None:
        run_once(runner)
        done.set()

    threading.Thread(target=one_pass, daemon=True).start()
    assert done.wait(TIMEOUT), "wait() did not return: a worker sleeps through the retry delay"
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DOING
        assert t.at_time == clock() + timedelta(hours=1)
    assert ensures.earliest == 3600
    assert handler.calls == 1
    clock.advance(3600)
    run_once(runner)
    with st:
        assert task_of(st, tid).status is Status.DONE


def test_explicit_retry_still_honoured_with_a_policy(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    """A handler's own Retry is not subject to the policy's predicate or stop."""
    handler = Flaky(lambda n: Retry(after=5, reason="busy"), fails=4)
    runner.add_handler("fetch", handler, retry=policy(stop=tenacity.stop_after_attempt(2)))
    _, tid = one_task_change(st, "fetch")
    for _ in range(5):
        run_once(runner)
        clock.advance(5)
    assert handler.calls == 5
    with st:
        t = task_of(st, tid)
        assert t.status is Status.DONE
        assert t.attempts == 4


def test_undo_handler_retries_under_policy(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    undo = Flaky(lambda n: ConnectionError(f"undo net down #{n}"), fails=1)

    def do(task: Task, tomb: Tomb) -> None:
        events.put("do")

    def undo_logged(task: Task, tomb: Tomb) -> None:
        events.put("undo")
        undo(task, tomb)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner.add_handler("fetch", do, undo_logged, retry=policy(wait=tenacity.wait_fixed(10)))
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("fetch", "t1")
        t2 = st.new_task("fail", "t2")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
    for _ in range(4):
        run_once(runner)
    with st:
        assert t1.status is Status.UNDOING
        assert t1.at_time == clock() + timedelta(seconds=10)
    clock.advance(10)
    run_once(runner)
    with st:
        assert t1.status is Status.UNDONE
    got = []
    while not events.empty():
        got.append(events.get())
    assert got == ["do", "undo", "undo"]


@pytest.mark.parametrize("stop", [tenacity.stop_after_attempt(3), tenacity.stop_after_delay(100)],
                         ids=["stop_after_attempt", "stop_after_delay"])
def test_undo_gets_its_own_retry_sequence(st: State, runner: TaskRunner, clock: FakeClock,
                                          stop: tenacity.stop.stop_base) -> None:
    """The do handler's failures do not use up the undo handler's retries (each is its own tenacity call)."""
    do = Flaky(lambda n: ConnectionError(f"do net down #{n}"), fails=2)
    undo = Flaky(lambda n: ConnectionError(f"undo net down #{n}"), fails=1)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner.add_handler("fetch", do, undo, retry=policy(wait=tenacity.wait_fixed(30), stop=stop))
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("fetch", "t1")
        chg.add_task(t1)
    for _ in range(3):
        run_once(runner)
        clock.advance(30)
    with st:
        assert t1.status is Status.DONE  # after two retries
    clock.advance(3600)  # later, something else fails and t1 is undone
    with st:
        t2 = st.new_task("fail", "t2")
        t2.wait_for(t1)
        st.change(chg.id).add_task(t2)  # type: ignore[union-attr]
    for _ in range(3):
        run_once(runner)
    assert undo.calls == 1
    with st:
        assert t1.status is Status.UNDOING, t1.log()  # its first failure: retried, not given up
    clock.advance(30)
    run_once(runner)
    assert undo.calls == 2
    with st:
        assert t1.status is Status.UNDONE
