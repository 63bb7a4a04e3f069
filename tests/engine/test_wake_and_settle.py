# SPDX-License-Identifier: GPL-3.0-or-later
"""New work starts at once under loop(); stuck work (cycles, generator handlers) is visible;
settle() converges like snapd's Settle."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Overlord, Retry, Status, Task, TaskDependencyCycleError, Tomb
from engine.overlord import ENSURE_INTERVAL
from tests.support.helpers import task_of

WAIT = 30.0  # generous bound for anything that waits; far below the 5-minute ensure interval


def _noop(task: Task, tomb: Tomb) -> None:
    pass


def test_a_change_committed_while_the_loop_runs_starts_without_ensure_before(overlord: Overlord) -> None:
    assert WAIT < ENSURE_INTERVAL
    started: dict[str, threading.Event] = {}

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            tid = task.id
        started[tid].set()

    overlord.task_runner.add_handler("k", do)
    overlord.loop()
    for i in range(20):  # one after the other, as a daemon's API would commit them
        with overlord.state:
            chg = overlord.state.new_change("c", f"change {i}")
            t = overlord.state.new_task("k", "runs at once")
            chg.add_task(t)
            started[t.id] = threading.Event()
            tid = t.id
        assert started[tid].wait(WAIT), f"change {i} did not start within {WAIT} s without ensure_before"


def test_the_wake_does_not_go_through_ensure_before(overlord: Overlord) -> None:
    """ensure_before stays exactly what managers and the runner ask for (snapd's contract)."""
    asked: list[float] = []
    hook = overlord._ensure_before

    def recording(delay: float) -> None:
        asked.append(delay)
        hook(delay)

    overlord.state.set_ensure_before_hook(recording)
    overlord.task_runner.add_handler("k", _noop)
    with overlord.state:
        chg = overlord.state.new_change("c", "no ensure_before asked by the committer")
        chg.add_task(overlord.state.new_task("k", "t"))
    assert asked == []


def test_tasks_waiting_for_each_other_in_a_cycle_end_in_error(overlord: Overlord) -> None:
    overlord.task_runner.add_handler("k", _noop)
    st = overlord.state
    with st:
        chg = st.new_change("cyclic", "a change with a cycle")
        a, b, c, free = (st.new_task("k", n) for n in ("a", "b", "c", "free"))
        b.wait_for(a)
        c.wait_for(b)
        a.wait_for(c)
        free.join_lane(st.new_lane())  # its own lane: the cycle's errors do not abort it
        for t in (a, b, c, free):
            chg.add_task(t)
        with pytest.raises(TaskDependencyCycleError):
            chg.check_task_dependencies()  # building one is allowed, as in snapd
        ids, cid, free_id = sorted(int(t.id) for t in (a, b, c)), chg.id, free.id
    overlord.settle(WAIT)
    with st:
        chg2 = st.change(cid)
        assert chg2 is not None
        assert chg2.is_ready() and chg2.status is Status.ERROR
        names = " ".join(f"{i}:k" for i in ids)
        for tid in ids:
            t = task_of(st, str(tid))
            assert t.status is Status.ERROR
            assert t.log()[-1].endswith(f"ERROR dependency cycle involving tasks [{names}]"), t.log()
        assert task_of(st, free_id).status is Status.DONE
        err = chg2.err()
        assert err is not None and f"dependency cycle involving tasks [{names}]" in str(err)


def test_a_cycle_across_two_changes_is_found(overlord: Overlord) -> None:
    overlord.task_runner.add_handler("k", _noop)
    st = overlord.state
    with st:
        one, two = st.new_change("one", "first half"), st.new_change("two", "second half")
        a, b = st.new_task("k", "a"), st.new_task("k", "b")
        one.add_task(a)
        two.add_task(b)
    with st:  # the edges come in a later unit of work
        a.wait_for(b)
        b.wait_for(a)
        cids = (one.id, two.id)
    overlord.settle(WAIT)
    with st:
        for cid in cids:
            chg = st.change(cid)
            assert chg is not None and chg.status is Status.ERROR


def test_a_cycle_in_a_database_written_before_is_found_at_the_first_pass(tmp_path: Path) -> None:
    o = Overlord(tmp_path / "state.db")
    with o.state:
        chg = o.state.new_change("cyclic", "written by a process without handlers")
        a, b = o.state.new_task("k", "a"), o.state.new_task("k", "b")
        a.wait_for(b)
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
        cid = chg.id
    o.stop()
    o = Overlord(tmp_path / "state.db")
    o.task_runner.add_handler("k", _noop)
    try:
        o.settle(WAIT)
        with o.state:
            chg2 = o.state.change(cid)
            assert chg2 is not None and chg2.status is Status.ERROR
    finally:
        o.stop()


def test_a_generator_handler_is_refused_at_registration(overlord: Overlord) -> None:
    def gen(task: Task, tomb: Tomb) -> Iterator[None]:
        yield None

    async def agen(task: Task, tomb: Tomb) -> object:
        yield None

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            overlord.task_runner.add_handler("k", fn)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="generator function"):
            overlord.task_runner.add_handler("k", _noop, fn)  # type: ignore[arg-type]
    assert "k" not in overlord.task_runner.known_task_kinds()


def test_a_handler_returning_a_generator_fails_its_task(overlord: Overlord) -> None:
    ran: list[int] = []

    def body() -> Iterator[None]:
        ran.append(1)
        yield None

    overlord.task_runner.add_handler("k", lambda task, tomb: body())  # type: ignore[arg-type,return-value]
    with overlord.state:
        chg = overlord.state.new_change("c", "handler returns a generator")
        t = overlord.state.new_task("k", "t")
        chg.add_task(t)
        tid = t.id
    overlord.settle(WAIT)
    with overlord.state:
        t2 = task_of(overlord.state, tid)
        assert t2.status is Status.ERROR and "returned a generator" in t2.log()[-1]
    assert ran == []


def test_settle_waits_for_a_retry_asked_for_a_moment_later(overlord: Overlord) -> None:
    calls: list[int] = []

    def do(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Retry(after=0.2)

    overlord.task_runner.add_handler("k", do)
    with overlord.state:
        chg = overlord.state.new_change("c", "retries once")
        chg.add_task(overlord.state.new_task("k", "t"))
        cid = chg.id
    overlord.settle(WAIT)
    with overlord.state:
        chg2 = overlord.state.change(cid)
        assert chg2 is not None and chg2.status is Status.DONE
    assert len(calls) == 2


def test_settle_runs_the_pass_a_manager_asks_for_with_a_delay(overlord: Overlord) -> None:
    class Manager:
        def __init__(self) -> None:
            self.ensures = 0

        def ensure(self) -> None:
            self.ensures += 1
            if self.ensures < 3:
                with overlord.state:
                    overlord.state.ensure_before(0.02)

        def wait(self) -> None:
            pass

        def stop(self) -> None:
            pass

    m = Manager()
    overlord.add_manager(m)
    overlord.settle(WAIT)
    assert m.ensures == 3


def test_settle_is_not_converging_when_work_keeps_being_scheduled(overlord: Overlord) -> None:
    def do(task: Task, tomb: Tomb) -> None:
        raise Retry(after=0.05)

    overlord.task_runner.add_handler("k", do)
    with overlord.state:
        chg = overlord.state.new_change("c", "retries forever")
        chg.add_task(overlord.state.new_task("k", "t"))
    with pytest.raises(TimeoutError, match="Settle is not converging"):
        overlord.settle(1.0)


def test_settle_does_not_wait_for_what_is_due_after_the_ensure_interval(overlord: Overlord) -> None:
    def do(task: Task, tomb: Tomb) -> None:
        raise Retry(after=ENSURE_INTERVAL * 2)

    overlord.task_runner.add_handler("k", do)
    with overlord.state:
        chg = overlord.state.new_change("c", "retries much later")
        t = overlord.state.new_task("k", "t")
        chg.add_task(t)
        tid = t.id
    overlord.settle(WAIT)  # returns: nothing is scheduled before the interval
    with overlord.state:
        assert task_of(overlord.state, tid).status is Status.DOING
