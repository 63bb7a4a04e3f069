# SPDX-License-Identifier: GPL-3.0-or-later
"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine import Change, Overlord, Retry, State, Status, Task


def one_task_change(st: State, kind: str, summary: str = "...") -> tuple[str, str]:
    """one_task_change adds a change with one task of kind; returns (change id, task id)."""
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task(kind, summary)
        chg.add_task(t)
        return chg.id, t.id


def count_writes(st: State, monkeypatch: Any) -> list[bool]:
    """count_writes notes, for each write transaction st's store begins from now on, whether it is relaxed
    (committed without its own sync); monkeypatch is pytest's."""
    from engine.session import session_of

    store = session_of(st).uow.store
    writes: list[bool] = []
    begin = store.begin_write

    def counted(relaxed: bool = False) -> None:
        if not store.in_write:
            writes.append(relaxed)
        begin(relaxed=relaxed)

    monkeypatch.setattr(store, "begin_write", counted)
    return writes


def chain_change(st: State, n: int, then: int = 0) -> Change:
    """chain_change adds a change of n chained steps, then `then` tasks waiting for the last step."""
    with st:
        chg = st.new_change("chain", f"{n} chained tasks")
        prev = None
        for i in range(n):
            t = st.new_task("step", f"step {i + 1}")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
        for i in range(then):
            t = st.new_task("fan", f"fan {i + 1}")
            assert prev is not None
            t.wait_for(prev)
            chg.add_task(t)
    return chg


def noting_summaries(into: list[str]) -> Callable[[Task, Any], None]:
    """noting_summaries is a handler that appends each task's summary to into, in the order they run."""

    def note(task: Task, tomb: Any) -> None:
        with task.state:
            into.append(task.summary)

    return note


def run_noop_change(o: Overlord, tasks: int) -> Change:
    """run_noop_change settles an "install" change of tasks independent no-op tasks of kind "k" on o (the handler
    added here) and checks that it ended Done."""
    o.task_runner.add_handler("k", lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("install", "Install foo")
        for i in range(tasks):
            chg.add_task(o.state.new_task("k", str(i)))
    o.settle(30)
    with o.state:
        assert chg.status.value == "Done"
    return chg


def task_of(st: State, tid: str) -> Task:
    """task_of returns the task with id tid, which must exist (call with the lock held)."""
    t = st.task(tid)
    assert t is not None
    return t


REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0  # generous bound for a child process to answer; never a timing assertion


class Child:
    """Child is a Python script run in another process, talked to line by line on stdin and stdout."""

    def __init__(self, code: str, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=1)
        self.pid = self.proc.pid
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        # A thread, not a read at the end: a grandchild may keep the pipe open.
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def expect(self, prefix: str, timeout: float = WAIT) -> str:
        """expect returns the next line, which must start with prefix."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None or not line.startswith(prefix):
            self.kill()
            raise AssertionError(f"expected {prefix!r} from the child, got {line!r}; its stderr:\n"
                                 f"{''.join(self.stderr)}")
        return line

    def expect_all(self, *prefixes: str, timeout: float = WAIT) -> dict[str, str]:
        """expect_all returns the next lines, which must start with the prefixes, in any order."""
        got: dict[str, str] = {}
        for _ in prefixes:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                line = None
            match = [p for p in prefixes if line is not None and line.startswith(p) and p not in got]
            if not match:
                self.kill()
                raise AssertionError(f"expected lines starting with {prefixes!r} from the child, got {line!r} "
                                     f"after {got!r}; its stderr:\n{''.join(self.stderr)}")
            assert line is not None
            got[match[0]] = line
        return got

    def send(self, line: str) -> None:
        """send writes one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """kill ends the child with SIGKILL and reaps it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def wait(self) -> int:
        """wait waits for the child to exit and returns its exit code."""
        return self.proc.wait(WAIT)


def run_overlord(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """run_overlord runs the overlord command in another process and returns what it did."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("COLUMNS", "200")
    code = "from overlord.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def mount_namespace() -> list[str] | None:
    """mount_namespace is the command that runs a child in its own mount namespace (a tmpfs of its own for a
    full-disk test), or None where this machine allows none (no unshare, no root or user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        return None
    for cmd in ([unshare, "--mount"], [unshare, "--mount", "--map-root-user"]):
        if subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    return None


def flaky_then_failing_change(o: Overlord, advance: Any) -> tuple[str, str, str]:
    """flaky_then_failing_change runs a change whose first task fails once then runs and whose second fails:
    4 runs, one undo (what the tracing tests trace); advance is the FakeClock's. Returns (change, a, b) ids."""
    runs = {"n": 0}

    def flaky(task: Task, tomb: Any) -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            raise Retry(after=0.001)

    def fail(task: Task, tomb: Any) -> None:
        raise RuntimeError("disk on fire")

    o.task_runner.add_handler("flaky", flaky, lambda task, tomb: None)
    o.task_runner.add_handler("fail", fail)
    with o.state:
        chg = o.state.new_change("install", "Install foo")
        a, b = o.state.new_task("flaky", "a"), o.state.new_task("fail", "b")
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
        ids = chg.id, a.id, b.id
    o.settle(30, advance=advance)
    return ids


@contextlib.contextmanager
def unit_held_open(st: State, work: Callable[[], object], wait: float = 240.0) -> Iterator[list[BaseException]]:
    """unit_held_open runs work in a unit of work of st on another thread, and keeps that unit open (its locks
    held, nothing committed) until the with block ends; then it commits. It yields the errors the thread met
    (wait: a generous bound for each step of the thread, never a timing assertion)."""
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with st:
                work()
                inside.set()
                release.wait(wait)
        except BaseException as e:  # reported by the caller
            errors.append(e)
            inside.set()

    th = threading.Thread(target=hold)
    th.start()
    try:
        assert inside.wait(wait) and errors == [], errors
        yield errors
    finally:
        release.set()
        th.join(wait)


def spawn_next(task: Task, steps: int, finish: bool = True) -> int:
    """spawn_next is the body of a handler that builds its chain as it runs (the peers' shape): in one block it
    adds the next step to the task's change, waiting for this one (up to steps), and sets this one Done (finish).
    It returns this step's number (from 0)."""
    st = task.state
    with st:
        i: int = task.get("i")
        if i + 1 < steps:
            nxt = st.new_task("step", f"step {i + 2}")
            nxt.set("i", i + 1)
            nxt.wait_for(task)
            chg = task.change()
            assert chg is not None
            chg.add_task(nxt)
        if finish:
            task.set_status(Status.DONE)
    return i


def spawn_first(st: State) -> Change:
    """spawn_first is a change holding the first step of a chain that spawn_next builds."""
    with st:
        chg = st.new_change("spawn", "a chain its handlers build")
        first = st.new_task("step", "step 1")
        first.set("i", 0)
        chg.add_task(first)
    return chg


#: The tables whose rows wait in memory for whatever commit comes next (engine/timings.py): a slow ensure pass's
#: managers (ensure_timings) and a batch of runs (task_timing_batches). Under load a pass passes the threshold and its
#: rows ride on a chain's step.
TIMING_TABLES = ("ensure_timings", "task_timing_batches")


def without_timing_rows(statements: list[str]) -> list[str]:
    """without_timing_rows drops from traced statements those that write or trim the timing tables."""
    return [s for s in statements if not any(f" {table}" in s for table in TIMING_TABLES)]


def chain_across(st: State, one: Change, two: Change, n: int = 5) -> list[Task]:
    """chain_across adds (st locked) a chain of n tasks, each waiting for the one before, its first three in one and
    the rest in two."""
    chain = [st.new_task("k", f"t{i}") for i in range(n)]
    for later, earlier in zip(chain[1:], chain, strict=False):
        later.wait_for(earlier)
    for t in chain[:3]:
        one.add_task(t)
    for t in chain[3:]:
        two.add_task(t)
    return chain
