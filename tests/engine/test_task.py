# SPDX-License-Identifier: GPL-3.0-or-later
"""Task: status, data, log, progress, edges, lanes, scheduling, times, cleanliness."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import EngineError, NoStateError, Retry, State, Status, Task, TaskRunner, TaskSet
from engine.testing import FakeClock, drive
from engine.tomb import Tomb
from tests.support.ensure import EnsureRecorder

RFC3339_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (INFO|ERROR) ")


# -- status ---------------------------------------------------------------------------


def test_new_task(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert t.kind == "download"
        assert t.summary == "1..."
        assert t.status is Status.DO
        assert t.change() is None
        assert t.attempts == 0
        assert t.doing_time == timedelta(0)
        assert t.undoing_time == timedelta(0)
        assert isinstance(t.doing_time, timedelta)
        assert isinstance(t.undoing_time, timedelta)
        assert t.at_time is None
        assert t.ready_time is None
        assert not t.is_clean()
        assert t.log() == []
        assert t.lanes() == [0]
        assert t.wait_tasks() == [] and t.halt_tasks() == [] and t.num_halt_tasks() == 0


def test_status_and_set_status(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert t.status is Status.DO
        t.set_status(Status.DONE)
        assert t.status is Status.DONE
    with st:
        assert t.status is Status.DONE


@pytest.mark.parametrize("status", [s for s in Status if s not in (Status.DEFAULT, Status.WAIT)],
                         ids=lambda s: s.value)
def test_set_status_round_trips(st: State, status: Status) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        t.set_status(status)
        assert t.status is status
    with st:
        assert st.task(t.id).status is status  # type: ignore[union-attr]


def test_default_reads_as_do(st: State) -> None:
    with st:
        t = st.new_task("download", "...")
        t.set_status(Status.DONE)
        t.set_status(Status.DEFAULT)
        assert t.status is Status.DO
    with st:
        assert t.status is Status.DO


def test_set_status_refuses_wait(st: State) -> None:
    with st:
        t = st.new_task("download", "...")
        t.set_status(Status.DOING)
        with pytest.raises((ValueError, EngineError)):
            t.set_status(Status.WAIT)
        assert t.status is Status.DOING


def test_done_on_an_abort_task_is_ignored(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.set_status(Status.ABORT)
        assert t.status is Status.ABORT
        t.set_status(Status.DONE)
        assert t.status is Status.ABORT
        t.set_status(Status.UNDO)  # other statuses still apply
        assert t.status is Status.UNDO


def test_set_to_wait_on_an_abort_task_is_ignored(st: State) -> None:
    """snapd's TestSetWaitAfterAbortNoop: an aborted task is undone, it does not wait."""
    with st:
        t = st.new_task("reboot", "...")
        t.set_status(Status.ABORT)
        before = t.waited_status
        t.set_to_wait(Status.UNDONE)
        assert (t.status, t.waited_status) == (Status.ABORT, before)
    with st:
        assert (t.status, t.waited_status) == (Status.ABORT, before)


def test_set_to_wait(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("reboot", "...")
        chg.add_task(t)
        t.set_status(Status.DOING)
        t.set_to_wait(Status.DONE)
        assert t.status is Status.WAIT
        assert t.waited_status is Status.DONE
        t2 = st.new_task("reboot", "...")
        chg.add_task(t2)
        t2.set_to_wait(Status.UNDONE)
        assert t2.status is Status.WAIT
        assert t2.waited_status is Status.UNDONE
    with st:
        assert (t.status, t.waited_status) == (Status.WAIT, Status.DONE)
        assert (t2.status, t2.waited_status) == (Status.WAIT, Status.UNDONE)


@pytest.mark.parametrize("waited", [Status.DEFAULT, Status.WAIT], ids=lambda s: s.value)
def test_set_to_wait_refuses_default_and_wait(st: State, waited: Status) -> None:
    with st:
        t = st.new_task("reboot", "...")
        t.set_status(Status.DOING)
        with pytest.raises((ValueError, EngineError)):
            t.set_to_wait(waited)
        assert t.status is Status.DOING


def test_leaving_wait_keeps_working(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("reboot", "...")
        chg.add_task(t)
        t.set_to_wait(Status.DONE)
        assert not chg.is_ready()
        t.set_status(t.waited_status)
        assert t.status is Status.DONE
        assert chg.is_ready()


# -- data -----------------------------------------------------------------------------


def test_get_set_has_clear(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert not t.has("a")
        t.set("a", 1)
        assert t.has("a")
        assert t.get("a") == 1
        t.set("b", [1, {"c": "d"}])
        assert t.get("b") == [1, {"c": "d"}]
        t.set("a", None)
        assert not t.has("a")
        t.set("a", 2)
        t.clear("a")
        assert not t.has("a")
        with pytest.raises(NoStateError) as info:
            t.get("a")
        assert isinstance(info.value, KeyError)
        assert t.get("a", "dflt") == "dflt"
        t.clear("never-set")  # harmless
    with st:
        assert t.get("b") == [1, {"c": "d"}]
        assert not t.has("a")


@pytest.mark.parametrize("value", [object(), math.nan, -math.inf, {1}], ids=["object", "nan", "-inf", "set"])
def test_set_refuses_non_json_naming_the_key(st: State, value: Any) -> None:
    with st:
        t = st.new_task("download", "...")
        t.set("task-key", 1)
        with pytest.raises(TypeError) as info:
            t.set("task-key", value)
        assert "task-key" in str(info.value)
        assert t.get("task-key") == 1


def test_change(st: State) -> None:
    with st:
        t = st.new_task("download", "...")
        assert t.change() is None
        chg = st.new_change("install", "...")
        chg.add_task(t)
        assert t.change() == chg
    with st:
        assert t.change() == chg
        assert t.change().kind == "install"  # type: ignore[union-attr]


def test_state(st: State) -> None:
    with st:
        t = st.new_task("download", "...")
    assert t.state is st


# -- log ---------------------------------------------------------------------------------


def test_log_keeps_the_last_ten_lines(st: State, clock: FakeClock) -> None:
    clock.set(datetime(2030, 2, 3, 4, 5, 6, tzinfo=UTC))
    with st:
        t = st.new_task("download", "1...")
        for i in range(20):
            t.logf("Message #%d", i)
        log = t.log()
        assert log == [f"2030-02-03T04:05:06Z INFO Message #{i}" for i in range(10, 20)]
    with st:
        assert t.log() == [f"2030-02-03T04:05:06Z INFO Message #{i}" for i in range(10, 20)]
        t.logf("one more")
        assert len(t.log()) == 10
        assert t.log()[0].endswith(" INFO Message #11")
        assert t.log()[-1].endswith(" INFO one more")


def test_log_lines_carry_the_time_of_the_state_clock(st: State, clock: FakeClock) -> None:
    clock.set(datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC))
    with st:
        t = st.new_task("download", "...")
        t.logf("first")
        clock.advance(hours=25, seconds=7)
        t.errorf("second")
        assert t.log() == ["2030-01-01T00:00:00Z INFO first", "2030-01-02T01:00:07Z ERROR second"]


def test_log_time_is_utc_rfc3339(st: State, clock: FakeClock) -> None:
    # A clock giving another zone or sub-second times still logs RFC 3339 UTC.
    clock.set(datetime(2030, 6, 1, 14, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2))))
    with st:
        t = st.new_task("download", "...")
        t.logf("hello")
        (line,) = t.log()
        assert RFC3339_LINE.match(line), line
        assert line.startswith("2030-06-01T12:30:15")
        assert line.endswith("Z INFO hello")


def test_errorf(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.errorf("Some %s", "error")
        (line,) = t.log()
        assert RFC3339_LINE.match(line)
        assert line.endswith(" ERROR Some error")


def test_logf_and_errorf_use_printf_formatting(st: State) -> None:
    with st:
        t = st.new_task("download", "...")
        t.logf("%s has %d items (%.1f%%)", "foo", 3, 50.0)
        t.errorf("%d%% of %r", 10, "bar")
        t.logf("no arguments")
        assert [line.split(" ", 2)[1:] for line in t.log()] == [
            ["INFO", "foo has 3 items (50.0%)"],
            ["ERROR", "10% of 'bar'"],
            ["INFO", "no arguments"],
        ]


# -- progress ------------------------------------------------------------------------------


def test_progress_and_set_progress(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.set_progress("snap", 2, 99)
        assert t.progress() == ("snap", 2, 99)
        for nonsense in ((0, 0), (0, -1), (2, 1)):
            t.set_progress("snap", 2, 99)
            t.set_progress("", *nonsense)
            assert t.progress() == ("", 0, 1), nonsense
        t.set_progress("", 42, 42)
        assert t.progress() == ("", 42, 42)
    with st:
        assert t.progress() == ("", 42, 42)


def test_progress_defaults(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert t.status is Status.DO
        assert t.progress() == ("", 0, 1)
        t.set_status(Status.DO)
        assert t.progress() == ("", 0, 1)
        for status in (Status.DOING, Status.DONE, Status.ERROR, Status.UNDO, Status.HOLD):
            t.set_status(status)
            assert t.progress() == ("", 1, 1), status


# -- edges -----------------------------------------------------------------------------------


def test_wait_for(st: State) -> None:
    with st:
        t1 = st.new_task("download", "1...")
        t2 = st.new_task("install", "2...")
        t2.wait_for(t1)
        assert t2.wait_tasks() == [t1]
        assert t1.halt_tasks() == [t2]
        assert t1.num_halt_tasks() == 1
        assert t2.num_halt_tasks() == 0
        assert t1.wait_tasks() == []
        t2.wait_for(t1)  # once only
        assert t2.wait_tasks() == [t1]
        assert t1.num_halt_tasks() == 1
    with st:
        assert t2.wait_tasks() == [t1]
        assert t1.halt_tasks() == [t2]


def test_wait_all(st: State) -> None:
    with st:
        t1 = st.new_task("download", "1...")
        t2 = st.new_task("install", "2...")
        t3 = st.new_task("setup", "3...")
        t3.wait_all(TaskSet(t1, t2))
        assert sorted(t.id for t in t3.wait_tasks()) == sorted([t1.id, t2.id])
        assert len(t3.wait_tasks()) == 2
        assert t1.halt_tasks() == [t3]
        assert t2.halt_tasks() == [t3]


def test_halt_tasks_of_many(st: State) -> None:
    with st:
        t1 = st.new_task("download", "1...")
        others = [st.new_task("x", str(i)) for i in range(3)]
        for o in others:
            o.wait_for(t1)
        assert sorted(t.id for t in t1.halt_tasks()) == sorted(o.id for o in others)
        assert t1.num_halt_tasks() == 3


# -- lanes ------------------------------------------------------------------------------------


def test_lanes(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert t.lanes() == [0]
        t.join_lane(1)
        assert t.lanes() == [1]
        t.join_lane(2)
        assert t.lanes() == [1, 2]
        t.join_lane(1)  # once only
        assert t.lanes() == [1, 2]
    with st:
        assert t.lanes() == [1, 2]


def test_lanes_is_a_copy(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.join_lane(1)
        t.lanes().append(7)
        assert t.lanes() == [1]


# -- at ------------------------------------------------------------------------------------------


def test_at(st: State, clock: FakeClock, ensures: EnsureRecorder) -> None:
    with st:
        t = st.new_task("download", "1...")
        when = clock() + timedelta(seconds=10)
        ensures.reset()
        t.at(when)
        assert t.at_time == when
        assert ensures.requests == [10.0]
    with st:
        assert t.at_time == when


def test_at_past(st: State, clock: FakeClock, ensures: EnsureRecorder) -> None:
    with st:
        t = st.new_task("download", "1...")
        when = clock() - timedelta(seconds=10)
        ensures.reset()
        t.at(when)
        assert t.at_time == when
        assert ensures.requests == [0.0]


def test_at_ready_is_ignored(st: State, clock: FakeClock, ensures: EnsureRecorder) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.set_status(Status.DONE)
        ensures.reset()
        t.at(clock() + timedelta(seconds=10))
        assert t.at_time is None
        assert ensures.requests == []


def test_at_none_clears(st: State, clock: FakeClock) -> None:
    with st:
        t = st.new_task("download", "1...")
        t.at(clock() + timedelta(hours=1))
        t.at(None)
        assert t.at_time is None
    with st:
        assert t.at_time is None


def test_at_time_is_utc(st: State, clock: FakeClock) -> None:
    with st:
        t = st.new_task("download", "1...")
        when = datetime(2030, 1, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
        t.at(when)
        assert t.at_time == when  # the same instant
        assert t.at_time.utcoffset() == timedelta(0)  # type: ignore[union-attr]


# -- times ---------------------------------------------------------------------------------------


def test_spawn_and_ready_times(st: State, clock: FakeClock) -> None:
    with st:
        t = st.new_task("download", "summary...")
        assert t.spawn_time == clock()
        assert t.ready_time is None
        clock.advance(30)
        t.set_status(Status.DOING)
        assert t.ready_time is None
        clock.advance(30)
        t.set_status(Status.DONE)
        assert t.ready_time == clock()
        assert t.spawn_time == clock() - timedelta(seconds=60)
    with st:
        assert t.ready_time == clock()


def test_doing_and_undoing_time_accumulate(st: State) -> None:
    def do(task: Task, tomb: Tomb) -> None:
        time.sleep(0.02)

    def undo(task: Task, tomb: Tomb) -> None:
        time.sleep(0.02)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner = TaskRunner(st)
    runner.add_handler("work", do, undo)
    runner.add_handler("fail", fail)
    try:
        with st:
            chg = st.new_change("install", "...")
            t1 = st.new_task("work", "work")
            t2 = st.new_task("fail", "fail")
            t2.wait_for(t1)
            chg.add_task(t1)
            chg.add_task(t2)
        drive(runner, st, chg)
        with st:
            assert t1.status is Status.UNDONE
            assert t2.status is Status.ERROR
            assert isinstance(t1.doing_time, timedelta)
            assert t1.doing_time >= timedelta(seconds=0.01)
            assert t1.undoing_time >= timedelta(seconds=0.01)
            assert t2.undoing_time == timedelta(0)
    finally:
        runner.stop()


def test_attempts_count_retries(st: State) -> None:
    def do(task: Task, tomb: Tomb) -> None:
        with st:
            n = task.get("runs", 0)
            task.set("runs", n + 1)
        if n < 2:
            raise Retry()

    runner = TaskRunner(st)
    runner.add_handler("work", do)
    try:
        with st:
            chg = st.new_change("install", "...")
            t = st.new_task("work", "work")
            chg.add_task(t)
            assert t.attempts == 0
        drive(runner, st, chg)
        with st:
            assert t.status is Status.DONE
            assert t.get("runs") == 3
            assert t.attempts == 2
    finally:
        runner.stop()


# -- clean -----------------------------------------------------------------------------------------


def test_is_clean_and_set_clean(st: State) -> None:
    with st:
        t = st.new_task("download", "1...")
        assert not t.is_clean()
        t.set_status(Status.DONE)
        t.set_clean()
        assert t.is_clean()
    with st:
        assert t.is_clean()


def test_set_clean_needs_a_ready_change(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "1...")
        t2 = st.new_task("verify", "2...")
        chg.add_task(t1)
        chg.add_task(t2)
        t1.set_status(Status.DONE)
        with pytest.raises(EngineError):
            t1.set_clean()
        assert not t1.is_clean()
        t2.set_status(Status.ERROR)
        t1.set_clean()
        assert t1.is_clean()
        assert not chg.is_clean()
        t2.set_clean()
        assert chg.is_clean()


# -- the lock -----------------------------------------------------------------------------------------

TASK_CALLS = {
    "id": lambda t, o: t.id,
    "kind": lambda t, o: t.kind,
    "summary": lambda t, o: t.summary,
    "status": lambda t, o: t.status,
    "set_status": lambda t, o: t.set_status(Status.DONE),
    "set_to_wait": lambda t, o: t.set_to_wait(Status.DONE),
    "waited_status": lambda t, o: t.waited_status,
    "get": lambda t, o: t.get("a"),
    "set": lambda t, o: t.set("a", 1),
    "has": lambda t, o: t.has("a"),
    "clear": lambda t, o: t.clear("a"),
    "change": lambda t, o: t.change(),
    "log": lambda t, o: t.log(),
    "logf": lambda t, o: t.logf("x"),
    "errorf": lambda t, o: t.errorf("x"),
    "progress": lambda t, o: t.progress(),
    "set_progress": lambda t, o: t.set_progress("", 1, 2),
    "wait_for": lambda t, o: t.wait_for(o),
    "wait_all": lambda t, o: t.wait_all(TaskSet(o)),
    "wait_tasks": lambda t, o: t.wait_tasks(),
    "halt_tasks": lambda t, o: t.halt_tasks(),
    "num_halt_tasks": lambda t, o: t.num_halt_tasks(),
    "join_lane": lambda t, o: t.join_lane(1),
    "lanes": lambda t, o: t.lanes(),
    "at": lambda t, o: t.at(datetime(2030, 1, 1, tzinfo=UTC)),
    "at_time": lambda t, o: t.at_time,
    "spawn_time": lambda t, o: t.spawn_time,
    "ready_time": lambda t, o: t.ready_time,
    "doing_time": lambda t, o: t.doing_time,
    "undoing_time": lambda t, o: t.undoing_time,
    "is_clean": lambda t, o: t.is_clean(),
    "set_clean": lambda t, o: t.set_clean(),
    "attempts": lambda t, o: t.attempts,
}


@pytest.mark.parametrize("call", list(TASK_CALLS.values()), ids=list(TASK_CALLS))
def test_task_methods_need_the_lock(st: State, call: Any) -> None:
    with st:
        t = st.new_task("download", "...")
        other = st.new_task("install", "...")
    with pytest.raises(RuntimeError):
        call(t, other)
    with st:
        assert t.status is Status.DO
        assert not t.has("a")
        assert t.log() == []
        assert t.wait_tasks() == []
        assert t.lanes() == [0]
        assert t.at_time is None
        assert t.progress() == ("", 0, 1)
        assert not t.is_clean()


def test_tasks_without_data_share_nothing_once_one_is_given_some(file_st: State, db_path: Path) -> None:
    # New tasks, and tasks read back holding no data, share one empty record of data until a value is set.
    with file_st:
        chg = file_st.new_change("install", "install a")
        first, second, third = (file_st.new_task("download", f"get {i}") for i in range(3))
        for t in (first, second, third):
            chg.add_task(t)
        first.set("url", "https://example.com/a")
        assert not second.has("url") and second.keys() == [] and third.get("url", None) is None
        ids = [first.id, second.id, third.id]
    file_st.close()
    again = State.open(db_path)
    try:
        with again:
            loaded = [again.task(i) for i in ids]
            assert [t.keys() if t is not None else None for t in loaded] == [["url"], [], []]
            assert loaded[1] is not None and loaded[2] is not None
            loaded[1].set("size", 3)
            assert loaded[2].keys() == [] and loaded[1].get("size") == 3
        with again:
            assert [again.task(i).keys() for i in ids] == [["url"], ["size"], []]  # type: ignore[union-attr]
    finally:
        again.close()
