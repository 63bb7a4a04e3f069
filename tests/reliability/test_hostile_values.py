# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile values: every setter refuses, at the call, what the database would refuse at commit.

And when a commit fails anyway, the unit of work is rolled back and the next
one works: no value can wedge a State, in the same process or after a restart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import DatabaseError, Overlord, State, Status, Task, Tomb
from engine.testing import FakeClock
from tests.support.helpers import task_of

WAIT = 30.0
FILE_NAME = os.fsdecode(b"caf\xe9.txt")  # what os.listdir gives for a Latin-1 file name


def _deep(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


def _new_task(st: State) -> Task:
    chg = st.new_change("hostile", "a change fed hostile values")
    t = st.new_task("k", "a task fed hostile values")
    chg.add_task(t)
    return t


# Each case: what it does with the lock held, the error it raises, and words the message must hold.
BAD: dict[str, tuple[Callable[[State], Any], type[Exception], str]] = {
    "state key None": (lambda st: st.set(None, 1), TypeError, "key None of the state"),
    "state key tuple": (lambda st: st.set(("a", "b"), 1), TypeError, "key ('a', 'b') of the state"),
    "state key surrogate": (lambda st: st.set(FILE_NAME, 1), ValueError, "of the state"),
    "state get int key": (lambda st: st.get(1), TypeError, "key 1 of the state"),
    "task key int": (lambda st: _new_task(st).set(1, "v"), TypeError, "key 1 of task"),
    "task key tuple": (lambda st: _new_task(st).set(("a",), "x"), TypeError, "key ('a',) of task"),
    "change key None": (lambda st: st.new_change("k", "s").set(None, 1), TypeError, "key None of change"),
    "change kind None": (lambda st: st.new_change(None, "x"), TypeError, "change kind None"),
    "task summary None": (lambda st: st.new_task("k", None), TypeError, "task summary None"),
    "task kind surrogate": (lambda st: st.new_task(FILE_NAME, "x"), ValueError, "task kind"),
    "progress too big": (lambda st: _new_task(st).set_progress("x", 2**70, 2**70), ValueError,
                         "does not fit in 64 bits"),
    "progress not int": (lambda st: _new_task(st).set_progress("x", "1", 2), TypeError, "done"),
    "lane too big": (lambda st: _new_task(st).join_lane(2**70), ValueError, "lane"),
    "nested non-str key": (lambda st: _new_task(st).set("k", {"a": {1: "x"}}), TypeError,
                           "dict key 1 at $.a"),
    "too deep": (lambda st: _new_task(st).set("deep", _deep(100_000)), TypeError, "'deep'"),
    "not JSON": (lambda st: _new_task(st).set("obj", object()), TypeError, "'obj'"),
    "NaN": (lambda st: _new_task(st).set("nan", float("nan")), TypeError, "'nan'"),
    "duration NaN": (lambda st: st.add_warning("w", expire_after=float("nan")), ValueError, "expire_after"),
    "duration huge": (lambda st: st.add_warning("w", repeat_after=1e300), ValueError, "repeat_after"),
}


def _run_one(o: Overlord, kind: str = "k") -> Status:
    """_run_one runs a fresh one-task change to the end and returns its status."""
    with o.state:
        chg = o.state.new_change("after", "a healthy change after the hostile value")
        chg.add_task(o.state.new_task(kind, "healthy"))
        cid = chg.id
    o.settle(WAIT)
    with o.state:
        chg2 = o.state.change(cid)
        assert chg2 is not None
        return chg2.status


def _noop(task: Task, tomb: Tomb) -> None:
    pass


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_is_refused_at_the_call_and_nothing_wedges(case: str, tmp_path: Path, clock: FakeClock) -> None:
    action, error, words = BAD[case]
    db = tmp_path / "state.db"
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", _noop)
    try:
        with pytest.raises(error) as excinfo, o.state:
            action(o.state)
        assert words in str(excinfo.value), str(excinfo.value)
        assert "\n" not in str(excinfo.value)
        # The same process goes on: a new change runs to Done.
        assert _run_one(o) is Status.DONE
    finally:
        o.stop()
    # And after a restart.
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", _noop)
    try:
        assert _run_one(o) is Status.DONE
    finally:
        o.stop()


def test_log_line_from_a_real_file_name_does_not_fail_the_handler(tmp_path: Path, clock: FakeClock) -> None:
    """A handler logging os.listdir() names gets the bytes it cannot decode as escapes, and finishes."""
    (tmp_path / "files").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "files"), b"caf\xe9.txt"), "wb"):
        pass
    names = os.listdir(tmp_path / "files")
    assert names == [FILE_NAME]

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            task.logf("found %s", names[0])
            task.errorf("%s", names[0])
            task.set_progress(names[0], 1, 2)
            task.set("files", names)  # values keep lone surrogates exactly
            task.state.add_warning(f"saw {names[0]}")

    db = tmp_path / "state.db"
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", do)
    try:
        with o.state:
            chg = o.state.new_change("scan", f"Scan {names[0]}")
            t = o.state.new_task("k", f"Look at {names[0]}")
            chg.add_task(t)
            tid = t.id
        o.settle(WAIT)
    finally:
        o.stop()
    st = State.open(db, clock=clock)
    try:
        with st:
            t = task_of(st, tid)
            assert t.status is Status.DONE
            assert [line.split(" ", 2)[2] for line in t.log()] == ["found caf\\xe9.txt", "caf\\xe9.txt"]
            assert t.summary == "Look at caf\\xe9.txt"
            assert t.progress() == ("caf\\xe9.txt", 1, 2)
            assert t.get("files") == [FILE_NAME]
            assert [str(w) for w in st.all_warnings()] == ["saw caf\\xe9.txt"]
    finally:
        st.close()
    # Readable as UTF-8 text by any sqlite3 client.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT message FROM task_log ORDER BY id").fetchall()[0][0] == "found caf\\xe9.txt"
    finally:
        conn.close()


def test_failed_commit_rolls_back_once_and_the_next_unit_works(
        tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: a commit that fails for another reason than a busy or full database does not stick."""
    st = State.open(tmp_path / "state.db", clock=clock)
    try:
        from engine import store

        real = store.SqlStore.write
        calls = {"n": 0}

        def failing(self: store.SqlStore, changes: Any) -> None:
            calls["n"] += bool(changes.changes)
            if calls["n"] == 1:
                raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
            real(self, changes)

        monkeypatch.setattr(store.SqlStore, "write", failing)
        with pytest.raises(DatabaseError) as excinfo, st:
            st.new_change("first", "never written")
            st.set("key", "never written either")
        assert "rolled back" in str(excinfo.value) and "UnicodeEncodeError" in str(excinfo.value)
        with st:
            assert st.changes() == []  # the objects reloaded from the database
            assert st.get("key", None) is None
            chg = st.new_change("second", "written")
            cid = chg.id
        with st:
            assert [c.id for c in st.changes()] == [cid]
    finally:
        st.close()


def test_recorder_survives_an_outcome_that_cannot_be_committed(
        tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The outcome recorder fails only the task whose outcome cannot be committed, and goes on."""
    from engine import store

    o = Overlord(tmp_path / "state.db", clock=clock, stop_timeout=10)
    o.task_runner.add_handler("k", _noop)
    with o.state:
        chg = o.state.new_change("c", "three tasks, one of which cannot be recorded Done")
        tasks = [o.state.new_task("k", f"task {i}") for i in range(3)]
        for t in tasks:
            chg.add_task(t)
        doomed = int(tasks[1].id)
    real = store.SqlStore.write

    def statuses_written(changes: Any) -> Iterator[tuple[Any, Any]]:
        """(id, status) of the task rows rewritten: whole, or in part (a single writer: the status is column 4)."""
        yield from ((r[-1], r[3]) for r in changes.task_updates)
        for columns, rows in changes.task_changes:
            if 4 in columns:
                yield from ((r[-1], r[columns.index(4)]) for r in rows)

    def refuse_done(self: store.SqlStore, changes: Any) -> None:
        if (doomed, "Done") in statuses_written(changes):
            raise sqlite3.IntegrityError("CHECK constraint failed: injected")
        real(self, changes)

    monkeypatch.setattr(store.SqlStore, "write", refuse_done)
    caplog.set_level(logging.ERROR, "engine")
    try:
        o.settle(WAIT)
        with o.state:
            statuses = [t.status for t in chg.tasks()]
            bad = task_of(o.state, str(doomed))
            log = bad.log()
        assert statuses[1] is Status.ERROR, statuses
        assert "cannot record the outcome of its handler" in log[-1], log
        assert not any(r.name == "engine-recorder" or "Exception in thread" in r.getMessage()
                       for r in caplog.records)
        # The recorder still works: another change runs to Done.
        monkeypatch.setattr(store.SqlStore, "write", real)
        assert _run_one(o) is Status.DONE
    finally:
        o.stop()


def test_handler_retry_with_a_bad_delay_fails_its_task_only(tmp_path: Path, clock: FakeClock) -> None:
    from engine import Retry

    def bad_retry(task: Task, tomb: Tomb) -> None:
        raise Retry(after=float("nan"))

    o = Overlord(tmp_path / "state.db", clock=clock)
    o.task_runner.add_handler("bad", bad_retry)
    o.task_runner.add_handler("k", _noop)
    try:
        assert _run_one(o, "bad") is Status.ERROR
        assert _run_one(o) is Status.DONE
    finally:
        o.stop()


@pytest.mark.parametrize("how", ["api", "sqlite3"])
def test_an_at_time_far_in_the_future_keeps_its_task_waiting_and_nothing_else(
        how: str, tmp_path: Path, clock: FakeClock) -> None:
    """A task scheduled at 9999-12-31 (by t.at() or by hand) waits; every other change runs."""
    from datetime import UTC, datetime

    db = tmp_path / "state.db"
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    st = State.open(db, clock=clock)
    try:
        with st:
            t = _new_task(st)
            tid = t.id
            if how == "api":
                t.at(far)
                assert t.at_time == far
    finally:
        st.close()
    if how == "sqlite3":
        conn = sqlite3.connect(db)
        conn.execute("UPDATE tasks SET at_time = '9999-12-31T23:59:59Z' WHERE id = ?", (int(tid),))
        conn.commit()
        conn.close()
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", _noop)
    try:
        assert _run_one(o) is Status.DONE
        with o.state:
            waiting = task_of(o.state, tid)
            assert waiting.status is Status.DO and waiting.at_time == far
    finally:
        o.stop()
