# SPDX-License-Identifier: GPL-3.0-or-later
"""Keyed concurrency and rate limits (runner.set_concurrency), one runner, on both backends.

Several runner hosts on PostgreSQL, a host killed while it holds a slot,
and the journal of starts and ends: tests/test_concurrency_hosts.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, Retry, Status, Task
from engine.testing import FakeClock
from engine.tomb import Tomb

TIMEOUT = 30.0


@pytest.fixture
def ov(backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Overlord]:
    where: dict[str, Any] = ({"url": request.getfixturevalue("pg_url")} if backend == "postgresql"
                             else {"path": tmp_path / "state.db"})
    o = Overlord(**where, clock=clock)
    yield o
    o.stop()
    o.state.close()


class Gate:
    """Gate is a handler that blocks until released, counting how many run at once per key."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Condition()
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.started: list[str] = []

    def __call__(self, task: Task, tomb: Tomb) -> None:
        with task.state:
            key, tid = task.get("key", "k"), task.id
        with self.lock:
            self.started.append(tid)
            self.running[key] = self.running.get(key, 0) + 1
            self.most[key] = max(self.most.get(key, 0), self.running[key])
            self.lock.notify_all()
        while not self.open.wait(0.05):  # released by the test, or stopped with the runner
            if tomb.is_dying():
                break
        with self.lock:
            self.running[key] -= 1


def wait_running(gate: Gate, n: int) -> None:
    """wait_running returns once n handlers are inside the gate (started, not released)."""
    with gate.lock:
        assert gate.lock.wait_for(lambda: sum(gate.running.values()) >= n, TIMEOUT)


def add_tasks(o: Overlord, kind: str, keys: list[str]) -> list[str]:
    with o.state:
        chg = o.state.new_change(kind, "Many")
        out = []
        for key in keys:
            t = o.state.new_task(kind, f"Task with key {key}")
            t.set("key", key)
            chg.add_task(t)
            out.append(t.id)
    return out


def statuses(o: Overlord, ids: list[str]) -> list[Status]:
    with o.state:
        return [o.state.task(t).status for t in ids]


def one_pass(o: Overlord) -> None:
    o.state_engine.start_up()
    o.state_engine.ensure()


def test_at_most_limit_tasks_with_a_key_run_at_once(ov: Overlord) -> None:
    gate = Gate()
    ov.task_runner.add_handler("dl", gate)
    ov.task_runner.set_concurrency("dl", "downloads", 2)
    ids = add_tasks(ov, "dl", ["k"] * 5)
    one_pass(ov)
    one_pass(ov)  # a second pass while two run starts nothing more
    assert Counter(statuses(ov, ids)) == {Status.DOING: 2, Status.DO: 3}
    wait_running(gate, 2)
    gate.open.set()
    ov.settle(TIMEOUT)
    assert statuses(ov, ids) == [Status.DONE] * 5
    assert gate.most == {"k": 2}


def test_a_key_per_task_limits_each_key_on_its_own(ov: Overlord) -> None:
    gate = Gate()
    ov.task_runner.add_handler("refresh", gate)
    ov.task_runner.set_concurrency("refresh", lambda t: "snap:" + t.get("key"), 1)
    ids = add_tasks(ov, "refresh", ["a", "a", "b", "b", "c"])
    one_pass(ov)
    running = [t for t, s in zip(ids, statuses(ov, ids), strict=True) if s is Status.DOING]
    assert len(running) == 3  # one per snap
    wait_running(gate, 3)
    gate.open.set()
    ov.settle(TIMEOUT)
    assert statuses(ov, ids) == [Status.DONE] * 5
    assert gate.most == {"a": 1, "b": 1, "c": 1}


def test_tasks_of_other_kinds_are_not_held_back(ov: Overlord) -> None:
    gate = Gate()
    ov.task_runner.add_handler("dl", gate)
    ov.task_runner.add_handler("other", gate)
    ov.task_runner.set_concurrency("dl", "downloads", 1)
    dl = add_tasks(ov, "dl", ["k", "k"])
    other = add_tasks(ov, "other", ["o", "o", "o"])
    one_pass(ov)
    assert Counter(statuses(ov, dl)) == {Status.DOING: 1, Status.DO: 1}
    assert statuses(ov, other) == [Status.DOING] * 3
    gate.open.set()
    ov.settle(TIMEOUT)


def test_a_rate_limits_the_starts_per_interval_on_the_states_clock(ov: Overlord, clock: FakeClock) -> None:
    done: list[str] = []

    def quick(task: Task, tomb: Tomb) -> None:
        with task.state:
            done.append(task.id)

    ov.task_runner.add_handler("call", quick)
    ov.task_runner.set_concurrency("call", "api", 10, rate=2, per=600)
    ids = add_tasks(ov, "call", ["k"] * 5)
    ov.settle(TIMEOUT)
    assert len(done) == 2 and statuses(ov, ids).count(Status.DO) == 3
    clock.advance(599)
    one_pass(ov)
    ov.task_runner.wait()
    assert len(done) == 2
    clock.advance(2)
    ov.settle(TIMEOUT)
    assert len(done) == 4
    clock.advance(600)
    ov.settle(TIMEOUT)
    assert len(done) == 5 and statuses(ov, ids) == [Status.DONE] * 5


def test_a_restart_does_not_start_a_rate_afresh(backend: str, tmp_path: Path, clock: FakeClock,
                                                request: pytest.FixtureRequest) -> None:
    where: dict[str, Any] = ({"url": request.getfixturevalue("pg_url")} if backend == "postgresql"
                             else {"path": tmp_path / "state.db"})
    done: list[str] = []

    def quick(task: Task, tomb: Tomb) -> None:
        with task.state:
            done.append(task.id)

    def life() -> Overlord:
        o = Overlord(**where, clock=clock)
        o.task_runner.add_handler("call", quick)
        o.task_runner.set_concurrency("call", "api", 10, rate=2, per=600)
        return o

    o = life()
    ids = add_tasks(o, "call", ["k"] * 5)
    o.settle(TIMEOUT)
    assert len(done) == 2
    o.stop()
    o.state.close()
    # The next life, a minute later, counts the two starts of the last one: none starts before they leave the
    # interval, the first of the next two when they have.
    clock.advance(60)
    o = life()
    try:
        o.settle(TIMEOUT)
        assert len(done) == 2 and statuses(o, ids).count(Status.DO) == 3
        clock.advance(541)
        o.settle(TIMEOUT)
        assert len(done) == 4
    finally:
        o.stop()
        o.state.close()


def test_a_raising_key_function_holds_back_its_task_only(ov: Overlord) -> None:
    gate = Gate()
    gate.open.set()
    ov.task_runner.add_handler("dl", gate)

    def key(t: Task) -> str:
        if t.get("key") == "bad":
            raise RuntimeError("no key")
        return "k"

    ov.task_runner.set_concurrency("dl", key, 1)
    bad, good = add_tasks(ov, "dl", ["bad", "good"])
    ov.settle(TIMEOUT)
    assert statuses(ov, [bad, good]) == [Status.DO, Status.DONE]


@pytest.mark.parametrize(("args", "message"), [
    (("dl", "k", 0), "cannot limit task kind 'dl' to 0 tasks at once"),
    (("dl", "", 1), "the concurrency key is empty"),
    (("dl", "k", 1, 5), "say per how many seconds"),
    (("dl", "k", 1, 0, 5), "cannot limit task kind 'dl' to 0 starts"),
    (("dl", "k", 1, 5, 0), "give a positive interval"),
])
def test_bad_limits_are_refused_in_one_line(ov: Overlord, args: tuple[Any, ...], message: str) -> None:
    kind, key, limit, *rest = args
    kw = dict(zip(("rate", "per"), rest, strict=False))
    with pytest.raises(ValueError, match=message):
        ov.task_runner.set_concurrency(kind, key, limit, **kw)


def test_a_task_that_asked_for_a_retry_is_not_held_back_by_its_own_slot(ov: Overlord, clock: FakeClock) -> None:
    calls: list[str] = []

    def flaky(task: Task, tomb: Tomb) -> None:
        calls.append("run")
        if len(calls) == 1:
            raise Retry(after=600)  # it stays Doing until then, holding no lease

    ov.task_runner.add_handler("flaky", flaky)
    ov.task_runner.set_concurrency("flaky", "k", 1)
    (tid,) = add_tasks(ov, "flaky", ["k"])
    ov.settle(TIMEOUT)
    assert calls == ["run"]
    clock.advance(601)
    ov.settle(TIMEOUT)
    assert calls == ["run", "run"] and statuses(ov, [tid]) == [Status.DONE]
