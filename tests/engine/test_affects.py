# SPDX-License-Identifier: GPL-3.0-or-later
"""Conflicts that can wait: what a change affects, refused or queued (engine.keys), on both backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import ChangeConflictError, State, Status, Task, TaskRunner
from engine.testing import FakeClock
from engine.tomb import Tomb


def _change(st: State, summary: str, affects: list[str], on_conflict: str = "refuse", kind: str = "work") -> str:
    """_change makes a change of one task of kind (no handler for "hold": it stays Do until set by hand)."""
    with st:
        chg = st.new_change("test", summary, affects=affects, on_conflict=on_conflict)
        chg.add_task(st.new_task(kind, summary))
        return chg.id


def _finish(st: State, cid: str, status: Status = Status.DONE) -> None:
    with st:
        chg = st.change(cid)
        assert chg is not None
        for t in chg.tasks():
            t.set_status(status)


def _statuses(st: State, *ids: str) -> list[Status]:
    with st:
        out = []
        for cid in ids:
            chg = st.change(cid)
            assert chg is not None
            out.append(chg.status)
        return out


@pytest.fixture
def runner(st: State) -> Iterator[tuple[TaskRunner, list[str]]]:
    ran: list[str] = []

    def work(task: Task, tomb: Tomb) -> None:
        with task.state:
            chg = task.change()
            assert chg is not None
            ran.append(chg.summary)

    r = TaskRunner(st)
    r.add_handler("work", work)
    yield r, ran
    r.stop()


def _run(r: TaskRunner) -> None:
    for _ in range(3):
        r.ensure()
        r.wait()


def test_a_change_affecting_what_an_unready_one_affects_is_refused(st: State) -> None:
    busy = _change(st, "busy", ["snap:hello"], kind="hold")
    with st, pytest.raises(ChangeConflictError, match=f"change {busy} \\(test\\) is in progress for snap:hello") as e:
        st.new_change("install", "again", affects=["snap:world", "snap:hello"])
    assert e.value.change_id == busy and e.value.subject == "snap:hello"
    with st:
        assert [c.id for c in st.changes()] == [busy]  # nothing was made
    other = _change(st, "another snap", ["snap:world"])  # another key: no conflict
    _finish(st, busy)
    _change(st, "hello again", ["snap:hello"])  # ready now: no conflict
    with st:
        assert len(st.changes()) == 3 and other


def test_affecting_lists_the_unready_changes_oldest_first(st: State) -> None:
    a = _change(st, "a", ["snap:x", "snap:y"], kind="hold")
    b = _change(st, "b", ["snap:y"], on_conflict="queue", kind="hold")
    c = _change(st, "c", ["snap:z"], kind="hold")
    with st:
        assert [x.id for x in st.affecting(["snap:y"])] == [a, b]
        assert [x.id for x in st.affecting("snap:x")] == [a]
        assert [x.id for x in st.affecting(["snap:y", "snap:z"], ignore=a)] == [b, c]
        assert st.affecting(["snap:none"]) == []
        chg = st.change(a)
        assert chg is not None and chg.affects() == ["snap:x", "snap:y"]
    _finish(st, a)
    with st:
        assert [x.id for x in st.affecting(["snap:x", "snap:y"])] == [b]


def test_a_key_added_later_is_found(st: State) -> None:
    a = _change(st, "a", [], kind="hold")
    with st:
        chg = st.change(a)
        assert chg is not None
        chg.affect("snap:late")
    with st:
        assert [x.id for x in st.affecting(["snap:late"])] == [a]


def test_a_queued_change_runs_once_the_older_ones_are_ready_in_order(
        st: State, runner: tuple[TaskRunner, list[str]]) -> None:
    r, ran = runner
    first = _change(st, "first", ["snap:hello"], kind="hold")
    second = _change(st, "second", ["snap:hello"], on_conflict="queue")
    third = _change(st, "third", ["snap:hello", "snap:world"], on_conflict="queue")
    free = _change(st, "free", ["snap:other"], on_conflict="queue")  # nothing older on its key: runs at once
    _run(r)
    assert ran == ["free"]
    assert _statuses(st, second, third) == [Status.DO, Status.DO]
    _finish(st, first)
    _run(r)
    assert ran == ["free", "second", "third"]  # the second first: the third waited for it too
    assert _statuses(st, second, third, free) == [Status.DONE] * 3


def test_a_change_queued_after_passes_that_found_none_queued_still_waits(
        st: State, runner: tuple[TaskRunner, list[str]]) -> None:
    r, ran = runner
    first = _change(st, "first", ["snap:hello"], kind="hold")
    _run(r)  # nothing queued: the next passes need not ask the database again, until something is queued
    second = _change(st, "second", ["snap:hello"], on_conflict="queue")
    _run(r)
    assert ran == [] and _statuses(st, second) == [Status.DO]
    _finish(st, first)
    _run(r)
    assert ran == ["second"]


def test_a_queued_change_runs_after_a_conflicting_change_fails(
        st: State, runner: tuple[TaskRunner, list[str]]) -> None:
    r, ran = runner
    first = _change(st, "first", ["snap:hello"], kind="hold")
    second = _change(st, "second", ["snap:hello"], on_conflict="queue")
    _run(r)
    assert ran == []
    _finish(st, first, Status.ERROR)
    _run(r)
    assert ran == ["second"]
    assert _statuses(st, first, second) == [Status.ERROR, Status.DONE]


def test_a_queued_change_keeps_waiting_across_a_restart(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    try:
        first = _change(st, "first", ["snap:hello"], kind="hold")
        _change(st, "second", ["snap:hello"], on_conflict="queue")
    finally:
        st.close()
    st = State.open(db_path, clock=clock)
    ran: list[str] = []
    r = TaskRunner(st)
    r.add_handler("work", lambda task, tomb: ran.append("second"))
    try:
        _run(r)
        assert ran == []
        _finish(st, first)
        _run(r)
        assert len(ran) == 1
    finally:
        r.stop()
        st.close()


def test_bad_affected_keys_and_choices_are_refused_in_one_line(st: State) -> None:
    with st:
        with pytest.raises(ValueError, match=r"^cannot use affected key ''"):
            st.new_change("k", "s", affects=[""])
        with pytest.raises(ValueError, match=r"on_conflict must be 'refuse' or 'queue', not 'wait'"):
            st.new_change("k", "s", affects=["a"], on_conflict="wait")
        with pytest.raises(TypeError, match=r"^cannot use affected key 3"):
            st.new_change("k", "s", affects=[3])  # type: ignore[list-item]


def test_a_change_queued_on_one_host_waits_for_a_change_of_another_host(pg_url: str) -> None:
    a, b = State.open(url=pg_url), State.open(url=pg_url)
    ran: list[str] = []
    r = TaskRunner(b)
    r.add_handler("work", lambda task, tomb: ran.append("queued"))
    try:
        first = _change(a, "first, host a", ["snap:hello"], kind="hold")
        _change(b, "queued, host b", ["snap:hello"], on_conflict="queue")
        with b, pytest.raises(ChangeConflictError):  # refused on host b too: one index for every host
            b.new_change("test", "refused", affects=["snap:hello"])
        _run(r)
        assert ran == []
        _finish(a, first)  # host a's commit
        _run(r)
        assert ran == ["queued"]
    finally:
        r.stop()
        a.close()
        b.close()


@pytest.mark.sqlite_only
def test_a_queued_change_waits_under_the_loop_where_outcomes_hand_on(db_path: Path) -> None:
    """Under loop(), the outcome of a task claims the next runnable tasks itself (the hand-on): a change
    queued behind the one in progress is not among them until that one is ready."""
    from engine import Overlord

    order: list[str] = []
    done = threading.Event()

    def step(task: Task, tomb: Tomb) -> None:
        with task.state:
            order.append(task.summary)
            if task.summary == "queued":
                done.set()

    o = Overlord(db_path)
    o.task_runner.add_handler("step", step)
    with o.state:
        first = o.state.new_change("test", "first", affects=["snap:hello"])
        a, b, c = (o.state.new_task("step", n) for n in ("a", "b", "c"))
        b.wait_for(a)
        c.wait_for(b)
        for t in (a, b, c):
            first.add_task(t)
        queued = o.state.new_change("test", "queued", affects=["snap:hello"], on_conflict="queue")
        queued.add_task(o.state.new_task("step", "queued"))
    o.loop()
    try:
        assert done.wait(60), f"the queued change never ran: {order}"
    finally:
        o.stop()
    assert order == ["a", "b", "c", "queued"]
