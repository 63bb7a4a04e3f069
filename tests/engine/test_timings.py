# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings: each run of a task's handlers, and each manager of slow ensure passes, kept as rows (engine.timings)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import engine.timings
from engine import Retry, State, StateEngine, Status, Task, TaskRunner
from engine.testing import FakeClock
from engine.tomb import Tomb
from tests.support.helpers import task_of


@pytest.fixture
def runner(st: State) -> Iterator[TaskRunner]:
    r = TaskRunner(st)
    yield r
    r.stop()


def settle(st: State, runner: TaskRunner, cid: str, rounds: int = 20) -> None:
    """settle runs ensure and wait until the change is ready (a Retry(after=0) runs at the next pass)."""
    for _ in range(rounds):
        runner.ensure()
        runner.wait()
        with st:
            chg = st.change(cid)
            assert chg is not None
            if chg.is_ready():
                return
    pytest.fail(f"change {cid} is not ready after {rounds} passes")


def runs(st: State, cid: str) -> list[tuple[str, str, int, str]]:
    with st:
        chg = st.change(cid)
        assert chg is not None
        return [(t.task_id, t.phase, t.attempt, t.outcome) for t in chg.timings()]


def test_every_run_of_do_and_undo_is_kept_with_its_outcome(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    calls = {"n": 0}

    def flaky(task: Task, tomb: Tomb) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise Retry()

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("no")

    def undo(task: Task, tomb: Tomb) -> None:
        pass

    runner.add_handler("flaky", flaky, undo)
    runner.add_handler("fail", fail)
    with st:
        chg = st.new_change("test", "runs")
        a, b = st.new_task("flaky", "a"), st.new_task("fail", "b")
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
        cid, aid, bid = chg.id, a.id, b.id
    settle(st, runner, cid)
    assert runs(st, cid) == [(aid, "do", 1, "retry"), (aid, "do", 2, "retry"), (aid, "do", 3, "done"),
                             (bid, "do", 1, "error"), (aid, "undo", 3, "undone")]
    with st:
        chg = st.change(cid)
        assert chg is not None
        timings = chg.timings()
        a_task = task_of(st, aid)
        # The durations add up to what the task records, and each run started at the State's clock.
        assert sum((t.duration for t in timings if t.task_id == aid and t.phase == "do"), timedelta(0)) \
            == pytest.approx(a_task.doing_time, abs=timedelta(microseconds=10))
        assert all(t.started <= clock() and t.kind in ("flaky", "fail") for t in timings)
        assert timings[0].to_json()["duration"] == timings[0].duration.total_seconds()


def test_a_run_is_written_by_the_commit_of_its_outcome(st: State, runner: TaskRunner) -> None:
    """No commit of its own: the row and the task's new status are in one transaction."""
    store = st._uow.store
    commits = {"n": 0}
    seen: dict[str, int] = {}
    real_commit, real_save, real_write = store.commit, store.save_timings, store.write

    def commit(*a: Any, **kw: Any) -> Any:
        commits["n"] += 1
        return real_commit(*a, **kw)

    def save_timings(runs: Any, *a: Any, **kw: Any) -> Any:
        if runs:
            seen["timing"] = commits["n"]
        return real_save(runs, *a, **kw)

    def write(changes: Any) -> Any:
        rows = [*changes.task_updates, *(row for _, part in changes.task_changes for row in part)]
        if any("Done" in row for row in rows):
            seen["done"] = commits["n"]
        return real_write(changes)

    store.commit, store.save_timings, store.write = commit, save_timings, write  # type: ignore[method-assign]
    try:
        runner.add_handler("k", lambda task, tomb: None)
        with st:
            chg = st.new_change("test", "one")
            chg.add_task(st.new_task("k", "one"))
        before = commits["n"]
        runner.ensure()
        runner.wait()
        # The claim, then the outcome with its timing: two commits, whatever the timings.
        assert commits["n"] - before == 2
        assert seen["timing"] == seen["done"] == before + 1
    finally:
        store.commit, store.save_timings, store.write = real_commit, real_save, real_write  # type: ignore[method-assign]


def test_a_run_started_its_duration_before_its_end_to_the_microsecond(st: State, clock: FakeClock) -> None:
    """The start kept is the State's clock when the outcome was recorded less the run's duration, whatever second,
    minute or day it falls in (the flush formats the rows of runs in the same second from one prefix)."""
    with st:
        chg = st.new_change("test", "starts")
        task = st.new_task("k", "one")
        chg.add_task(task)
        cid, tid = chg.id, int(task.id)
    base = datetime(2026, 12, 31, 23, 59, 59, 999_990, tzinfo=UTC)
    runs = [(base, 0.000_003), (base + timedelta(microseconds=9), 0.000_0125), (base + timedelta(microseconds=9), 0),
            (base + timedelta(microseconds=10), 0.000_011), (base + timedelta(microseconds=15), 1.5),
            (base + timedelta(seconds=61), 3600.25), (base + timedelta(seconds=61, microseconds=1), 0.000_002)]
    w = st._uow
    for i, (end, elapsed) in enumerate(runs):
        clock.set(end)
        with st:
            for _ in range(1 + i % 2):  # one run a commit, or two
                rec = w.records.trec(tid)
                w.dirty_task(rec)
                w.timings.task_run(rec, "do", 1, elapsed)
    with st:
        got = st.change(cid)
        assert got is not None
        started = [t.started for t in got.timings()]
    assert started == [end - timedelta(seconds=elapsed) for i, (end, elapsed) in enumerate(runs)
                       for _ in range(1 + i % 2)]


def test_each_task_keeps_its_newest_runs(st: State, runner: TaskRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.timings, "TASK_RUNS_KEEP", 3)
    left = {"n": 6}

    def again(task: Task, tomb: Tomb) -> None:
        left["n"] -= 1
        if left["n"]:
            raise Retry()

    runner.add_handler("again", again)
    with st:
        chg = st.new_change("test", "retries")
        chg.add_task(st.new_task("again", "again"))
        cid = chg.id
    settle(st, runner, cid)
    assert [(attempt, outcome) for _, _, attempt, outcome in runs(st, cid)] == [
        (4, "retry"), (5, "retry"), (6, "done")]


@pytest.mark.sqlite_only
def test_the_runs_go_with_their_change_when_it_is_pruned(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    runner = TaskRunner(st)
    runner.add_handler("k", lambda task, tomb: None)
    try:
        with st:
            chg = st.new_change("test", "pruned")
            chg.add_task(st.new_task("k", "one"))
            cid = chg.id
        settle(st, runner, cid)
    finally:
        runner.stop()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM task_timings").fetchone() == (1,)
        clock.advance(timedelta(days=2).total_seconds())
        with st:
            st.prune(clock() - timedelta(days=3), timedelta(hours=24), timedelta(days=3), 500)
            assert st.change(cid) is None
        assert conn.execute("SELECT count(*) FROM task_timings").fetchone() == (0,)
    finally:
        conn.close()


class Slow:
    """Slow is a manager with nothing to do."""

    def ensure(self) -> None:
        pass


def test_ensure_passes_keep_each_managers_duration(st: State, runner: TaskRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    se = StateEngine(st)
    se.add_manager(Slow())
    se.add_manager(runner)
    se.start_up()
    se.ensure_threshold = 3600.0  # an hour: no pass is that slow, none is kept
    se.ensure()
    with st:
        assert st.ensure_timings() == []
    se.ensure_threshold = 0.0
    for _ in range(3):
        se.ensure()
    with st:
        passes = st.ensure_timings()  # noted, not written yet: no commit since
    assert [[name for name, _ in p.managers] for p in passes] == [["Slow", "TaskRunner"]] * 3
    assert all(p.duration == sum((d for _, d in p.managers), timedelta(0)) for p in passes)
    monkeypatch.setattr(engine.timings, "ENSURE_KEEP", 4)
    with st:
        st.set("something", "to commit")  # the next commit writes them, and keeps the newest rows
    with st:
        kept = st.ensure_timings()
        assert len(kept) == 2 and [p.started for p in kept] == [p.started for p in passes[1:]]
        assert [len(p.managers) for p in kept] == [2, 2]
        assert len(st.ensure_timings("slow")) == 2 and st.ensure_timings("nobody") == []
        assert kept[0].to_json()["managers"][0]["name"] == "Slow"


def test_a_status_nobody_expects_is_named_as_it_is(st: State) -> None:
    """The outcome of a run whose task a hook moved elsewhere is the status, in lower case."""
    assert engine.timings._OUTCOMES[Status.DOING] == "retry"
    assert set(engine.timings._OUTCOMES) == set(Status) - {Status.DEFAULT}
