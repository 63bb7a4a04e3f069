# SPDX-License-Identifier: GPL-3.0-or-later
"""A stopped overlord is fenced; the writer lock belongs to the process that took it.

stop() fences the State: from then on nothing it commits reaches the
database (a handler abandoned by stop() that writes later gets
ReadOnlyStateError), while reads keep working; the writer lock is released
so that the next overlord may start, in this process or another. A State
used in a forked child refuses to work, and the child does not keep the
database locked once its parent is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest

from engine import DatabaseFullError, DatabaseInUseError, EngineError, Overlord, ReadOnlyStateError, State, Status
from tests.support.helpers import WAIT, Child

STOPPED_WITH_A_LATE_HANDLER = r"""
import sys, threading
from engine import EngineError, Overlord, Status
o = Overlord(sys.argv[1], stop_timeout=2)
go, finished = threading.Event(), threading.Event()
def late(task, tomb):
    with task.state:
        print("started", task.id, flush=True)
    go.wait()                           # ignores its tomb: stop() gives up on it
    try:
        with task.state:
            task.set("late", True)
            task.logf("the late handler wrote this")
            task.state.set("late-key", 1)
            task.set_status(Status.DONE)
        print("committed", flush=True)
    except EngineError as e:
        print("refused", type(e).__name__, e, flush=True)
    finished.set()
o.task_runner.add_handler("late", late)
with o.state:
    chg = o.state.new_change("install", "...")
    chg.add_task(o.state.new_task("late", "runs twice"))
o.loop()
with o.state:
    o.state.ensure_before(0)
sys.stdin.readline()
o.stop()
print("stopped", flush=True)
sys.stdin.readline()
go.set()
finished.wait(60)
"""

NEXT_OVERLORD = r"""
import sys
from engine import Overlord
o = Overlord(sys.argv[1])
def again(task, tomb):
    with task.state:
        task.set("by", "the next overlord")
o.task_runner.add_handler("late", again)
o.settle(60)
with o.state:
    print("done", *[t.status.value for t in o.state.tasks()], flush=True)
o.stop()
o.state.close()
"""


def test_a_late_handler_of_a_stopped_overlord_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    old = Child(STOPPED_WITH_A_LATE_HANDLER, str(db))
    try:
        tid = old.expect("started").split()[1]
        old.send("stop")
        old.expect("stopped")  # after stop_timeout: the handler is still running
        # The lock is free: another process's overlord runs the task again.
        new = Child(NEXT_OVERLORD, str(db))
        assert new.expect("done").split()[1:] == ["Done"]
        assert new.wait() == 0
        # Now the old handler wakes up and writes through its stopped State.
        old.send("go")
        line = old.expect("refused")
        assert "ReadOnlyStateError" in line and "stopped" in line and str(db) in line, line
        assert old.wait() == 0
    finally:
        old.kill()
    st = State.open(db, read_only=True)
    try:
        with st:
            t = st.task(tid)
            assert t is not None
            assert t.status is Status.DONE
            assert t.get("by") == "the next overlord"
            assert t.get("late", None) is None
            assert not any("late handler" in line for line in t.log())
            assert st.get("late-key", None) is None
    finally:
        st.close()


def test_a_stopped_state_reads_but_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    o.task_runner.add_handler("step", lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("install", "...")
        chg.add_task(o.state.new_task("step", "..."))
    o.settle(WAIT)
    o.stop()
    with o.state:
        assert chg.status is Status.DONE  # reading still works
    for write in (lambda: o.state.set("k", 1), lambda: o.state.new_change("more", "..."),
                  lambda: chg.set("k", 1)):
        with pytest.raises(ReadOnlyStateError, match="overlord was stopped"), o.state:
            write()
        with o.state:  # refused once, then nothing is left to wedge the next unit of work
            assert o.state.get("k", None) is None
            assert len(o.state.changes()) == 1
    # The database is free for the next writer, in this process too.
    st = State.open(db)
    try:
        with st:
            st.set("k", "by the next writer")
    finally:
        st.close()
    with o.state:
        assert o.state.get("k") == "by the next writer"
    o.state.close()


def test_stop_waits_for_a_unit_of_work_in_progress_before_freeing_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    inside, leave = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def slow_writer() -> None:
        try:
            with o.state:
                o.state.set("half", "written before stop")
                inside.set()
                leave.wait(WAIT)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inside.wait(WAIT)
    o.stop()  # gives up waiting for the unit of work after a bound
    with pytest.raises(DatabaseInUseError):
        State.open(db)  # not free while a unit of work of the stopped State could still commit
    leave.set()
    thread.join(WAIT)
    assert len(outcome) == 1 and isinstance(outcome[0], ReadOnlyStateError), outcome
    st = State.open(db)  # free now
    try:
        with st:
            assert st.get("half", None) is None
    finally:
        st.close()
    o.state.close()


FORKING_HANDLER = r"""
import os, sys, time
from engine import EngineError, Overlord
o = Overlord(sys.argv[1])
def fork(task, tomb):
    pid = os.fork()
    if pid == 0:                        # the child goes on running, with the parent's State
        try:
            with task.state:
                task.set("child", True)
            print("child wrote", flush=True)
        except EngineError as e:
            print("child refused", os.getpid(), e, flush=True)
        time.sleep(600)                 # the test kills it long before
        os._exit(0)
o.task_runner.add_handler("fork", fork)
with o.state:
    chg = o.state.new_change("install", "...")
    chg.add_task(o.state.new_task("fork", "forks a helper that outlives us"))
o.settle(60)
with o.state:
    print("parent done", chg.status.value, flush=True)
sys.stdin.readline()
"""


def test_a_forked_child_neither_uses_the_state_nor_keeps_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    parent = Child(FORKING_HANDLER, str(db))
    child_pid = 0
    try:
        lines = parent.expect_all("child refused", "parent done")  # two processes: in either order
        refused = lines["child refused"].split()
        child_pid = int(refused[2])
        assert "does not survive fork" in " ".join(refused)
        assert lines["parent done"].split()[2] == "Done"
        # The parent still holds the lock: the child's exit from it did not unlock it.
        with pytest.raises(DatabaseInUseError, match=f"process {parent.pid}"):
            State.open(db)
        parent.kill()
        # The child is still alive, but the database is free.
        assert Path(f"/proc/{child_pid}").exists()
        st = State.open(db)
        try:
            with st:
                (chg,) = st.changes()
                assert chg.status is Status.DONE
                assert chg.tasks()[0].get("child", None) is None
        finally:
            st.close()
    finally:
        parent.kill()
        if child_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)


def test_a_state_refuses_use_in_another_process_than_its_opener(tmp_path: Path) -> None:
    """In-process check of the fork rule, without forking: the pid the State was opened in is kept."""
    st = State.open(tmp_path / "state.db")
    try:
        st._pid = -1  # what a forked child sees
        with pytest.raises(EngineError, match="does not survive fork"):
            st.lock()
        st._pid = os.getpid()
        with st:
            st.set("k", 1)
    finally:
        st.close()


def test_stop_writes_what_a_refused_commit_kept(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    raw = o.state._store.raw
    raw.execute(f"PRAGMA max_page_count = {raw.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(DatabaseFullError), o.state:
        o.state.set("blob", "x" * 100_000)  # kept in memory for the next commit
    raw.execute("PRAGMA max_page_count = 1073741823")
    o.stop()  # the last chance to write it
    st = State.open(db, read_only=True)
    try:
        with st:
            assert st.get("blob") == "x" * 100_000
    finally:
        st.close()
        o.state.close()
