# SPDX-License-Identifier: GPL-3.0-or-later
"""A busy database: another process holds the write lock, or reads in a loop.

The other process is the `sqlite3` shell, as a user would run it. Issue 2
item 4 and issue 4 item 2: a brief lock is waited out; a lock longer than
one busy timeout makes the overlord log a warning and carry on; a lock
longer than the retry budget gives DatabaseBusyError and loses nothing;
readers never block the engine (WAL).
"""

from __future__ import annotations

import logging
import queue
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import DatabaseBusyError, Overlord, State, Status, Task
from engine.tomb import Tomb

SQLITE3 = shutil.which("sqlite3") or "/usr/bin/sqlite3"
WAIT = 30.0  # generous bound for anything that waits; never a timing assertion

pytestmark = pytest.mark.skipif(not Path(SQLITE3).exists(), reason="needs the sqlite3 command-line shell")


class Shell:
    """Shell is an interactive `sqlite3` shell in another process, fed through stdin."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [SQLITE3, "-batch", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.errors: list[str] = []
        self._out = threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True)
        self._err = threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors.append), daemon=True)
        self._out.start()
        self._err.start()
        self.send(".timeout 30000")

    @staticmethod
    def _pump(stream: object, sink: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink(line.rstrip("\n"))  # type: ignore[operator]

    def send(self, sql: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()

    def ask(self, sql: str) -> str:
        """ask runs one query and returns its first output line."""
        self.send(sql)
        return self.lines.get(timeout=WAIT)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(".quit")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_lock_held(path: Path) -> bool:
    """write_lock_held probes, without waiting, whether another connection holds the write lock."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
        return True
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    return False


class WriteLock(Shell):
    """WriteLock is a sqlite3 shell that holds the write lock (BEGIN IMMEDIATE) until release()."""

    def __init__(self, path: Path, *, insert: str | None = None) -> None:
        super().__init__(path)
        self.send("BEGIN IMMEDIATE;")
        if insert is not None:
            self.send(insert)
        # The shell answers once BEGIN (and the insert) ran: it holds the lock.
        assert self.ask("SELECT 'locked';") == "locked", self.errors
        assert write_lock_held(path), "the sqlite3 shell does not hold the write lock"
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.send("COMMIT;")
            assert self.ask("SELECT 'released';") == "released", self.errors
        assert not self.errors, self.errors


@pytest.fixture
def shells() -> Iterator[list[Shell]]:
    made: list[Shell] = []
    yield made
    for shell in made:
        shell.close()


def fresh_rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """fresh_rows reads the database through a new connection, as another program would."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def busy_warnings(caplog: pytest.LogCaptureFixture, path: Path) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "engine.store" and r.levelno == logging.WARNING and str(path) in r.getMessage()]


def test_brief_lock_is_waited_out(db_path: Path, shells: list[Shell]) -> None:
    st = State.open(db_path)  # default busy timeout: 5 s
    try:
        with st:
            st.set("before", 1)
        lock = WriteLock(db_path)
        shells.append(lock)
        releaser = threading.Timer(0.3, lock.release)
        releaser.start()
        try:
            with st:
                st.set("during", {"written": True})
        finally:
            releaser.join()
        assert fresh_rows(db_path, "SELECT value FROM state_data WHERE key = 'during'") == [('{"written":true}',)]
    finally:
        st.close()


def _chain_change(st: State, kind: str, n: int) -> str:
    chg = st.new_change(kind, f"{n} tasks in a chain")
    prev: Task | None = None
    for i in range(n):
        t = st.new_task("step", f"step {i}")
        if prev is not None:
            t.wait_for(prev)
        chg.add_task(t)
        prev = t
    return chg.id


def test_overlord_outlasts_a_lock_longer_than_one_busy_timeout(
    db_path: Path, shells: list[Shell], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.store")
    o = Overlord(db_path, busy_timeout=0.2, busy_budget=30)
    st = o.state
    first_running = threading.Event()
    lock_taken = threading.Event()

    def step(task: Task, tomb: Tomb) -> None:
        with st:
            summary = task.summary
            chg = task.change()
            assert chg is not None
            first = chg.kind == "busy" and summary == "step 0"
        if first:
            first_running.set()
            assert lock_taken.wait(WAIT), "the test never took the lock"
        with st:  # this commit meets the shell's lock
            task.set("result", f"{summary} ok")
            st.set(f"result {task.id}", summary)

    o.task_runner.add_handler("step", step)
    lock: WriteLock | None = None
    try:
        with st:
            busy = _chain_change(st, "busy", 6)
        o.loop()
        assert first_running.wait(WAIT)
        lock = WriteLock(db_path, insert="INSERT INTO state_data (key, value) VALUES ('from-shell', '\"hello\"');")
        shells.append(lock)
        lock_taken.set()
        # Hold the lock for ten busy timeouts: every writer of the overlord meets it.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert write_lock_held(db_path)
            time.sleep(0.1)
        lock.release()

        with st:
            chg = st.change(busy)
            assert chg is not None
        assert chg.wait_ready(WAIT), "the change did not finish after the lock went"
        # The loop keeps running: a change added afterwards runs too.
        with st:
            after = _chain_change(st, "after", 3)
            st.ensure_before(0)
            chg2 = st.change(after)
            assert chg2 is not None
        assert chg2.wait_ready(WAIT)

        with st:
            for cid in (busy, after):
                c = st.change(cid)
                assert c is not None
                assert c.status is Status.DONE, [(t.summary, t.status, t.log()) for t in c.tasks()]
                for t in c.tasks():
                    assert t.get("result") == f"{t.summary} ok"
            assert st.get("from-shell") == "hello"
    finally:
        if lock is not None and not lock.released:
            lock.release()
        o.stop()

    warnings = busy_warnings(caplog, db_path)
    assert warnings, "no warning logged while the database was locked"
    assert "locked by another process" in warnings[0].getMessage()
    # Nothing lost: another program sees every result, the shell's row and the statuses.
    rows = fresh_rows(db_path, "SELECT c.kind, t.summary, t.status, json_extract(t.data, '$.result') "
                               "FROM tasks t JOIN changes c ON c.id = t.change_id ORDER BY t.id")
    assert len(rows) == 9
    assert all(status == "Done" and result == f"{summary} ok" for _, summary, status, result in rows), rows
    assert fresh_rows(db_path, "SELECT kind, status FROM changes ORDER BY id") == [("busy", "Done"), ("after", "Done")]
    assert len(fresh_rows(db_path, "SELECT key FROM state_data WHERE key LIKE 'result %'")) == 9
    assert fresh_rows(db_path, "SELECT value FROM state_data WHERE key = 'from-shell'") == [('"hello"',)]


def test_lock_longer_than_the_budget_is_a_clear_error_and_loses_nothing(
    db_path: Path, shells: list[Shell], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.store")
    st = State.open(db_path, busy_timeout=0.2, busy_budget=0.5)
    try:
        with st:
            st.set("before", 1)
        lock = WriteLock(db_path)
        shells.append(lock)
        with pytest.raises(DatabaseBusyError) as excinfo, st:
            st.set("kept", {"a": [1, 2]})
            chg = st.new_change("kept-change", "made while the database was locked")
            t = st.new_task("kept-task", "a task made while locked")
            t.set("payload", "p")
            chg.add_task(t)
            cid, tid = chg.id, t.id
        message = str(excinfo.value)
        assert str(db_path) in message
        assert "another process" in message and "write lock" in message
        assert "\n" not in message
        assert not isinstance(excinfo.value, sqlite3.Error)
        assert busy_warnings(caplog, db_path), "no warning logged while waiting for the lock"
        # Nothing reached the file yet.
        assert fresh_rows(db_path, "SELECT count(*) FROM changes") == [(0,)]

        lock.release()
        with st:  # the next unlock writes what the failed one kept
            pass
        with st:
            assert st.get("kept") == {"a": [1, 2]}
            chg2 = st.change(cid)
            assert chg2 is not None and chg2.kind == "kept-change"
            assert [x.id for x in chg2.tasks()] == [tid]
    finally:
        st.close()
    assert fresh_rows(db_path, "SELECT value FROM state_data WHERE key = 'kept'") == [('{"a":[1,2]}',)]
    assert fresh_rows(db_path, "SELECT id, kind, status FROM changes") == [(int(cid), "kept-change", "Do")]
    assert fresh_rows(db_path, "SELECT id, change_id, kind, json_extract(data, '$.payload') FROM tasks") == [
        (int(tid), int(cid), "kept-task", "p")]


def test_kept_changes_survive_a_second_busy_error(db_path: Path, shells: list[Shell]) -> None:
    """DatabaseBusyError promises "the changes are kept and written by the next commit".

    A later unit of work that meets the lock inside its block (a read such as
    st.changes() writes what is pending first) must not throw them away.
    """
    st = State.open(db_path, busy_timeout=0.1, busy_budget=0.3)
    try:
        lock = WriteLock(db_path)
        shells.append(lock)
        with pytest.raises(DatabaseBusyError), st:
            st.set("kept", "first unit of work")
        with pytest.raises(DatabaseBusyError), st:
            assert st.get("kept") == "first unit of work"
            st.changes()
        lock.release()
        with st:
            assert st.get("kept", None) == "first unit of work"
    finally:
        st.close()
    assert fresh_rows(db_path, "SELECT value FROM state_data WHERE key = 'kept'") == [('"first unit of work"',)]


def test_readers_never_block_the_overlord(
    db_path: Path, shells: list[Shell], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.store")
    # A short budget: were the readers to block writers, the run would fail loudly.
    o = Overlord(db_path, busy_timeout=0.2, busy_budget=5)
    st = o.state
    assert fresh_rows(db_path, "PRAGMA journal_mode") == [("wal",)]

    # One reader polls in autocommit mode; the other keeps a read transaction open.
    looping = Shell(db_path)
    holding = Shell(db_path)
    shells += [looping, holding]
    holding.send("BEGIN;")
    assert holding.ask("SELECT count(*) FROM tasks;") == "0"
    stop = threading.Event()
    answers: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            answers.append(looping.ask("SELECT count(*) FROM tasks WHERE status = 'Done';"))
            holding.ask("SELECT count(*) FROM tasks WHERE status = 'Done';")

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()

    def step(task: Task, tomb: Tomb) -> None:
        with st:
            task.set("result", "ok")

    o.task_runner.add_handler("step", step)
    try:
        deadline = time.monotonic() + WAIT
        while len(answers) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(answers) >= 5, "the reader shell is not reading"
        with st:
            cid = _chain_change(st, "read-while-running", 12)
            chg = st.change(cid)
            assert chg is not None
        o.loop()
        assert chg.wait_ready(WAIT)
        with st:
            assert chg.status is Status.DONE
    finally:
        stop.set()
        reader.join(WAIT)
        o.stop()
    assert not reader.is_alive()
    assert looping.proc.poll() is None and holding.proc.poll() is None, "a reader shell died"
    assert not looping.errors and not holding.errors, looping.errors + holding.errors
    # The open read transaction still sees its snapshot; the polling reader saw progress.
    assert holding.ask("SELECT count(*) FROM tasks;") == "0"
    holding.send("COMMIT;")
    assert holding.ask("SELECT count(*) FROM tasks WHERE status = 'Done';") == "12"
    assert busy_warnings(caplog, db_path) == [], "a reader blocked the overlord's writes"


def test_overlord_loses_nothing_when_the_lock_outlasts_the_budget(
    db_path: Path, shells: list[Shell], caplog: pytest.LogCaptureFixture,
) -> None:
    """Commits of claims and outcomes fail with DatabaseBusyError while the shell holds on; all land later."""
    caplog.set_level(logging.WARNING)
    o = Overlord(db_path, busy_timeout=0.1, busy_budget=0.3)
    st = o.state
    ran: list[str] = []
    ran_lock = threading.Lock()
    first_running = threading.Event()
    lock_taken = threading.Event()

    def step(task: Task, tomb: Tomb) -> None:
        with st:
            summary = task.summary
        with ran_lock:
            ran.append(summary)
        if summary == "step 0":
            first_running.set()
            assert lock_taken.wait(WAIT)

    o.task_runner.add_handler("step", step)
    lock: WriteLock | None = None
    try:
        with st:
            cid = _chain_change(st, "over-budget", 5)
            chg = st.change(cid)
            assert chg is not None
        o.loop()
        assert first_running.wait(WAIT)
        lock = WriteLock(db_path)
        shells.append(lock)
        lock_taken.set()
        deadline = time.monotonic() + 2.0  # several budgets
        while time.monotonic() < deadline:
            time.sleep(0.1)
        lock.release()
        assert chg.wait_ready(WAIT), "the change did not finish after the lock went"
    finally:
        if lock is not None and not lock.released:
            lock.release()
        o.stop()
    assert fresh_rows(db_path, "SELECT status FROM tasks ORDER BY id") == [("Done",)] * 5
    assert fresh_rows(db_path, "SELECT status FROM changes") == [("Done",)]
    assert set(ran) == {f"step {i}" for i in range(5)}
    assert busy_warnings(caplog, db_path)
