# SPDX-License-Identifier: GPL-3.0-or-later
"""Repair of failed changes: Change.retry and State.select_changes (engine.repair), on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from engine import ChangeConflictError, EngineError, State, Status, Task, TaskRunner, TaskSet
from engine.testing import FakeClock
from engine.tomb import Tomb

D, E, H, U, DO = Status.DONE, Status.ERROR, Status.HOLD, Status.UNDONE, Status.DO


class Calls:
    """Calls records the handler calls; a task whose summary is in fail raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()


@pytest.fixture
def runner(st: State) -> Iterator[tuple[TaskRunner, Calls]]:
    calls = Calls()

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            name = task.summary
        calls.calls.append(f"do {name}")
        if name in calls.fail:
            raise RuntimeError(f"{name} broke")

    def undo(task: Task, tomb: Tomb) -> None:
        with task.state:
            name = task.summary
        calls.calls.append(f"undo {name}")

    r = TaskRunner(st)
    r.add_handler("step", do, undo)
    yield r, calls
    r.stop()


def _settle(r: TaskRunner) -> None:
    for _ in range(12):
        r.ensure()
        r.wait()


def _chain(st: State, *names: str, lane: bool = True, key: str = "snap:hello") -> str:
    """_chain makes a change of tasks one after the other (in one lane: an error undoes what was done)."""
    with st:
        chg = st.new_change("install", "chain", affects=[key])
        ts = TaskSet()
        prev = None
        for n in names:
            t = st.new_task("step", n)
            if prev is not None:
                t.wait_for(prev)
            ts.add_task(t)
            prev = t
        if lane:
            ts.join_lane(st.new_lane())
        chg.add_all(ts)
        return chg.id


def _statuses(st: State, cid: str) -> list[tuple[str, Status]]:
    with st:
        chg = st.change(cid)
        assert chg is not None
        return [(t.summary, t.status) for t in chg.tasks()]


def test_retry_runs_the_failed_task_and_what_waits_on_it_keeping_what_is_done(
        st: State, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    with st:  # two parts in two lanes: one succeeds, the other fails half way (only its lane is aborted)
        chg = st.new_change("install", "two parts")
        a, b, c = (st.new_task("step", n) for n in ("a", "b", "c"))
        c.wait_for(b)
        a.join_lane(st.new_lane())
        TaskSet(b, c).join_lane(st.new_lane())
        chg.add_all(TaskSet(a, b, c))
        cid = chg.id
    calls.fail = {"b"}
    _settle(r)
    assert _statuses(st, cid) == [("a", D), ("b", E), ("c", H)]
    calls.calls.clear()
    calls.fail = set()
    with st:
        chg = st.change(cid)
        assert chg is not None and chg.status is E and chg.is_ready() and chg.attempt == 1
        retried = chg.retry()
        assert retried == [b.id, c.id]
        assert chg.status is DO and not chg.is_ready() and chg.attempt == 2 and chg.err() is None
        assert "Retrying (attempt 2 of the change; was Error)" in b.log()[-1]
    _settle(r)
    assert calls.calls == ["do b", "do c"]  # a, Done, is kept
    with st:
        chg = st.change(cid)
        assert chg is not None and chg.status is D and chg.is_ready()


def test_retry_after_the_lane_was_undone_runs_it_again_from_the_start(
        st: State, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    cid = _chain(st, "download", "mount", "link")
    calls.fail = {"mount"}
    _settle(r)
    assert _statuses(st, cid) == [("download", U), ("mount", E), ("link", H)]
    calls.calls.clear()
    calls.fail = set()
    with st:
        chg = st.change(cid)
        assert chg is not None
        assert len(chg.retry()) == 3
    _settle(r)
    assert calls.calls == ["do download", "do mount", "do link"]
    assert _statuses(st, cid) == [("download", D), ("mount", D), ("link", D)]


def test_a_change_retried_and_failing_again_can_be_retried_again(
        st: State, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    cid = _chain(st, "x", lane=False)
    calls.fail = {"x"}
    _settle(r)
    with st:
        chg = st.change(cid)
        assert chg is not None
        chg.retry()
    _settle(r)
    with st:
        chg = st.change(cid)
        assert chg is not None and chg.status is E and chg.attempt == 2
        chg.retry()
        assert chg.attempt == 3
    calls.fail = set()
    _settle(r)
    assert calls.calls == ["do x"] * 3


def test_retry_is_refused_for_a_change_not_ready_or_without_failure_or_in_conflict(
        st: State, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    unready = _chain(st, "never-run")
    with st:
        chg = st.change(unready)
        assert chg is not None
        with pytest.raises(EngineError, match=f"^cannot retry change {unready}: it is not ready"):
            chg.retry()
        for t in chg.tasks():
            t.set_status(D)
    with st:
        chg = st.change(unready)
        assert chg is not None
        with pytest.raises(EngineError, match="no task of it failed"):
            chg.retry()
    failed = _chain(st, "f")
    calls.fail = {"f"}
    _settle(r)
    with st:
        busy = st.new_change("remove", "busy", affects=["snap:hello"])
        busy.add_task(st.new_task("other", "held"))
    with st:
        chg = st.change(failed)
        assert chg is not None
        with pytest.raises(ChangeConflictError, match=f"change {busy.id} \\(remove\\) is in progress"):
            chg.retry()
        assert chg.status is E  # nothing changed


def test_select_changes_by_status_kind_age_and_label_then_act_in_one_unit(
        st: State, clock: FakeClock, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    old_failed = _chain(st, "old", key="snap:old")
    clock.advance(hours=3)
    new_failed = _chain(st, "new", key="snap:new")
    calls.fail = {"old", "new"}
    _settle(r)
    with st:
        other = st.new_change("refresh", "running")
        other.add_task(st.new_task("none", "never runs"))
        other.set("origin", "api")
        st.change(new_failed).set("origin", "api")  # type: ignore[union-attr]
    calls.fail = set()
    with st:
        assert [c.id for c in st.select_changes(status=E)] == [old_failed, new_failed]
        assert [c.id for c in st.select_changes(status=["Error", "Do"], kind="refresh")] == [other.id]
        assert [c.id for c in st.select_changes(before=clock() - timedelta(hours=1))] == [old_failed]
        assert [c.id for c in st.select_changes(older_than=3600)] == [old_failed]
        assert [c.id for c in st.select_changes(label=("origin", "api"))] == [new_failed, other.id]
        with pytest.raises(ValueError, match=r"^cannot select changes by status 'Broken'"):
            st.select_changes(status="Broken")
        for chg in st.select_changes(status=E, kind="install"):  # one unit of work: one transaction
            chg.retry()
        other.abort()
    _settle(r)
    with st:
        assert [(c.id, c.status) for c in st.changes()] == [(old_failed, D), (new_failed, D), (other.id, H)]


def test_a_bulk_retry_is_all_or_nothing(st: State, runner: tuple[TaskRunner, Calls]) -> None:
    r, calls = runner
    a = _chain(st, "a", key="snap:a")
    b = _chain(st, "b", key="snap:b")
    calls.fail = {"a", "b"}
    _settle(r)
    with st:
        busy = st.new_change("remove", "busy", affects=["snap:b"])
        busy.add_task(st.new_task("other", "held"))
    with pytest.raises(ChangeConflictError), st:  # one unit of work: the conflict on b undoes a's retry too
        for chg in st.select_changes(status=E):
            chg.retry()
    assert [s for _, s in _statuses(st, a)] == [E] and [s for _, s in _statuses(st, b)] == [E]
    with st:
        chg = st.change(a)
        assert chg is not None and chg.attempt == 1 and chg.is_ready()
