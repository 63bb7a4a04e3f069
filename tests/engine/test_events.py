# SPDX-License-Identifier: GPL-3.0-or-later
"""Changes that wait for events: task.wait_event(key) parks a task, State.emit(key, data) wakes it.

On both backends: the data reaches the handler, each waiting task gets an
event once, an event emitted while a task was parking is not lost, a wait
times out on the State's clock (to Error, or to a new run), and a parked
task survives a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import EventWait, Overlord, State, Status, Task
from engine.testing import FakeClock
from engine.tomb import Tomb

TIMEOUT = 30.0


@pytest.fixture
def where(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """where opens overlords on the test's database: a SQLite file, or a PostgreSQL database."""
    if backend == "postgresql":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": tmp_path / "state.db"}


@pytest.fixture
def ov(where: dict[str, Any], clock: FakeClock) -> Iterator[Overlord]:
    o = Overlord(**where, clock=clock)
    yield o
    o.stop()
    o.state.close()


class Approver:
    """Approver is a handler that waits for the event named by its task, and keeps what it got."""

    def __init__(self, timeout: float | None = None, on_timeout: str = "error") -> None:
        self.got: dict[str, Any] = {}
        self.calls = 0
        self.timeout = timeout
        self.on_timeout = on_timeout
        self._lock = threading.Lock()

    def __call__(self, task: Task, tomb: Tomb) -> None:
        with self._lock:
            self.calls += 1
        with task.state:
            key, tid = task.get("event"), task.id
            data = task.wait_event(key, timeout=self.timeout, on_timeout=self.on_timeout)  # type: ignore[arg-type]
        with self._lock:
            self.got[tid] = data


def new_waiting(o: Overlord, key: str, n: int = 1) -> list[str]:
    ids = []
    with o.state:
        chg = o.state.new_change("approve", "Wait for approval")
        for _ in range(n):
            t = o.state.new_task("approve", "Wait for " + key)
            t.set("event", key)
            chg.add_task(t)
            ids.append(t.id)
    return ids


def one_pass(o: Overlord) -> None:
    o.state_engine.ensure()
    o.task_runner.wait()


def status_of(o: Overlord, tid: str) -> Status:
    with o.state:
        return o.state.task(tid).status


def test_emit_wakes_every_waiting_task_once_and_hands_them_the_data(ov: Overlord) -> None:
    h = Approver()
    ov.task_runner.add_handler("approve", h)
    ids = new_waiting(ov, "approval:42", 2)
    other = new_waiting(ov, "approval:43")
    ov.settle(TIMEOUT)
    assert [status_of(ov, t) for t in ids + other] == [Status.WAIT] * 3
    with ov.state:
        assert ov.state.task(ids[0]).change().status is Status.WAIT
        assert ov.state.task(ids[0]).log()[-1].endswith("waiting for event 'approval:42'")
        assert ov.state.emit("approval:42", {"by": "alice"}) == 2
    ov.settle(TIMEOUT)
    assert [status_of(ov, t) for t in ids] == [Status.DONE, Status.DONE]
    assert status_of(ov, other[0]) is Status.WAIT
    assert h.got == {ids[0]: {"by": "alice"}, ids[1]: {"by": "alice"}}
    assert h.calls == 5
    with ov.state:  # delivered once: a second event of the key finds nobody waiting
        assert ov.state.emit("approval:42", {"by": "bob"}) == 0
    ov.settle(TIMEOUT)
    assert h.got[ids[0]] == {"by": "alice"} and h.calls == 5


def test_an_event_emitted_before_a_task_waits_does_not_wake_it(ov: Overlord) -> None:
    ov.task_runner.add_handler("approve", Approver())
    with ov.state:
        assert ov.state.emit("k", 1) == 0
    (tid,) = new_waiting(ov, "k")
    ov.settle(TIMEOUT)
    assert status_of(ov, tid) is Status.WAIT


def test_an_event_emitted_while_the_task_parks_is_delivered_when_the_wait_is_recorded(ov: Overlord) -> None:
    got: list[Any] = []

    def handler(task: Task, tomb: Tomb) -> None:
        try:
            with task.state:
                got.append(task.wait_event("late"))
        except EventWait:
            with task.state:  # committed before the runner records the wait
                task.state.emit("late", "here")
            raise

    ov.task_runner.add_handler("approve", handler)
    (tid,) = new_waiting(ov, "late")
    ov.settle(TIMEOUT)
    assert status_of(ov, tid) is Status.DONE
    assert got == ["here"]


def test_a_rolled_back_emit_wakes_nobody(ov: Overlord) -> None:
    ov.task_runner.add_handler("approve", Approver())
    (tid,) = new_waiting(ov, "k")
    ov.settle(TIMEOUT)
    with pytest.raises(RuntimeError), ov.state:
        ov.state.emit("k", 1)
        raise RuntimeError("changed my mind")
    ov.settle(TIMEOUT)
    assert status_of(ov, tid) is Status.WAIT


def test_a_wait_that_times_out_fails_the_task(ov: Overlord, clock: FakeClock) -> None:
    ov.task_runner.add_handler("approve", Approver(timeout=3600))
    (tid,) = new_waiting(ov, "never")
    ov.settle(TIMEOUT)
    assert status_of(ov, tid) is Status.WAIT
    clock.advance(3599)
    one_pass(ov)
    assert status_of(ov, tid) is Status.WAIT
    clock.advance(2)
    ov.settle(TIMEOUT)
    with ov.state:
        t = ov.state.task(tid)
        assert t.status is Status.ERROR
        assert "no event 'never' came before" in t.log()[-1]
        assert t.change().status is Status.ERROR
        assert ov.state.emit("never", 1) == 0  # too late: nobody waits any more


def test_a_wait_that_times_out_with_retry_runs_the_handler_again(ov: Overlord, clock: FakeClock) -> None:
    h = Approver(timeout=3600, on_timeout="retry")
    ov.task_runner.add_handler("approve", h)
    (tid,) = new_waiting(ov, "slow")
    ov.settle(TIMEOUT)
    clock.advance(3601)
    one_pass(ov)
    one_pass(ov)
    assert h.calls == 2  # ran again, and waits again
    assert status_of(ov, tid) is Status.WAIT
    with ov.state:
        assert ov.state.emit("slow", [1, 2]) == 1
    ov.settle(TIMEOUT)
    assert status_of(ov, tid) is Status.DONE
    assert h.got == {tid: [1, 2]}


def test_a_parked_task_survives_a_restart(where: dict[str, Any], clock: FakeClock) -> None:
    o = Overlord(**where, clock=clock)
    try:
        o.task_runner.add_handler("approve", Approver())
        (tid,) = new_waiting(o, "after-restart")
        o.settle(TIMEOUT)
        assert status_of(o, tid) is Status.WAIT
    finally:
        o.stop()
        o.state.close()
    o = Overlord(**where, clock=clock)
    try:
        h = Approver()
        o.task_runner.add_handler("approve", h)
        with o.state:
            assert o.state.emit("after-restart", "yes") == 1
        o.settle(TIMEOUT)
        assert status_of(o, tid) is Status.DONE
        assert h.got == {tid: "yes"}
    finally:
        o.stop()
        o.state.close()


def test_bad_event_keys_and_data_are_refused_in_one_line(ov: Overlord) -> None:
    with ov.state:
        with pytest.raises(ValueError, match="cannot use an empty event key"):
            ov.state.emit("", 1)
        with pytest.raises(TypeError, match="cannot use event key 3"):
            ov.state.emit(3, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            ov.state.emit("k", object())


def test_an_event_emitted_on_another_host_wakes_the_task_at_once(pg_url: str) -> None:
    """PostgreSQL: the emit's commit makes the task runnable and wakes the looping host (NOTIFY)."""
    o = Overlord(url=pg_url)
    h = Approver()
    o.task_runner.add_handler("approve", h)
    (tid,) = new_waiting(o, "from-elsewhere")
    o.loop()
    try:
        other = State.open(url=pg_url)
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:  # the task parks (an event: its status, polled with a bound)
                with other:
                    t = other.task(tid)
                    assert t is not None
                    if t.status is Status.WAIT:
                        chg = t.change()
                        break
                assert time.monotonic() < deadline, "the task never parked"
                time.sleep(0.01)
            with other:
                assert other.emit("from-elsewhere", 7) == 1
            assert chg is not None and chg.wait_ready(TIMEOUT)
            with other:
                assert other.task(tid).status is Status.DONE  # type: ignore[union-attr]
        finally:
            other.close()
    finally:
        o.stop()
        o.state.close()
    assert h.got == {tid: 7}
