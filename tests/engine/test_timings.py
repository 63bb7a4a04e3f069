# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings: each run of a task's handlers, and each manager of slow ensure passes, kept as rows (engine.timings)."""

from __future__ import annotations

import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import engine.timings
from engine import DatabaseError, Overlord, Retry, State, StateEngine, Status, Task, TaskRunner
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


def written(st: State, cid: str) -> int:
    """written is how many runs of the change's tasks have their rows in the database (not those waiting)."""
    with st:
        return len(st._uow.store.task_timings(int(cid)))


def change_of(st: State, kind: str, n: int, summary: str = "runs") -> str:
    with st:
        chg = st.new_change("test", summary)
        for i in range(n):
            chg.add_task(st.new_task(kind, f"task {i}"))
        return chg.id


def test_runs_are_written_once_a_batch_of_them_waits(st: State, runner: TaskRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No row per outcome: BATCH_RUNS runs wait in memory, then a commit that happens anyway writes them all;
    readers in this process see the waiting ones at once."""
    monkeypatch.setattr(engine.timings, "BATCH_RUNS", 32)  # (fewer tasks to run than 256)
    runner.add_handler("k", lambda task, tomb: None)
    first = change_of(st, "k", engine.timings.BATCH_RUNS - 1)
    settle(st, runner, first)
    assert written(st, first) == 0
    assert len(runs(st, first)) == engine.timings.BATCH_RUNS - 1  # (a same-process reader sees them)
    last = change_of(st, "k", 1)
    settle(st, runner, last)
    assert written(st, first) == engine.timings.BATCH_RUNS - 1 and written(st, last) == 1
    assert len(runs(st, first)) == engine.timings.BATCH_RUNS - 1 and len(runs(st, last)) == 1


def test_runs_are_written_once_the_oldest_waited_a_second(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    """BATCH_AGE of the State's clock after the oldest run, any commit writes them (an empty unit of work too)."""
    runner.add_handler("k", lambda task, tomb: None)
    cid = change_of(st, "k", 2)
    settle(st, runner, cid)
    clock.advance(engine.timings.BATCH_AGE * 0.9)
    with st:
        st.set("something", "to commit")
    assert written(st, cid) == 0 and len(runs(st, cid)) == 2
    clock.advance(engine.timings.BATCH_AGE * 0.1)
    with st:
        pass
    assert written(st, cid) == 2 and len(runs(st, cid)) == 2


@pytest.mark.parametrize("how", ["close", "stop"])
def test_the_runs_waiting_are_written_at_close_and_at_a_clean_stop(backend: str, db_path: Path, clock: FakeClock,
                                                                   request: pytest.FixtureRequest,
                                                                   how: str) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    overlord = Overlord(url=url, clock=clock) if url else Overlord(db_path, clock=clock)
    st = overlord.state
    overlord.task_runner.add_handler("k", lambda task, tomb: None)
    cid = change_of(st, "k", 3)
    settle(st, overlord.task_runner, cid)
    assert written(st, cid) == 0
    if how == "stop":
        overlord.stop()
    st.close()
    overlord.stop()  # (after the close: nothing left to write)
    again = State.open(url=url) if url else State.open(db_path)
    try:
        assert written(again, cid) == 3
        assert sorted(outcome for *_, outcome in runs(again, cid)) == ["done"] * 3
    finally:
        again.close()


def test_an_idle_daemon_writes_the_runs_waiting_within_about_a_second(db_path: Path) -> None:
    """Under loop(), runs that wait for a batch are written about BATCH_AGE after their commit, not at the
    next ensure pass (minutes later, when nothing else happens): another process sees them soon."""
    overlord = Overlord(db_path)
    done = threading.Event()
    overlord.task_runner.add_handler("k", lambda task, tomb: None)
    st = overlord.state
    overlord.loop()
    try:
        cid = change_of(st, "k", 3)
        with st:
            chg = st.change(cid)
            assert chg is not None
        assert chg.wait_ready(60), "the change did not finish"
        reader = State.open(db_path, read_only=True)
        try:
            deadline = time.monotonic() + 30
            while written(reader, cid) < 3 and time.monotonic() < deadline:
                done.wait(0.05)
            assert written(reader, cid) == 3, "the runs were not written by the idle loop"
        finally:
            reader.close()
    finally:
        overlord.stop()


def test_the_waiting_runs_of_a_pruned_change_are_dropped(st: State, runner: TaskRunner, clock: FakeClock) -> None:
    """A change pruned while its runs wait: the batch, written by the prune's own commit, drops them (no
    foreign-key failure, nothing else of the commit lost) and writes the others."""
    runner.add_handler("k", lambda task, tomb: None)
    runner.add_handler("later", lambda task, tomb: (_ for _ in ()).throw(Retry(after=timedelta(hours=1))))
    pruned = change_of(st, "k", 2, "pruned")
    settle(st, runner, pruned)
    kept = change_of(st, "later", 1, "kept")
    runner.ensure()
    runner.wait()
    assert written(st, pruned) == written(st, kept) == 0
    clock.advance(engine.timings.BATCH_AGE / 2)
    with st:
        st.prune(clock() - timedelta(days=3), engine.timings.BATCH_AGE / 4, timedelta(days=3), 500)
        assert st.change(pruned) is None
        st.set("also", "written")
        clock.advance(engine.timings.BATCH_AGE)  # the batch is due: this unit's commit writes it
    with st:
        assert st.change(pruned) is None and st.get("also") == "written"
        assert st.change(kept) is not None
    assert written(st, kept) == 1 and [outcome for *_, outcome in runs(st, kept)] == ["retry"]


def test_a_batch_whose_commit_failed_is_dropped_not_written_again(st: State, runner: TaskRunner, clock: FakeClock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that writes a batch and is rolled back (its rows refused, say) drops the batch: written again, a
    bad row would fail every later commit. Only timings are lost."""
    runner.add_handler("k", lambda task, tomb: None)
    cid = change_of(st, "k", 2)
    settle(st, runner, cid)
    clock.advance(engine.timings.BATCH_AGE)

    def refused(*a: object, **kw: object) -> None:
        raise RuntimeError("a row the database refuses")

    monkeypatch.setattr(st._uow.store, "save_timings", refused)
    with pytest.raises(DatabaseError, match="a row the database refuses"), st:
        st.set("first", 1)
    with st:
        st.set("second", 2)  # no batch left to write: the store's refusal is not met again
    with st:
        assert st.get("second") == 2 and st.change(cid) is not None
    assert written(st, cid) == 0 and runs(st, cid) == []


_KILLED = """
import sys
from engine import State, TaskRunner
from engine.testing import FakeClock

st = State.open(sys.argv[1], clock=FakeClock())  # the State's clock stands still: only full batches are written
runner = TaskRunner(st)
runner.add_handler("k", lambda task, tomb: None)
with st:
    chg = st.new_change("test", "killed")
    for i in range(int(sys.argv[2])):
        chg.add_task(st.new_task("k", str(i)))
    cid = chg.id
for _ in range(200):
    runner.ensure()
    runner.wait()
    with st:
        if st.change(cid).is_ready():
            break
print(cid, flush=True)
sys.stdin.read()
"""


@pytest.mark.sqlite_only
def test_a_killed_process_loses_at_most_the_runs_waiting(db_path: Path) -> None:
    """SIGKILL: every outcome stays; the runs of full batches stay, at most the last BATCH_RUNS - 1 are lost; the
    database opens as ever."""
    n = engine.timings.BATCH_RUNS + 5
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(db_path), str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the child did not run its change"
        cid = proc.stdout.readline().strip()
        assert cid
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    st = State.open(db_path)
    try:
        with st:
            chg = st.change(cid)
            assert chg is not None and chg.status is Status.DONE
            assert all(t.status is Status.DONE for t in chg.tasks()) and len(chg.tasks()) == n
        kept = written(st, cid)
        assert engine.timings.BATCH_RUNS <= kept <= n and n - kept < engine.timings.BATCH_RUNS
        assert len(runs(st, cid)) == kept
    finally:
        st.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


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


def test_a_run_on_the_system_clock_ended_when_its_outcome_was_recorded(db_path: Path) -> None:
    """With the system's clock (a State's default), a run's end is read as microseconds (engine.timings): its start
    and end fall between the clock read before its outcome was recorded and after, waiting and once written."""
    st = State.open(db_path)
    try:
        with st:
            chg = st.new_change("test", "system clock")
            task = st.new_task("k", "one")
            chg.add_task(task)
            cid, tid = chg.id, int(task.id)
        before = datetime.now(UTC)
        with st:
            rec = st._uow.records.trec(tid)
            st._uow.dirty_task(rec)
            st._uow.timings.task_run(rec, "do", 1, 0.25)
        after = datetime.now(UTC)
        seen = []
        for _ in range(2):
            with st:
                got = st.change(cid)
                assert got is not None
                (run,) = got.timings()
            seen.append((run.started, run.duration))
            with st:
                st._uow.timings.write_all()  # written by this commit: the same run read back from its row
        assert seen[0] == seen[1]
        assert st._uow.timings.runs.held == []
        started, duration = seen[0]
        assert duration == timedelta(seconds=0.25)
        assert before - timedelta(microseconds=1) <= started + duration <= after + timedelta(microseconds=1)
    finally:
        st.close()


def test_a_batch_is_a_row_per_change_in_order_without_those_of_changes_gone(file_st: State, db_path: Path,
                                                                             clock: FakeClock,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's runs are one row per change (task_timing_batches), in the order they were noted (a change's
    runs oldest first), those of a change another process deleted meanwhile left out, the others all written;
    the view task_timings shows them a row per run to any sqlite3 connection."""
    st, w = file_st, file_st._uow
    monkeypatch.setattr(engine.timings, "BATCH_RUNS", 64)
    with st:
        gone, kept = st.new_change("test", "gone"), st.new_change("test", "kept")
        gone_ids = []
        for i in range(31):
            t = st.new_task("k", f"gone {i}")
            gone.add_task(t)
            gone_ids.append(int(t.id))
        kept_ids = []
        for i in range(40):
            t = st.new_task("k", f"kept {i}")
            kept.add_task(t)
            kept_ids.append(int(t.id))
        gone_cid, kept_cid = int(gone.id), kept.id
    kept_ids.reverse()  # noted in another order than the ids'

    def note(tids: list[int]) -> None:
        with st:
            for tid in tids:
                clock.advance(0.001)
                rec = w.records.trec(tid)
                w.dirty_task(rec)
                w.timings.task_run(rec, "do", 1, 0.0005)

    for i in range(31):
        note([gone_ids[i], kept_ids[i]])
    conn = sqlite3.connect(db_path)
    try:
        with conn:  # another process prunes the change meanwhile
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("DELETE FROM changes WHERE id = ?", (gone_cid,))
        note(kept_ids[31:])  # 71 runs wait: this commit writes them, the kept change's 40 in one row
        assert conn.execute("SELECT change_id, json_array_length(runs, '$.task_id') FROM task_timing_batches"
                            ).fetchall() == [(int(kept_cid), 40)]
        rows = conn.execute("SELECT * FROM task_timings ORDER BY batch_id, seq").fetchall()
        columns = [d[0] for d in conn.execute("SELECT * FROM task_timings").description]
    finally:
        conn.close()
    assert columns == ["batch_id", "seq", "change_id", "task_id", "phase", "attempt", "outcome", "started", "duration"]
    assert [row[3] for row in rows] == kept_ids and [row[1] for row in rows] == list(range(40))
    assert {row[2] for row in rows} == {int(kept_cid)} and {row[4:7] for row in rows} == {("do", 1, "retry")}
    assert all(isinstance(row[7], str) and row[8] == 0.0005 for row in rows)
    with st:
        chg = st.change(kept_cid)
        assert chg is not None
        assert [t.task_id for t in chg.timings()] == [str(tid) for tid in kept_ids]


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
    with st:
        st.set("a commit", "to write the batch")  # (at close, or BATCH_AGE later, without it)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM task_timings").fetchone() == (0,)
        clock.advance(engine.timings.BATCH_AGE)
        with st:
            st.set("a commit", "that writes the batch")
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
