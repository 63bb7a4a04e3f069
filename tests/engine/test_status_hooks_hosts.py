# SPDX-License-Identifier: GPL-3.0-or-later
"""Change status hooks with two hosts on one PostgreSQL database (engine correctness; docs/scale-out.md).

A move is told on the host whose unit of work makes it, at that moment, with
its lock held; when the commit stores a status its unit's counts did not
foresee (another host committed meanwhile), the hooks of the host whose
commit stores it are told then. Other hosts are never told, neither late nor
after a restart: they follow through change-update notices.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from engine import Change, State, Status
from tests.support.helpers import task_of, unit_held_open

WAIT = 30.0  # generous bound for a thread to reach a point; never a timing assertion

Told = list[tuple[str, Status, Status]]


def _hooked(url: str) -> tuple[State, Told]:
    """_hooked opens a host's State on url with a change status hook noting (change id, old, new)."""
    st = State.open(url=url)
    told: Told = []
    with st:
        st.add_change_status_changed_handler(lambda c, old, new: told.append((c.id, old, new)))
    return st, told


@pytest.fixture
def hosts(pg_url: str) -> Iterator[tuple[State, Told, State, Told]]:
    a, told_a = _hooked(pg_url)
    b, told_b = _hooked(pg_url)
    yield a, told_a, b, told_b
    a.close()
    b.close()


def _two_tasks(st: State) -> tuple[str, str, str]:
    with st:
        chg = st.new_change("c", "two tasks, two hosts")
        t1, t2 = st.new_task("k", "t1"), st.new_task("k", "t2")
        chg.add_task(t1)
        chg.add_task(t2)
        return chg.id, t1.id, t2.id


def _set(st: State, tid: str, status: Status) -> None:
    with st:
        task_of(st, tid).set_status(status)


def test_a_move_is_told_on_the_host_that_makes_it_and_never_on_the_other(
        hosts: tuple[State, Told, State, Told]) -> None:
    a, told_a, b, told_b = hosts
    cid, t1, t2 = _two_tasks(a)
    _set(b, t2, Status.DOING)
    _set(a, t1, Status.DONE)  # the change stays Doing: nothing to tell
    _set(b, t2, Status.DONE)
    assert told_b == [(cid, Status.DO, Status.DOING), (cid, Status.DOING, Status.DONE)]
    with a:  # a reads the change, and moves nothing of it: it is told nothing, not even late
        chg = a.change(cid)
        assert chg is not None and chg.status is Status.DONE
    _set(a, t1, Status.DONE)
    assert told_a == []


def test_the_status_a_commit_stores_is_told_on_its_host_when_its_own_counts_missed_it(
        hosts: tuple[State, Told, State, Told]) -> None:
    """a and b each finish one task of a change at once: neither unit of work sees the other's Done.

    a's commit, the later one, counts both under the change's row lock and
    stores Done: a's hooks are told Do -> Done then (once), b's never.
    """
    a, told_a, b, told_b = hosts
    cid, t1, t2 = _two_tasks(a)
    seen_in_unit: list[Status] = []

    def finish_t1() -> None:
        task_of(a, t1).set_status(Status.DONE)
        chg = a.change(cid)
        assert chg is not None
        seen_in_unit.append(chg.status)

    with unit_held_open(a, finish_t1, WAIT) as errors:
        _set(b, t2, Status.DONE)  # commits while a's unit is open: b counts t1 still Do
    assert errors == [] and seen_in_unit == [Status.DO]
    assert told_a == [(cid, Status.DO, Status.DONE)]
    assert told_b == []
    with b:
        chg = b.change(cid)
        assert chg is not None and chg.status is Status.DONE and chg.is_ready()
    assert told_b == []


def test_what_a_hook_told_at_commit_writes_commits_with_that_commit(
        hosts: tuple[State, Told, State, Told]) -> None:
    a, told_a, b, _ = hosts
    cid, t1, t2 = _two_tasks(a)

    def note(chg: Change, old: Status, new: Status) -> None:
        chg.state.set(f"told-{chg.id}", f"{old.value} -> {new.value}")

    with a:
        a.add_change_status_changed_handler(note)
    with unit_held_open(a, lambda: task_of(a, t1).set_status(Status.DONE), WAIT) as errors:
        _set(b, t2, Status.DONE)
    assert errors == [] and told_a == [(cid, Status.DO, Status.DONE)]
    with b:  # another host reads it at once: the write came with the commit that stored Done
        assert b.get(f"told-{cid}") == "Do -> Done"


def test_a_hook_raising_when_told_at_commit_is_logged_and_the_commit_goes_on(
        hosts: tuple[State, Told, State, Told], caplog: pytest.LogCaptureFixture) -> None:
    a, told_a, b, _ = hosts
    cid, t1, t2 = _two_tasks(a)

    def broken(chg: Change, old: Status, new: Status) -> None:
        raise RuntimeError("hook broke")

    with a:
        a.add_change_status_changed_handler(broken)
    with (caplog.at_level(logging.ERROR, logger="engine.change"),
          unit_held_open(a, lambda: task_of(a, t1).set_status(Status.DONE), WAIT) as errors):
        _set(b, t2, Status.DONE)
    assert errors == [] and told_a == [(cid, Status.DO, Status.DONE)]
    assert any("status hook" in r.getMessage() and "hook broke" in r.getMessage() for r in caplog.records)
    with b:
        chg = b.change(cid)
        assert chg is not None and chg.status is Status.DONE and chg.is_ready()


def test_a_host_started_again_is_not_told_what_was_stored_while_it_was_down(pg_url: str) -> None:
    """Its next move's old status is the stored one."""
    a, told_a = _hooked(pg_url)
    try:
        cid, t1, t2 = _two_tasks(a)
        _set(a, t1, Status.DOING)
        b, told_b = _hooked(pg_url)  # a second host, which stops
        b.close()
        _set(a, t1, Status.DONE)
        _set(a, t2, Status.DONE)
        assert told_a == [(cid, Status.DO, Status.DOING), (cid, Status.DOING, Status.DO), (cid, Status.DO, Status.DONE)]
        b, told_b = _hooked(pg_url)  # started again
        try:
            with b:
                chg = b.change(cid)
                assert chg is not None and chg.status is Status.DONE
            assert told_b == []
            _set(b, t2, Status.UNDO)
            assert told_b == [(cid, Status.DONE, Status.UNDO)]
        finally:
            b.close()
    finally:
        a.close()


def test_two_hosts_making_the_same_move_at_once_both_tell_it(hosts: tuple[State, Told, State, Told]) -> None:
    """At least once, not exactly once: each unit of work foresees Doing as it claims a task of a Do change."""
    a, told_a, b, told_b = hosts
    cid, t1, t2 = _two_tasks(a)
    with unit_held_open(a, lambda: task_of(a, t1).set_status(Status.DOING), WAIT) as errors:
        _set(b, t2, Status.DOING)
    assert errors == []
    assert told_a == told_b == [(cid, Status.DO, Status.DOING)]


def test_two_runner_hosts_finishing_a_change_tell_its_end_once(pg_url: str) -> None:
    """Host A runs the task of kind "a", host B the one of kind "b", both ending together: Done is told once,
    on one host, whichever commit stored it."""
    from engine import Overlord, Task, Tomb

    both = threading.Barrier(2, timeout=WAIT)

    def together(task: Task, tomb: Tomb) -> None:
        both.wait()

    told: dict[str, Told] = {"a": [], "b": []}
    hosts = []
    try:
        for name in ("a", "b"):
            o = Overlord(url=pg_url, workers=2)
            hosts.append(o)
            o.task_runner.add_handler(name, together)
            with o.state:
                o.state.add_change_status_changed_handler(
                    lambda c, old, new, name=name: told[name].append((c.id, old, new)))
        with hosts[0].state:
            st = hosts[0].state
            chg = st.new_change("c", "one task a host")
            for kind in ("a", "b"):
                chg.add_task(st.new_task(kind, kind))
            cid = chg.id
        for o in hosts:
            o.loop()
        assert chg.wait_ready(WAIT)
        with hosts[1].state:
            other = hosts[1].state.change(cid)
            assert other is not None and other.status is Status.DONE
    finally:
        for o in hosts:
            o.stop()
            o.state.close()
    ends = [(name, old) for name in ("a", "b") for c, old, new in told[name] if c == cid and new is Status.DONE]
    assert len(ends) == 1, told
