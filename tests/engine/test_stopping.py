# SPDX-License-Identifier: GPL-3.0-or-later
"""stop() from several threads: every stop() returns only once the engine has stopped.

Real threads and real files; the tests wait on events with generous
timeouts. A second stop() says in the log (DEBUG) that it waits for the stop
under way: the tests use that line to know it got there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import EngineError, Overlord, State, StateEngine, Status, Task, TaskRunner
from engine.tomb import Tomb

TIMEOUT = 30.0
WAITING = "waiting for the stop under way"


class _Seen(logging.Handler):
    """_Seen sets an event when a record holding text is logged."""

    def __init__(self, text: str, event: threading.Event) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = event
        self.threads: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.threads.append(record.threadName or "")
            self.event.set()


@pytest.fixture
def seen_waiting() -> Iterator[tuple[_Seen, threading.Event]]:
    """seen_waiting watches the engine's log for a stop() that waits for another."""
    event = threading.Event()
    handler = _Seen(WAITING, event)
    logger = logging.getLogger("engine")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler, event
    logger.removeHandler(handler)
    logger.setLevel(old)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_second_stop_waits_for_the_running_handler_and_its_outcome_is_recorded(
        db_path: Path, seen_waiting: tuple[_Seen, threading.Event], caplog: pytest.LogCaptureFixture) -> None:
    _, either = seen_waiting
    o = Overlord(db_path)
    started, dying, release, finished = (threading.Event() for _ in range(4))

    def slow(task: Task, tomb: Tomb) -> None:
        started.set()
        assert tomb.wait_dying(TIMEOUT)  # the first stop() killed it: that stop waits for it now
        dying.set()
        assert release.wait(TIMEOUT)
        finished.set()

    o.task_runner.add_handler("slow", slow)
    try:
        with o.state:
            chg = o.state.new_change("c", "a handler that outlives the first stop()")
            t = o.state.new_task("slow", "slow")
            chg.add_task(t)
            tid = t.id
        o.loop()
        assert started.wait(TIMEOUT)
        first = threading.Thread(target=o.stop, name="first-stop")
        first.start()
        assert dying.wait(TIMEOUT)
        returned = threading.Event()
        finished_at_return: list[bool] = []

        def second_stop() -> None:
            o.stop()
            finished_at_return.append(finished.is_set())
            returned.set()
            either.set()

        second = threading.Thread(target=second_stop, name="second-stop")
        second.start()
        # The second stop() either waits for the first (logged) or returns at once (the defect).
        assert either.wait(TIMEOUT)
        assert not returned.is_set(), "the second stop() returned while a handler still ran"
    finally:
        release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert not first.is_alive() and not second.is_alive()
    assert finished_at_return == [True]
    assert o.state.read_only  # fenced: stopped
    reader = State.open(db_path, read_only=True)
    try:
        with reader:
            task = reader.task(tid)
            assert task is not None and task.status is Status.DONE  # recorded: it does not run again
    finally:
        reader.close()
    assert _errors(caplog) == []


class _SlowToStop:
    """_SlowToStop is a manager whose stop() lasts until released."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.release = threading.Event()
        self.stopped = threading.Event()

    def ensure(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def stop(self) -> None:
        self.stopping.set()
        assert self.release.wait(TIMEOUT)
        self.stopped.set()


def test_a_second_state_engine_stop_waits_for_the_managers(
        file_st: State, seen_waiting: tuple[_Seen, threading.Event]) -> None:
    _, either = seen_waiting
    se = StateEngine(file_st)
    manager = _SlowToStop()
    se.add_manager(manager)
    se.start_up()
    first = threading.Thread(target=se.stop)
    first.start()
    returned = threading.Event()
    stopped_at_return: list[bool] = []

    def second_stop() -> None:
        se.stop()
        stopped_at_return.append(manager.stopped.is_set())
        returned.set()
        either.set()

    try:
        assert manager.stopping.wait(TIMEOUT)
        second = threading.Thread(target=second_stop)
        second.start()
        assert either.wait(TIMEOUT)
        assert not returned.is_set(), "the second stop() returned while a manager still stopped"
    finally:
        manager.release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert stopped_at_return == [True]


@pytest.mark.parametrize("round_", range(4))
def test_loop_and_stop_from_several_threads_end_in_one_stopped_state(
        round_: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    ran: set[str] = set()
    lock = threading.Lock()

    def work(task: Task, tomb: Tomb) -> None:
        with o.state:
            tid = task.id
        with lock:
            ran.add(tid)

    o.task_runner.add_handler("work", work)
    with o.state:
        chg = o.state.new_change("c", "work while loop() and stop() race")
        ids = []
        for i in range(8):
            t = o.state.new_task("work", f"w{i}")
            chg.add_task(t)
            ids.append(t.id)
    callers = 6
    barrier = threading.Barrier(callers)
    refused: list[BaseException] = []

    def call(fn: str) -> None:
        barrier.wait(TIMEOUT)
        try:
            getattr(o, fn)()
        except EngineError as e:
            refused.append(e)

    threads = [threading.Thread(target=call, args=("loop" if i % 2 else "stop",)) for i in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads)
    assert all("cannot loop" in str(e) for e in refused), refused
    assert o.state.read_only  # every stop() returned: the State is fenced
    assert not [th for th in threading.enumerate() if th.name == "engine-overlord"]
    reader = State.open(db, read_only=True)
    try:
        with reader:
            statuses = {tid: reader.task(tid).status for tid in ids}  # type: ignore[union-attr]
    finally:
        reader.close()
    # Every handler that ran has its outcome recorded; the others never started.
    assert statuses == {tid: Status.DONE if tid in ran else Status.DO for tid in ids}
    assert _errors(caplog) == []


class _SpyLock:
    """_SpyLock is a lock that sets an event when an acquire has to wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.contended.set()
        return self._lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_second_task_runner_stop_waits_for_the_running_handler(file_st: State) -> None:
    runner = TaskRunner(file_st)
    spy = _SpyLock()
    runner._mu = spy  # type: ignore[assignment]
    started, dying, release, finished = (threading.Event() for _ in range(4))

    def slow(task: Task, tomb: Tomb) -> None:
        started.set()
        assert tomb.wait_dying(TIMEOUT)
        dying.set()
        assert release.wait(TIMEOUT)
        finished.set()

    runner.add_handler("slow", slow)
    with file_st:
        chg = file_st.new_change("c", "a handler that outlives the first stop()")
        t = file_st.new_task("slow", "slow")
        chg.add_task(t)
    runner.ensure()
    returned = threading.Event()
    finished_at_return: list[bool] = []

    def second_stop() -> None:
        runner.stop()
        finished_at_return.append(finished.is_set())
        returned.set()
        spy.contended.set()

    try:
        assert started.wait(TIMEOUT)
        first = threading.Thread(target=runner.stop)
        first.start()
        assert dying.wait(TIMEOUT)
        second = threading.Thread(target=second_stop)
        second.start()
        assert spy.contended.wait(TIMEOUT)
        assert not returned.is_set(), "the second stop() returned while a handler still ran"
    finally:
        release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert finished_at_return == [True]
    with file_st:
        assert t.status is Status.DONE
