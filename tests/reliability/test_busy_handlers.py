# SPDX-License-Identifier: GPL-3.0-or-later
"""A handler that fails only because another process held the write lock is retried, not errored.

The other process is a real one (Python's sqlite3 module in a child, so
that these tests need no sqlite3 shell) holding BEGIN IMMEDIATE.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import DatabaseBusyError, Overlord, State, Status, Task, Tomb
from engine.testing import FakeClock
from tests.support.helpers import task_of

WAIT = 30.0

_HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class Locker:
    """Locker holds the database's write lock from another process until released."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(WAIT)


def test_handler_failing_on_a_busy_database_is_retried_and_its_write_kept_once(
        tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db, clock=clock, busy_timeout=0.1, busy_budget=0.3)
    waiting, go, raised = threading.Event(), threading.Event(), threading.Event()

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            first = not task.has("ran")
        if first:
            waiting.set()
            assert go.wait(WAIT)
        try:
            with task.state:
                runs = task.get("runs", 0) + 1
                task.set("runs", runs)
                task.set("ran", True)
                task.logf("run %d", runs)
        except DatabaseBusyError:
            raised.set()
            raise

    def after(task: Task, tomb: Tomb) -> None:
        pass

    o.task_runner.add_handler("busy", do)
    o.task_runner.add_handler("after", after)
    with o.state:
        chg = o.state.new_change("c", "a handler meets a busy database")
        lane = o.state.new_lane()
        first_t, second_t = o.state.new_task("busy", "busy"), o.state.new_task("after", "after")
        second_t.wait_for(first_t)
        for t in (first_t, second_t):
            t.join_lane(lane)
            chg.add_task(t)
        tid, cid = first_t.id, chg.id
    locker: Locker | None = None
    try:
        o.state_engine.start_up()
        o.task_runner.ensure()
        assert waiting.wait(WAIT)
        locker = Locker(db)
        go.set()
        assert raised.wait(WAIT)  # the handler's own commit gave up after the budget
        locker.release()
        o.task_runner.wait()  # its outcome is recorded once the database is free again
        with o.state:
            t = task_of(o.state, tid)
            assert t.status is Status.DOING, t.log()  # scheduled again, not Error
            assert t.at_time is not None and t.at_time > clock()
            assert t.attempts == 1
            assert t.get("runs") == 1  # the write it made before the busy error was kept
            assert "the state database was busy" in t.log()[-1]
        clock.advance(120)
        o.settle(WAIT)
        with o.state:
            t = task_of(o.state, tid)
            change = o.state.change(cid)
            assert change is not None
            assert change.status is Status.DONE, [x.status for x in change.tasks()]
            assert t.get("runs") == 2
            messages = [line.split(" ", 2)[2] for line in t.log()]
            assert [m for m in messages if m.startswith("run ")] == ["run 1", "run 2"], messages  # kept once
    finally:
        if locker is not None:
            locker.release()
        o.stop()


def test_busy_warning_says_how_long_it_has_waited_and_the_budget_bounds_the_whole_wait(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "state.db"
    st = State.open(db, busy_timeout=0.2, busy_budget=1.0)
    locker = Locker(db)
    caplog.set_level(logging.WARNING, "engine.store")
    try:
        started = time.time()
        with pytest.raises(DatabaseBusyError) as excinfo, st:
            st.set("k", 1)
        assert "more than 1 s" in str(excinfo.value)
        records = [r for r in caplog.records if "still waiting after" in r.getMessage()]
        waits = [r.getMessage() for r in records]
        assert waits, caplog.records
        first = float(re.search(r"still waiting after ([0-9.]+) s", waits[0]).group(1))  # type: ignore[union-attr]
        # It says how long it has really waited (the first busy_timeout included), measured as it logs.
        assert first >= 0.2 - 0.05, waits[0]
        assert first >= records[0].created - started - 0.1, (waits[0], records[0].created - started)
        assert "giving up after 1 s" in waits[0]
        seen = [float(re.search(r"after ([0-9.]+) s", w).group(1)) for w in waits]  # type: ignore[union-attr]
        assert seen == sorted(seen)
    finally:
        locker.release()
        with st:
            assert st.get("k") == 1  # kept, and written by this commit
        st.close()
