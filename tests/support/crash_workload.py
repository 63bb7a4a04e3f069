# SPDX-License-Identifier: GPL-3.0-or-later
"""A crash workload run in a child process, and a driver that SIGKILLs it and checks what survived.

The child (``python -m tests.support.crash_workload RUN --db PATH --journal PATH --seed N --changes N``)
opens an Overlord on the file database, creates the workload the first time (when the state key
``workload-created`` is absent), registers the handlers, runs the ensure loop until every change
is ready and exits 0. Everything the workload does is decided by the seed: which tasks fail, which
retry and how often, so an uninterrupted run and a killed-and-resumed one end in the same statuses.

Every handler appends a line to a journal file (opened with O_APPEND, fsync'ed per line) when it
starts and when it ends; the process writes markers there too (``proc start``, ``proc opened``,
``proc loop`` ...). The driver (:func:`soak`) runs the workload once uninterrupted, then again on
a second database while killing it at random moments, and compares.

Journal lines: ``<time_ns> <pid> <task id> <do|undo> <start|end> <note>``; markers:
``<time_ns> <pid> - proc <event>``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tenacity

from engine import Overlord, Retry, State, Status, Task, Tomb

ROOT = Path(__file__).resolve().parents[2]
CREATED_KEY = "workload-created"
READY = (Status.DONE, Status.UNDONE, Status.HOLD, Status.ERROR)


# -- the plan: deterministic from the seed -------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Shape sizes a workload: how many lanes, how long the chains, how often things fail."""

    max_lanes: int = 2  # chain lanes per change
    max_chain: int = 2  # tasks per chain lane
    head_share: float = 0.4  # a change starts with a head task in every lane
    join_share: float = 0.3  # a change ends with a join task in a lane of its own
    race_share: float = 0.05  # a lane is a failer racing a blocker (abort while running)
    fail_share: float = 0.07  # a task's do handler fails
    retry_share: float = 0.15  # a task asks to be retried once or twice first
    self_share: float = 0.25  # a task finishes itself (status + state write in one transaction)
    noundo_share: float = 0.15  # a task's kind has no undo handler


SHORT = Shape()
LONG = Shape(max_lanes=3, max_chain=3, race_share=0.06)


class _ChangePlan:
    """_ChangePlan collects the tasks of one planned change."""

    def __init__(self, label: str, rng: random.Random, shape: Shape) -> None:
        self.label, self.rng, self.shape = label, rng, shape
        self.tasks: list[dict[str, Any]] = []

    def task(self, lanes: list[int], waits: list[str], role: str = "plain", **over: Any) -> dict[str, Any]:
        rng, shape = self.rng, self.shape
        r = rng.random()
        kind = "w-self" if r < shape.self_share else "w-noundo" if r < shape.self_share + shape.noundo_share \
            else "w-undo"
        retries = rng.choice((1, 1, 2)) if rng.random() < shape.retry_share else 0
        if retries and kind == "w-undo" and rng.random() < 0.5:
            kind = "w-policy"  # retried by a tenacity policy instead of Retry
        spec = {"label": f"{self.label}/t{len(self.tasks) + 1}", "kind": kind, "lanes": lanes, "waits": waits,
                "role": role, "fail": rng.random() < shape.fail_share, "retries": retries}
        spec.update(over)
        self.tasks.append(spec)
        return spec


def plan_workload(seed: int, changes: int, shape: Shape = SHORT) -> list[dict[str, Any]]:
    """plan_workload returns the changes to create: labels, kinds, lanes, edges and outcomes."""
    rng = random.Random(seed)
    plan = []
    for c in range(1, changes + 1):
        cp = _ChangePlan(f"c{c:04d}", rng, shape)
        n_lanes = rng.randint(1, shape.max_lanes)
        head = cp.task(list(range(1, n_lanes + 1)), []) if rng.random() < shape.head_share else None
        tails: list[str] = []
        for lane in range(1, n_lanes + 1):
            prev = [head["label"]] if head else []
            if rng.random() < shape.race_share:
                if rng.random() < 0.5:
                    prev = [cp.task([lane], prev)["label"]]
                # The failer fails once the blocker started: the blocker is aborted while it runs.
                failer = cp.task([lane], prev, "failer", kind=rng.choice(("w-undo", "w-noundo")), fail=True,
                                 retries=0)
                blocker = cp.task([lane], prev, "blocker", kind="w-undo", fail=False, retries=0,
                                  dying_retry=rng.random() < 0.5)
                failer["partner"] = blocker["label"]
                tails += [failer["label"], blocker["label"]]
                continue
            for _ in range(rng.randint(1, shape.max_chain)):
                prev = [cp.task([lane], prev)["label"]]
            tails += prev
        if rng.random() < shape.join_share:
            cp.task([n_lanes + 1], tails)
        plan.append({"label": cp.label, "tasks": cp.tasks})
    return plan


def create_workload(st: State, plan: list[dict[str, Any]], seed: int) -> None:
    """create_workload creates every planned change in one unit of work, marked by CREATED_KEY."""
    with st:
        ids: dict[str, Task] = {}
        for spec in plan:
            chg = st.new_change("crash-workload", spec["label"])
            lanes: dict[int, int] = {}
            for ts in spec["tasks"]:
                t = st.new_task(ts["kind"], ts["label"])
                for lane in ts["lanes"]:
                    if lane not in lanes:
                        lanes[lane] = st.new_lane()
                    t.join_lane(lanes[lane])
                for w in ts["waits"]:
                    t.wait_for(ids[w])
                chg.add_task(t)
                ids[ts["label"]] = t
            for ts in spec["tasks"]:
                data = {k: ts[k] for k in ("role", "fail", "retries") if k in ts}
                data["dying_retry"] = ts.get("dying_retry", False)
                if "partner" in ts:
                    data["partner"] = ids[ts["partner"]].id
                ids[ts["label"]].set("spec", data)
        st.set(CREATED_KEY, {"seed": seed, "changes": len(plan), "tasks": len(ids)})


# -- the child: handlers with an external effect ---------------------------------------------------


class Journal:
    """Journal appends one fsync'ed line per event to a file shared by every life of the workload."""

    def __init__(self, path: str | Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def write(self, tid: str, phase: str, event: str, note: str = "-") -> None:
        line = f"{time.time_ns()} {self._pid} {tid} {phase} {event} {note}\n"
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def mark(self, event: str) -> None:
        self.write("-", "proc", event)


class PlannedFailure(Exception):
    """PlannedFailure is the error of a task the plan makes fail."""


class Transient(Exception):
    """Transient is retried by the w-policy kind's tenacity policy."""


class Handlers:
    """Handlers are the workload's do and undo handlers; each records its start and end in the journal."""

    def __init__(self, journal: Journal, sleep_ms: tuple[float, float]) -> None:
        self.journal = journal
        self.sleep_ms = sleep_ms
        self._rng = random.Random()  # timing only: outcomes come from the task's spec
        self._rng_lock = threading.Lock()

    def register(self, o: Overlord) -> None:
        r = o.task_runner
        r.add_handler("w-undo", self.do, self.undo)
        r.add_handler("w-noundo", self.do)
        r.add_handler("w-self", self.do, self.undo)
        r.add_handler("w-policy", self.do, self.undo, retry=tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            wait=tenacity.wait_fixed(0.005),
            stop=tenacity.stop_after_attempt(6)))

    def _nap(self) -> None:
        with self._rng_lock:
            delay = self._rng.uniform(*self.sleep_ms) / 1000
        time.sleep(delay)

    def do(self, task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            tid, label, kind, spec = task.id, task.summary, task.kind, task.get("spec")
        jr = self.journal
        jr.write(tid, "do", "start")
        ended = False
        try:
            self._nap()
            if spec["role"] == "blocker":
                # Runs until its lane is aborted by the failer beside it; asks to be retried meanwhile,
                # so it holds no worker for long.
                with self._rng_lock:
                    wait = self._rng.uniform(0.005, 0.02)
                if not tomb.wait_dying(wait):
                    jr.write(tid, "do", "end", "waiting")
                    raise Retry(after=0.002, reason="waiting for the failer")
                jr.write(tid, "do", "end", "dying")
                if spec["dying_retry"]:
                    raise Retry(reason="told to stop")
                return
            if spec["role"] == "failer":
                # Fail only once the blocker started, so it is aborted while running (or while waiting
                # for its retry).
                with st:
                    partner = st.task(spec["partner"])
                    assert partner is not None
                    started = partner.status is not Status.DO
                if not started:
                    jr.write(tid, "do", "end", "waiting")
                    raise Retry(after=0.002, reason="waiting for the blocker")
            if spec["retries"]:
                with st:
                    tries = task.get("tries", 0) + 1
                    task.set("tries", tries)
                if tries <= spec["retries"]:
                    jr.write(tid, "do", "end", "retry")
                    if kind == "w-policy":
                        raise Transient(f"transient failure {tries} of {label}")
                    raise Retry(after=self._rng.uniform(0.002, 0.02), reason=f"retry {tries} of {label}")
            if spec["fail"]:
                jr.write(tid, "do", "end", "fail")
                raise PlannedFailure(f"planned failure of {label}")
            if kind == "w-self":
                with st:
                    st.set(f"effect/{label}", {"task": tid, "pid": os.getpid()})
                    jr.write(tid, "do", "end", "self")  # before the commit: a kill after it re-runs
                    ended = True
                    task.set_status(Status.DONE)
                return
            jr.write(tid, "do", "end", "ok")
        except (Retry, PlannedFailure, Transient):
            raise
        except BaseException as e:
            # A commit that failed after the end was written (the server went away): the run ended there.
            if not ended:
                jr.write(tid, "do", "end", f"exc:{type(e).__name__}")
            raise

    def undo(self, task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            tid, label, kind = task.id, task.summary, task.kind
        jr = self.journal
        jr.write(tid, "undo", "start")
        ended = False
        try:
            self._nap()
            if kind == "w-self":
                with st:
                    st.set(f"undo-effect/{label}", {"task": tid, "pid": os.getpid()})
                    jr.write(tid, "undo", "end", "self")
                    ended = True
                    task.set_status(Status.UNDONE)
                return
            jr.write(tid, "undo", "end", "ok")
        except BaseException as e:
            if not ended:
                jr.write(tid, "undo", "end", f"exc:{type(e).__name__}")
            raise


def run_workload(args: argparse.Namespace) -> int:
    """run_workload is one life of the child: open, create once, loop until every change is ready."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s")
    jr = Journal(args.journal)
    jr.mark("start")
    if args.url:  # PostgreSQL: one of several runner hosts on one database
        o = Overlord(url=args.url, workers=args.workers, lease=args.lease)
    else:
        o = Overlord(args.db, workers=args.workers)
    jr.mark("opened")
    st = o.state
    with st:
        created = st.has(CREATED_KEY)
    if not created:
        jr.mark("creating")
        shape = LONG if args.shape == "long" else SHORT
        if args.no_race:
            shape = Shape(**{**shape.__dict__, "race_share": 0.0})
        create_workload(st, plan_workload(args.seed, args.changes, shape), args.seed)
        jr.mark("created")
    with st:
        st.set(f"life/{os.getpid()}", time.time_ns())
    lo, _, hi = args.sleep_ms.partition(":")
    Handlers(jr, (float(lo), float(hi or lo))).register(o)
    jr.mark("loop")
    o.loop()
    deadline = time.monotonic() + args.timeout
    with st:
        changes = st.changes()
    for chg in changes:
        if not chg.wait_ready(max(0.0, deadline - time.monotonic())):
            with st:
                unready = {c.summary: {t.summary: str(t.status) for t in c.tasks()}
                           for c in st.changes() if not c.is_ready()}
            print(f"workload: not ready after {args.timeout} s: {unready}", file=sys.stderr, flush=True)
            jr.mark("timeout")
            os._exit(3)
    jr.mark("ready")
    o.stop()
    jr.mark("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.crash_workload")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("RUN", help="run the workload until every change is ready")
    run.add_argument("--db", help="the SQLite file (or --url)")
    run.add_argument("--url", help="a PostgreSQL URL: the workload must be there already (create_workload)")
    run.add_argument("--lease", type=float, default=30.0, help="the runner's lease on PostgreSQL, seconds")
    run.add_argument("--journal", required=True)
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--changes", type=int, default=200)
    run.add_argument("--shape", choices=("short", "long"), default="short")
    run.add_argument("--no-race", action="store_true", help="no failer/blocker lanes")
    run.add_argument("--sleep-ms", default="1:6", help="handler sleep range in ms, LO:HI")
    run.add_argument("--workers", type=int, default=32, help="the task runner's worker threads")
    run.add_argument("--timeout", type=float, default=600.0, help="give up (exit 3) after this many seconds")
    fork = sub.add_parser("FORKSERVER", help="start lives of the workload by forking this process (see ForkServer)")
    fork.add_argument("--preload", action="append", default=[], help="a module to import before the first fork")
    args = p.parse_args(argv)
    if args.cmd == "FORKSERVER":
        for module in args.preload:
            __import__(module)
        return fork_server()
    return run_workload(args)


# -- the fork server: lives without an interpreter start each ------------------------------------------


def fork_server() -> int:
    """fork_server runs lives of the workload in children forked from this process, which imported the engine.

    It reads requests on stdin, one JSON line each: {"argv": [...], "stderr": path}; forks a child that
    runs main(argv) with its stdout and stderr appended to path, and answers {"pid": n} on stdout (with
    "module" and "env": the child runs that module as __main__ with sys.argv[1:] = argv, as python -m
    does, in the environment updated with env). When a
    child ends, it writes {"exit": pid, "code": c}, c as Popen's returncode (-9 for a SIGKILL). It exits
    at the end of stdin. Single-threaded, so a fork copies nothing half-done.
    """
    import json
    import select

    if threading.active_count() != 1:
        print(f"fork server: {threading.active_count()} threads after the imports: cannot fork safely",
              file=sys.stderr)
        return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
    out = sys.stdout

    def say(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    pending = b""
    eof = False
    while not eof:
        try:
            ready, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            ready = []
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        reap()
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        eof = not data
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _forked_life(req, (wake_r, wake_w))
            say({"pid": pid})
    while True:  # stdin closed: wait for the lives still running
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _forked_life(req: dict[str, Any], fds: tuple[int, int]) -> None:
    """_forked_life is a forked child of the server: it runs one life and exits with its status."""
    argv, stderr = req["argv"], req["stderr"]
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in fds:
            os.close(fd)
        err = os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(err, 1)
        os.dup2(err, 2)
        os.close(err)
        os.close(null)
        if "module" in req:
            import runpy

            os.environ.update(req.get("env") or {})
            sys.argv = [req["module"], *argv]
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
            code = 0
        else:
            code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# -- the driver ----------------------------------------------------------------------------------------


@dataclass
class Life:
    """Life is one run of the child process."""

    pid: int
    spawned_ns: int
    ended_ns: int = 0
    rc: int | None = None
    category: str = "none"  # how its kill was aimed, or "none" when it ran to the end
    stage: str = ""  # the last marker it wrote
    delay: float = 0.0
    doing_after: set[str] = field(default_factory=set)  # tasks Doing/Undoing/Abort in the database after it
    snapshot: bool = False  # doing_after was read
    stderr_at: int = 0  # where its stderr starts in the shared file


@dataclass
class Run:
    """Run is one execution of a handler, from the journal."""

    tid: str
    phase: str
    pid: int
    start: int
    end: int | None = None  # None: killed
    note: str = ""


@dataclass
class Outcome:
    """Outcome is what the driver saw and found."""

    seed: int
    changes: int = 0
    tasks: int = 0
    kills: int = 0
    lives: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    reference_runs: int = 0
    reference_wall: float = 0.0
    wall: float = 0.0
    final_wall: float = 0.0
    doing_at_kill: int = 0
    max_inflight: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> str:
        """figures tells the numbers in a few lines."""
        r = self.runs
        return "\n".join([
            f"seed {self.seed}: {self.changes} changes, {self.tasks} tasks",
            f"kills {self.kills} ({', '.join(f'{k} {v}' for k, v in sorted(self.categories.items()))}); "
            f"resumes {max(0, self.lives - 1)}; lives {self.lives}",
            f"killed at stage: {', '.join(f'{k} {v}' for k, v in sorted(self.stages.items()))}",
            f"handler runs {r['runs']} (do {r['do']}, undo {r['undo']}; completed {r['completed']}, "
            f"killed {r['killed']}, re-runs {r['reruns']}); uninterrupted run: {self.reference_runs}",
            f"tasks Doing/Undoing/Abort in the database after a kill: {self.doing_at_kill} in all; at most "
            f"{self.max_inflight} claimed in one life and in flight at its kill",
            f"wall time {self.wall:.1f} s (reference run {self.reference_wall:.1f} s, "
            f"last life {self.final_wall:.1f} s)",
            f"problems: {len(self.problems)}",
            *[f"  - {p}" for p in self.problems[:40]],
        ])


def child_command(db: Path, journal: Path, seed: int, changes: int, *, shape: str = "short",
                  sleep_ms: str = "1:6", workers: int = 32, no_race: bool = False,
                  timeout: float = 600.0) -> list[str]:
    """child_command is the command line of one life of the workload."""
    cmd = [sys.executable, "-m", "tests.support.crash_workload", "RUN", "--db", str(db), "--journal", str(journal),
           "--seed", str(seed), "--changes", str(changes), "--shape", shape, "--sleep-ms", sleep_ms,
           "--workers", str(workers), "--timeout", str(timeout)]
    return cmd + (["--no-race"] if no_race else [])


class JournalTail:
    """JournalTail reads the lines appended to a journal since the last call."""

    def __init__(self, path: Path) -> None:
        path.touch()
        self._f = path.open("rb")
        self._rest = b""

    def lines(self) -> list[list[str]]:
        data = self._rest + self._f.read()
        *done, self._rest = data.split(b"\n")
        return [line.decode().split() for line in done]

    def close(self) -> None:
        self._f.close()


class ForkedProcess:
    """ForkedProcess is a life started by a ForkServer, with what the tests use of a Popen."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"life {self.pid}", timeout or 0.0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """ForkServer starts lives of the workload as children of one process that imported the engine once.

    A life is then a fork (milliseconds) instead of an interpreter that imports SQLAlchemy and the engine
    (about a second of CPU): a real process all the same, with its own SQLite connections and locks (the
    server never opens a database), SIGKILLed the same way. Only kills during the interpreter's start,
    before the workload touches anything, are no longer there to be had.
    """

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        import json

        self._json = json
        cmd = [sys.executable, "-m", "tests.support.crash_workload", "FORKSERVER"]
        for module in preload:
            cmd += ["--preload", module]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._cond = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = self._json.loads(line)
            with self._cond:
                if "pid" in msg:
                    self._pids.append(msg["pid"])
                else:
                    self._exits[msg["exit"]] = msg["code"]
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def spawn(self, cmd: list[str], stderr: Path) -> ForkedProcess:
        """spawn starts a life: cmd is a child_command, run in a fork of the server."""
        assert cmd[1:3] == ["-m", "tests.support.crash_workload"], cmd
        return self._request({"argv": cmd[3:], "stderr": str(stderr)})

    def run_module(self, module: str, argv: list[str], stderr: Path,
                   env: dict[str, str] | None = None) -> ForkedProcess:
        """run_module starts `python -m module ARGV` as a fork of the server (preload what it imports)."""
        return self._request({"module": module, "argv": argv, "stderr": str(stderr), "env": env or {}})

    def _request(self, req: dict[str, Any]) -> ForkedProcess:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self._json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: self._pids or self._closed, 60):
                raise RuntimeError("the fork server did not answer within 60 s")
            if not self._pids:
                raise RuntimeError(f"the fork server exited ({self.proc.wait()})")
            return ForkedProcess(self, self._pids.pop(0))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """exit_code waits up to timeout (None: for ever) for a life to end; its returncode, or None."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._closed, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        """close ends the server once the lives it runs have ended."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)


def spawn(cmd: list[str], stderr: Path, server: ForkServer | None = None) -> tuple[Any, int]:
    """spawn starts a child in the project root, its stderr appended to a file (a fork of server, if given).

    The child is a subprocess.Popen, or a ForkedProcess of the server: pid, poll, wait, kill as a Popen's.
    """
    t0 = time.time_ns()
    if server is not None:
        return server.spawn(cmd, stderr), t0
    with stderr.open("ab") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    return proc, t0


def read_journal(path: Path) -> list[list[str]]:
    """read_journal returns every complete line of a journal, split into fields."""
    data = path.read_bytes()
    return [line.decode().split() for line in data.split(b"\n") if line.strip()]


def journal_runs(lines: list[list[str]], deaths: dict[int, int], problems: list[str]) -> list[Run]:
    """journal_runs pairs start and end lines per process; a start with no end ran until its process died."""
    runs: list[Run] = []
    open_runs: dict[tuple[int, str, str], Run] = {}
    for fields in lines:
        ns, pid, tid, phase, event = int(fields[0]), int(fields[1]), fields[2], fields[3], fields[4]
        if tid == "-":
            continue
        key = (pid, tid, phase)
        if event == "start":
            if key in open_runs:
                problems.append(f"task {tid} {phase}: started again in process {pid} before its run ended")
            run = Run(tid, phase, pid, ns)
            open_runs[key] = run
            runs.append(run)
        else:
            run_or_none = open_runs.pop(key, None)
            if run_or_none is None:
                problems.append(f"task {tid} {phase}: end without a start in process {pid}")
                continue
            run_or_none.end, run_or_none.note = ns, fields[5]
    for (pid, tid, phase), run in open_runs.items():
        if pid not in deaths:
            problems.append(f"task {tid} {phase}: run in unknown process {pid}")
            run.end = run.start
        else:
            run.note = "killed"
    return runs


def snapshot(db: Path) -> dict[str, Any] | None:
    """snapshot reads a database left by a dead process, read-only: unfinished tasks, counts, state keys."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        busy = {str(r[0]): r[1] for r in con.execute(
            "SELECT id, status FROM tasks WHERE status IN ('Doing', 'Undoing', 'Abort')")}
        total = con.execute("SELECT count(*) FROM tasks").fetchone()[0]
        # Claimed and not recorded (no retry time pending), or left so by an earlier kill.
        inflight = {str(r[0]) for r in con.execute(
            "SELECT id FROM tasks WHERE status IN ('Doing', 'Undoing') AND at_time IS NULL")}
        unready = con.execute(
            "SELECT count(*) FROM tasks WHERE status NOT IN ('Done', 'Undone', 'Hold', 'Error')").fetchone()[0]
        keys = dict(con.execute("SELECT key, value FROM state_data").fetchall())
        selfs = dict(con.execute("SELECT summary, status FROM tasks WHERE kind = 'w-self'").fetchall())
        return {"busy": busy, "total": total, "unready": unready, "keys": keys, "self": selfs, "inflight": inflight}
    except sqlite3.Error:
        return None  # killed before the schema was there
    finally:
        con.close()


def check_atomic(snap: dict[str, Any]) -> list[str]:
    """check_atomic: a self-finishing task's state write and its status change were committed together."""
    problems = []
    for label, status in snap["self"].items():
        has = f"effect/{label}" in snap["keys"]
        if status == "Done" and not has:
            problems.append(f"task {label} is Done but the effect it committed with its status is missing")
        if has and status not in ("Done", "Undo", "Undoing", "Undone", "Abort"):
            problems.append(f"task {label} is {status} but the effect committed with its status is there")
        undone = f"undo-effect/{label}" in snap["keys"]
        if (status == "Undone") != undone:
            problems.append(f"task {label} is {status} and its undo effect is {'there' if undone else 'missing'}")
    return problems


def final_statuses(db: Path | str) -> tuple[dict[str, tuple[str, dict[str, str]]], dict[str, Any]]:
    """final_statuses reads, through the engine, {change: (status, {task: status})} and what checks need.

    db is a SQLite file, or a PostgreSQL URL.
    """
    st = State.open(url=db) if isinstance(db, str) and "://" in db else State.open(db)
    try:
        with st:
            out: dict[str, tuple[str, dict[str, str]]] = {}
            info: dict[str, Any] = {"label": {}, "kind": {}, "waits": {}, "effects": set(), "undo_effects": set(),
                                    "created": st.get(CREATED_KEY, None), "unready": []}
            for chg in st.changes():
                tasks = {}
                for t in chg.tasks():
                    tasks[t.summary] = str(t.status)
                    info["label"][t.id] = t.summary
                    info["kind"][t.summary] = t.kind
                    info["waits"][t.id] = [w.id for w in t.wait_tasks()]
                    if st.has(f"effect/{t.summary}"):
                        info["effects"].add(t.summary)
                    if st.has(f"undo-effect/{t.summary}"):
                        info["undo_effects"].add(t.summary)
                out[chg.summary] = (str(chg.status), tasks)
                if not chg.is_ready():
                    info["unready"].append(chg.summary)
            info["task_count"] = st.task_count()
        return out, info
    finally:
        st.close()


def integrity(db: Path) -> list[str]:
    """integrity runs PRAGMA integrity_check and foreign_key_check."""
    con = sqlite3.connect(db)
    try:
        problems = []
        res = [r[0] for r in con.execute("PRAGMA integrity_check")]
        if res != ["ok"]:
            problems.append(f"integrity_check: {res[:5]}")
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems.append(f"foreign_key_check: {fk[:5]}")
        return problems
    finally:
        con.close()


def check_runs(runs: list[Run], deaths: dict[int, int], statuses: dict[str, tuple[str, dict[str, str]]],
               info: dict[str, Any], problems: list[str]) -> None:
    """check_runs: finished tasks ran to the end at least once, no runs overlap, waits were respected."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.tid].append(run)
    label_to_id = {label: tid for tid, label in info["label"].items()}
    for run in runs:
        if run.tid not in info["label"]:
            problems.append(f"journal names task {run.tid}, which the database does not have")
    # What a completed run that leads to each final status ends with in the journal.
    finishing = {"Done": ("do", ("ok", "self")), "Error": ("do", ("fail",)), "Undone": ("undo", ("ok", "self"))}
    for _chg, (_cs, tasks) in statuses.items():
        for label, status in tasks.items():
            tid = label_to_id[label]
            if status in finishing:
                phase, notes = finishing[status]
                if not any(r.phase == phase and r.note in notes for r in by_task[tid]):
                    problems.append(f"task {tid} ({label}) is {status} but no {phase} run of it that ends so "
                                    f"completed in the journal")
            if info["kind"][label] == "w-self" and status in ("Done", "Undone") and label not in info["effects"]:
                problems.append(f"task {tid} ({label}) is {status} but its committed effect key is missing")
            if info["kind"][label] == "w-self" and status == "Undone" and label not in info["undo_effects"]:
                problems.append(f"task {tid} ({label}) is Undone but its committed undo-effect key is missing")
    # No two runs of a task overlap; a killed run lasts until its process died.
    for tid, trs in by_task.items():
        spans = sorted(((r.start, r.end if r.end is not None else deaths.get(r.pid, r.start), r) for r in trs),
                       key=lambda span: span[:2])
        for (_s1, e1, r1), (s2, _e2, r2) in itertools.pairwise(spans):
            if s2 < e1:
                problems.append(f"task {tid} ({info['label'].get(tid)}): {r1.phase} run in process {r1.pid} "
                                f"({r1.note}) overlaps {r2.phase} run in process {r2.pid} by {(e1 - s2) / 1e6:.1f} ms")
    # A task's do handler starts only after every task it waits for completed its do handler.
    for tid, trs in by_task.items():
        for run in trs:
            if run.phase != "do":
                continue
            for w in info["waits"].get(tid, []):
                if not any(p.phase == "do" and p.note in ("ok", "self") and p.end is not None and p.end <= run.start
                           for p in by_task.get(w, [])):
                    problems.append(f"task {tid} ({info['label'].get(tid)}) started in process {run.pid} before "
                                    f"task {w} it waits for had completed a do run")


class Driver:
    """Driver runs lives of the workload on one database and kills them as told."""

    def __init__(self, workdir: Path, name: str, seed: int, changes: int, shape: str, sleep_ms: str,
                 workers: int, no_race: bool, log: Callable[[str], None], server: ForkServer | None = None) -> None:
        self.server = server
        self.db = workdir / f"{name}.db"
        self.journal = workdir / f"{name}.journal"
        self.stderr = workdir / f"{name}.stderr"
        self.cmd = child_command(self.db, self.journal, seed, changes, shape=shape, sleep_ms=sleep_ms,
                                 workers=workers, no_race=no_race)
        self.tail = JournalTail(self.journal)
        self.lives: list[Life] = []
        self.log = log
        self.markers: dict[int, dict[str, int]] = defaultdict(dict)

    def _poll(self) -> None:
        for f in self.tail.lines():
            if f[2] == "-":
                self.markers[int(f[1])][f[4]] = int(f[0])

    def stage(self, pid: int) -> str:
        self._poll()
        marks = self.markers.get(pid, {})
        return max(marks, key=lambda m: marks[m]) if marks else "exec"

    def life(self, kill: tuple[str, str, float] | None, timeout: float) -> Life:
        """life runs the child once: killed `delay` s after marker `after` (or spawn), or until it exits."""
        at = self.stderr.stat().st_size if self.stderr.exists() else 0
        proc, t0 = spawn(self.cmd, self.stderr, self.server)
        life = Life(proc.pid, t0, stderr_at=at)
        self.lives.append(life)
        deadline = time.monotonic() + timeout
        if kill is not None:
            life.category, after, life.delay = kill
            target: float | None = None
            while proc.poll() is None and time.monotonic() < deadline:
                if target is None:
                    if after == "spawn":
                        target = t0 / 1e9 + life.delay
                    else:
                        self._poll()
                        if after in self.markers.get(proc.pid, {}):
                            target = self.markers[proc.pid][after] / 1e9 + life.delay
                if target is not None and time.time() >= target:
                    life.stage = self.stage(proc.pid)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.0005)
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            life.stage = self.stage(proc.pid)
            life.category = "hung"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        life.ended_ns = time.time_ns()
        life.rc = proc.returncode
        if not life.stage:
            life.stage = self.stage(proc.pid)
        return life

    def stderr_of(self, life: Life, n: int = 2000) -> str:
        """stderr_of returns the end of what one life wrote on stderr, without engine warnings."""
        try:
            with self.stderr.open("rb") as f:
                f.seek(life.stderr_at)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(line for line in text.splitlines() if " WARNING engine." not in line)[-n:]


def run_reference(workdir: Path, seed: int, changes: int, shape: str, sleep_ms: str, workers: int, no_race: bool,
                  timeout: float, log: Callable[[str], None], server: ForkServer | None = None) -> tuple[Driver, Life]:
    """run_reference runs the workload once, uninterrupted."""
    d = Driver(workdir, "reference", seed, changes, shape, sleep_ms, workers, no_race, log, server)
    life = d.life(None, timeout)
    return d, life


def soak(workdir: Path, *, seed: int, changes: int = 200, kills: int = 50, shape: str = "short",
         sleep_ms: str = "2:12", workers: int = 4, no_race: bool = False, final_timeout: float = 120.0,
         log: Callable[[str], None] = print, fork: bool = False) -> Outcome:
    """soak runs the workload uninterrupted on one database and under SIGKILLs on another, and compares.

    Every problem found is listed in the returned Outcome's problems. fork starts the lives from a
    ForkServer instead of a new interpreter each.
    """
    server = ForkServer() if fork else None
    try:
        return _soak(workdir, seed, changes, kills, shape, sleep_ms, workers, no_race, final_timeout, log, server)
    finally:
        if server is not None:
            server.close()


def _soak(workdir: Path, seed: int, changes: int, kills: int, shape: str, sleep_ms: str, workers: int,
          no_race: bool, final_timeout: float, log: Callable[[str], None], server: ForkServer | None) -> Outcome:
    t_start = time.monotonic()
    out = Outcome(seed=seed)
    problems = out.problems
    rng = random.Random(seed * 7919 + 17)

    # 1. The reference: one uninterrupted life.
    ref, ref_life = run_reference(workdir, seed, changes, shape, sleep_ms, workers, no_race, final_timeout, log,
                                  server)
    out.reference_wall = (ref_life.ended_ns - ref_life.spawned_ns) / 1e9
    if ref_life.rc != 0:
        problems.append(f"the uninterrupted run exited {ref_life.rc}: {ref.stderr_of(ref_life)}")
        out.wall = time.monotonic() - t_start
        return out
    ref_statuses, ref_info = final_statuses(ref.db)
    ref_problems: list[str] = []
    ref_runs = journal_runs(read_journal(ref.journal), {ref_life.pid: ref_life.ended_ns}, ref_problems)
    check_runs(ref_runs, {ref_life.pid: ref_life.ended_ns}, ref_statuses, ref_info, ref_problems)
    problems += [f"uninterrupted run: {p}" for p in ref_problems + integrity(ref.db)]
    out.reference_runs = len(ref_runs)
    ref._poll()
    marks = ref.markers.get(ref_life.pid, {})
    loop_time = (marks.get("ready", ref_life.ended_ns) - marks.get("loop", ref_life.spawned_ns)) / 1e9
    create_time = (marks.get("created", 0) - marks.get("opened", 0)) / 1e9 if "created" in marks else 0.05
    log(f"reference run: {out.reference_wall:.1f} s (loop {loop_time:.1f} s, create {create_time:.2f} s), "
        f"{len(ref_runs)} handler runs")

    # 2. The same workload, killed again and again.
    d = Driver(workdir, "killed", seed, changes, shape, sleep_ms, workers, no_race, log, server)
    creation_kills = 0
    created = False
    unready_share = 1.0
    # How fast lives get through the work (share of tasks per second in the loop), learnt as they go:
    # the load on the machine may differ from the reference run's.
    done_share, loop_seconds = 0.2, 0.2 * max(loop_time, 0.1)
    n_failed_lives = 0
    inflight: set[str] = set()
    while out.kills < kills:
        if not created and creation_kills < 4:
            # The first life migrates a new database: kill it there; then kill during the creation.
            creation_kills += 1
            kill = ("open", "start", rng.uniform(0, 0.03)) if creation_kills == 1 or rng.random() < 0.5 \
                else ("create", "opened", rng.uniform(0, create_time))
        else:
            r = rng.random()
            if r < 0.08:
                kill = ("startup", "spawn", rng.uniform(0, 0.35))
            elif r < 0.16:
                kill = ("open", "start", rng.uniform(0, 0.004))
            else:
                # Spread the kills over most of the work left (the last life does the rest), between
                # 20 ms and 400 ms into the loop.
                mean = 0.75 * unready_share * loop_seconds / max(done_share, 1e-3) / (kills - out.kills + 1)
                kill = ("loop", "loop", min(0.4, max(0.02, mean * rng.uniform(0.5, 1.5))))
        life = d.life(kill, timeout=60.0)
        snap = snapshot(d.db)
        if snap is not None:
            created = created or CREATED_KEY in snap["keys"]
            if snap["total"]:
                share = snap["unready"] / snap["total"]
                if created:
                    done_share = 0.85 * done_share + (unready_share - share)
                    loop_seconds = 0.85 * loop_seconds + (life.delay if life.category == "loop" else 0.0)
                unready_share = share
            life.doing_after = set(snap["busy"])
            life.snapshot = True
            out.doing_at_kill += len(snap["busy"])
            problems += [f"after the kill of life {len(d.lives)}: {p}" for p in check_atomic(snap)]
            # A life claims no more tasks than it has workers: what became Doing/Undoing (with no retry
            # pending) during the life is at most that many (tasks left so by earlier kills may wait).
            claimed = snap["inflight"] - inflight
            inflight = snap["inflight"]
            out.max_inflight = max(out.max_inflight, len(claimed))
            if len(claimed) > workers:
                problems.append(f"after the kill of life {len(d.lives)}: {len(claimed)} tasks became Doing/Undoing "
                                f"(no retry pending) in it, more than its {workers} workers")
        if life.rc == -signal.SIGKILL and life.category != "hung":
            out.kills += 1
            out.categories[life.category] += 1
            out.stages[life.stage] += 1
            n_failed_lives = 0
        elif life.category == "hung":
            problems.append(f"life {len(d.lives)} (pid {life.pid}) hung at stage {life.stage!r}: "
                            f"no {kill[1]!r} marker within 60 s")
            n_failed_lives += 1
        elif life.rc == 0:
            problems.append(f"the workload finished after only {out.kills} kills (asked for {kills}): "
                            "too small for that many kills")
            break
        else:
            problems.append(f"life {len(d.lives)} (pid {life.pid}) exited {life.rc} at stage {life.stage!r}: "
                            f"{d.stderr_of(life)}")
            n_failed_lives += 1
        if n_failed_lives >= 3:
            problems.append("three lives in a row failed: giving up")
            break
        if len(d.lives) % 25 == 0:
            log(f"  {len(d.lives)} lives, {out.kills} kills, {unready_share:.0%} of tasks unready")

    # 3. Resume until done.
    if d.lives and d.lives[-1].rc != 0:
        t0 = time.monotonic()
        last = d.life(None, final_timeout)
        out.final_wall = time.monotonic() - t0
        if last.rc != 0:
            problems.append(f"the last life (pid {last.pid}) did not finish: exit {last.rc}, stage {last.stage!r} "
                            f"(a hang on resume?) {d.stderr_of(last)}")
    out.lives = len(d.lives)
    deaths = {life.pid: life.ended_ns for life in d.lives}

    # 4. Checks.
    statuses, info = final_statuses(d.db)
    out.changes, out.tasks = len(statuses), info["task_count"]
    if info["created"] is None:
        problems.append(f"state key {CREATED_KEY!r} is missing")
    if info["unready"]:
        problems.append(f"{len(info['unready'])} changes are not ready: {info['unready'][:10]}")
    if len(statuses) != len(ref_statuses) or info["task_count"] != ref_info["task_count"]:
        problems.append(f"{len(statuses)} changes and {info['task_count']} tasks, the uninterrupted run has "
                        f"{len(ref_statuses)} and {ref_info['task_count']}")
    for label, (ref_status, ref_tasks) in sorted(ref_statuses.items()):
        got = statuses.get(label)
        if got is None:
            problems.append(f"change {label} is missing")
        elif got != (ref_status, ref_tasks):
            diff = {t: (s, got[1].get(t)) for t, s in ref_tasks.items() if got[1].get(t) != s}
            problems.append(f"change {label}: {got[0]} (uninterrupted: {ref_status}); tasks differing "
                            f"(uninterrupted, killed): {diff}")
    problems += integrity(d.db)
    lines = read_journal(d.journal)
    for f in lines:
        pid, ns = int(f[1]), int(f[0])
        life_of = next((lf for lf in d.lives if lf.pid == pid), None)
        if life_of is None:
            problems.append(f"journal line from unknown process {pid}: {' '.join(f)}")
        elif not life_of.spawned_ns <= ns <= life_of.ended_ns:
            problems.append(f"journal line outside its process's lifetime: {' '.join(f)}")
    runs = journal_runs(lines, deaths, problems)
    check_runs(runs, deaths, statuses, info, problems)
    # Tasks left Doing/Undoing by a kill ran again in a later life.
    pids = [life.pid for life in d.lives]
    starts: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        starts[run.tid].add(pids.index(run.pid))
    for i, life in enumerate(d.lives):
        for tid in sorted(life.doing_after, key=int):
            if not any(j > i for j in starts[tid]):
                problems.append(f"task {tid} ({info['label'].get(tid)}) was left running by the kill of life "
                                f"{i + 1} but never ran again")
    # Handlers running when a process died had their task still Doing/Undoing/Abort in the database.
    for i, life in enumerate(d.lives):
        if life.rc != -signal.SIGKILL or not life.snapshot:
            continue
        running = {r.tid for r in runs if r.pid == life.pid and r.note == "killed"}
        lost = running - life.doing_after
        if lost:
            problems.append(f"life {i + 1}: handlers of tasks {sorted(lost, key=int)[:10]} were running when it "
                            f"was killed but their tasks were not Doing/Undoing/Abort in the database")
    out.runs["runs"] = len(runs)
    out.runs["do"] = sum(r.phase == "do" for r in runs)
    out.runs["undo"] = sum(r.phase == "undo" for r in runs)
    out.runs["killed"] = sum(r.note == "killed" for r in runs)
    out.runs["completed"] = len(runs) - out.runs["killed"]
    per = Counter((r.tid, r.phase) for r in runs)
    out.runs["reruns"] = sum(n - 1 for n in per.values())
    d.tail.close()
    ref.tail.close()
    out.wall = time.monotonic() - t_start
    return out


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
