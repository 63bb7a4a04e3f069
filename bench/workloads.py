# SPDX-License-Identifier: GPL-3.0-or-later
"""What one child process measures: each function returns a dict of figures.

Every workload runs on a real database file with the engine's default
durability (WAL, synchronous=FULL), through the public API (Overlord,
State, TaskRunner), and checks that the work really finished before
reporting a time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import BenchError, peak_rss_mib


def _noop(task: Any, tomb: Any) -> None:
    return None


def noop_change(st: Any, tasks: int, *, chained: bool) -> Any:
    """noop_change adds to st (locked) one change of tasks no-op tasks, each waiting for the previous one if chained."""
    chg = st.new_change("bench", f"{tasks} {'chained' if chained else 'independent'} no-op tasks")
    prev = None
    for i in range(tasks):
        t = st.new_task("noop", f"task {i + 1}")
        if chained and prev is not None:
            t.wait_for(prev)
        chg.add_task(t)
        prev = t
    return chg


def _status_counts(db: str) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
    finally:
        con.close()


def _run_one_change(db: str, tasks: int, *, chained: bool, ready_timeout: float,
                    synchronous: str = "FULL", after_ready: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """_run_one_change submits one change of tasks no-op tasks in one unit of work and runs it through o.loop().

    after_ready(overlord), if given, runs once the change is ready, inside the timed span (bench.timings: the
    spans left to make are made and exported).
    """
    from engine import Overlord, Status

    rss_start = peak_rss_mib()
    t_open = time.perf_counter()
    o = Overlord(db, synchronous=synchronous)
    open_s = time.perf_counter() - t_open
    try:
        o.task_runner.add_handler("noop", _noop)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        with o.state:
            chg = noop_change(o.state, tasks, chained=chained)
        t1 = time.perf_counter()
        o.loop()
        ready = chg.wait_ready(ready_timeout)
        if ready and after_ready is not None:
            after_ready(o)
        t2 = time.perf_counter()
        cpu_s = time.process_time() - cpu0
        if not ready:
            raise BenchError(f"the change of {tasks} tasks was not ready after {ready_timeout:g} s")
        with o.state:
            status = chg.status
        if status is not Status.DONE:
            raise BenchError(f"the change ended {status}, not Done")
    finally:
        o.stop()
        o.state.close()
    rss = peak_rss_mib()
    done = _status_counts(db).get("Done", 0)
    if done < tasks:
        raise BenchError(f"only {done} of {tasks} tasks are Done in the database")
    return {
        "tasks": tasks,
        "open_s": open_s,
        "submit_s": t1 - t0,
        "run_s": t2 - t1,
        "total_s": t2 - t0,
        "tasks_per_s": tasks / (t2 - t0),
        "run_tasks_per_s": tasks / (t2 - t1),
        "cpu_s": cpu_s,  # the process's CPU time (all threads, user and system) over total_s
        "rss_mib": rss,
        "rss_start_mib": rss_start,
    }


def w1(db: str, tasks: int, ready_timeout: float, synchronous: str = "FULL") -> dict[str, Any]:
    """w1 is the fan-out: one change of independent no-op tasks."""
    return _run_one_change(db, tasks, chained=False, ready_timeout=ready_timeout, synchronous=synchronous)


def w2(db: str, tasks: int, ready_timeout: float, synchronous: str = "FULL") -> dict[str, Any]:
    """w2 is the chain: one change of tasks each waiting for the previous one."""
    return _run_one_change(db, tasks, chained=True, ready_timeout=ready_timeout, synchronous=synchronous)


def w3(db: str, chain: int, ready_timeout: float) -> dict[str, Any]:
    """w3 opens an existing database (Overlord construction) and runs one chained change through it."""
    return _run_one_change(db, chain, chained=True, ready_timeout=ready_timeout)


# -- ensure cost ------------------------------------------------------------------


@dataclass
class _Snapshot:
    cid: int
    task_cols: list[str]
    task_rows: list[tuple[Any, ...]]
    change_cols: list[str]
    change_row: tuple[Any, ...]
    log_max: int
    sequences: list[tuple[Any, ...]]


def _snapshot(db: str, cid: int) -> _Snapshot:
    con = sqlite3.connect(db)
    try:
        return _Snapshot(
            cid,
            [r[1] for r in con.execute("PRAGMA table_info(tasks)")],
            con.execute("SELECT * FROM tasks WHERE change_id = ? ORDER BY id", (cid,)).fetchall(),
            [r[1] for r in con.execute("PRAGMA table_info(changes)")],
            con.execute("SELECT * FROM changes WHERE id = ?", (cid,)).fetchone(),
            con.execute("SELECT coalesce(max(id), 0) FROM task_log").fetchone()[0],
            con.execute("SELECT name, last_id FROM sequences").fetchall(),
        )
    finally:
        con.close()


def _restore(db: str, snap: _Snapshot) -> None:
    """_restore puts the runnable change back exactly as it was before the pass."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        sets = ", ".join(f'"{c}" = ?' for c in snap.task_cols)
        con.executemany(f"UPDATE tasks SET {sets} WHERE id = ?", [(*r, r[0]) for r in snap.task_rows])
        sets = ", ".join(f'"{c}" = ?' for c in snap.change_cols)
        con.execute(f"UPDATE changes SET {sets} WHERE id = ?", (*snap.change_row, snap.cid))
        con.execute("DELETE FROM task_log WHERE id > ?", (snap.log_max,))
        con.executemany("UPDATE sequences SET last_id = ? WHERE name = ?", [(v, k) for k, v in snap.sequences])
        con.execute("COMMIT")
        now = con.execute("SELECT * FROM tasks WHERE change_id = ? ORDER BY id", (snap.cid,)).fetchall()
    finally:
        con.close()
    if now != snap.task_rows:
        raise BenchError("cannot put the runnable tasks back as they were")


def ensure_cost(db: str, runnable: int, reps: int, warmup: int, timeout: float) -> dict[str, Any]:
    """ensure_cost times one TaskRunner.ensure() pass over runnable tasks whose handlers block.

    The pass only claims and starts the tasks: their handlers block until
    the pass is timed; then they are released, their outcomes recorded, and
    the tasks put back to Do with plain SQL, so that every pass sees the same
    database. Two series:

    - warm: one State and TaskRunner for all passes, as in a running daemon
      (worker threads exist; the State drops its cache because another
      connection wrote: every pass reads the database again);
    - fresh: a new State and TaskRunner for every pass (the pass also
      spawns the worker threads and takes the State's first lock).
    """
    from engine import State

    st = State.open(db)
    try:
        with st:
            chg = st.new_change("ensure-bench", f"{runnable} runnable tasks")
            for i in range(runnable):
                chg.add_task(st.new_task("block", f"runnable {i + 1}"))
            cid = int(chg.id)
    finally:
        st.close()
    con = sqlite3.connect(db)
    history = con.execute("SELECT count(*) FROM tasks WHERE change_id <> ?", (cid,)).fetchone()[0]
    con.close()
    snap = _snapshot(db, cid)
    # An idle connection held open keeps the -wal file between passes, as in a
    # running daemon; otherwise every fresh State would create it anew after the
    # checkpoint-on-close of the previous one (a file creation on the timed path).
    keeper = sqlite3.connect(db)
    keeper.execute("SELECT 1 FROM sequences LIMIT 1").fetchall()
    try:
        warm = _passes(db, snap, runnable, reps, warmup, timeout, fresh=False)
        fresh = _passes(db, snap, runnable, reps, warmup, timeout, fresh=True)
    finally:
        keeper.close()
    return {"history": history, "runnable": runnable, "times_s": warm, "fresh_times_s": fresh,
            "rss_mib": peak_rss_mib()}


class _Gate:
    """_Gate lets the blocking handlers in one at a time and holds them until released."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def handler(self, task: Any, tomb: Any) -> None:
        release = self.release
        self.entered.release()
        release.wait(self.timeout)


def _passes(db: str, snap: _Snapshot, runnable: int, reps: int, warmup: int, timeout: float,
            *, fresh: bool) -> list[float]:
    from engine import State, TaskRunner

    def open_runner() -> tuple[Any, Any]:
        st = State.open(db)
        runner = TaskRunner(st)
        runner.add_handler("block", gate.handler)
        return st, runner

    gate = _Gate(timeout)
    times: list[float] = []
    st, runner = open_runner()
    try:
        for rep in range(warmup + reps):
            if fresh and rep:
                st, runner = open_runner()
            gate.release = threading.Event()
            try:
                t0 = time.perf_counter()
                runner.ensure()
                dt = time.perf_counter() - t0
                for i in range(runnable):
                    if not gate.entered.acquire(timeout=timeout):
                        raise BenchError(f"the ensure pass started {i} of the {runnable} runnable tasks")
            finally:
                gate.release.set()
                runner.wait()
            if fresh:
                runner.stop()
                st.close()
            _restore(db, snap)
            if rep >= warmup:
                times.append(dt)
    finally:
        runner.stop()
        st.close()
    return times


# -- dispatch latency ---------------------------------------------------------------


def dispatch(db: str, changes: int, timeout: float, synchronous: str = "FULL") -> dict[str, Any]:
    """dispatch measures, under o.loop(), how long after the commit of a 1-task change its handler starts.

    Changes are committed one at a time, each once the previous one's
    handler started, with no ensure_before: the commit itself wakes the
    loop. Beside it, in the same process, the floor of any dispatch: one
    thread waking another (threading.Event).
    """
    from engine import Overlord

    started = threading.Event()
    when: list[float] = []

    def handler(task: Any, tomb: Any) -> None:
        when.append(time.perf_counter())
        started.set()

    o = Overlord(db, synchronous=synchronous)
    try:
        o.task_runner.add_handler("noop", handler)
        o.loop()
        latencies = []
        for i in range(changes + 10):  # the first 10 warm the threads up
            started.clear()
            with o.state:
                chg = o.state.new_change("bench", f"change {i}")
                chg.add_task(o.state.new_task("noop", "one task"))
            committed = time.perf_counter()
            if not started.wait(timeout):
                raise BenchError(f"dispatch: the handler of change {i + 1} did not start within {timeout:g} s")
            if i >= 10:
                latencies.append(when[-1] - committed)
    finally:
        o.stop()
    return {"latencies_s": latencies, "handoff_s": _handoff(changes)}


def _handoff(n: int) -> list[float]:
    """_handoff measures n wake-ups of a waiting thread by another one."""
    go, back = threading.Event(), threading.Event()
    out: list[float] = []
    stamp = [0.0]

    def waiter() -> None:
        for _ in range(n):
            go.wait()
            go.clear()
            out.append(time.perf_counter() - stamp[0])
            back.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    for _ in range(n):
        back.clear()
        stamp[0] = time.perf_counter()
        go.set()
        back.wait(10)
    t.join(10)
    return out


# -- raw sqlite3 baseline --------------------------------------------------------


def baseline(db: str, rows: int, single: int, batches: int, per_batch: int,
             synchronous: str = "FULL") -> dict[str, Any]:
    """baseline measures plain sqlite3 commits on the same disk with the engine's pragmas."""
    path = Path(db)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BenchError(f"cannot put the baseline database in WAL mode (got {mode})")
        con.execute(f"PRAGMA synchronous = {'NORMAL' if synchronous.upper() == 'NORMAL' else 'FULL'}")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t (id, status) VALUES (?, 'Do')", [(i,) for i in range(1, rows + 1)])
        con.execute("COMMIT")
        sql = "UPDATE t SET status = ?, n = n + 1 WHERE id = ?"
        statuses = ("Doing", "Done")
        t0 = time.perf_counter()
        for i in range(single):
            con.execute("BEGIN IMMEDIATE")
            con.execute(sql, (statuses[i & 1], i % rows + 1))
            con.execute("COMMIT")
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = 0
        for b in range(batches):
            con.execute("BEGIN IMMEDIATE")
            for _ in range(per_batch):
                con.execute(sql, (statuses[b & 1], k % rows + 1))
                k += 1
            con.execute("COMMIT")
        batch_s = time.perf_counter() - t0
        sync = con.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        con.close()
    return {
        "synchronous": sync,
        "commits_per_s": single / single_s,
        "batch_updates_per_s": batches * per_batch / batch_s,
        "batch_commits_per_s": batches / batch_s,
        "rss_mib": peak_rss_mib(),
    }


def timed(db: str, tasks: int, chained: bool, ready_timeout: float, timings: bool,
          traced: bool | str = False, endpoint: str = "") -> dict[str, Any]:
    """timed is W1 (or W2, chained) with the engine's timings kept, or not, or also traced (bench.timings).

    Traced, the time runs until every span is made and exported (the tracer's thread and the SDK's batch
    processor have caught up), so that no part of the tracing's work falls outside it. traced True: the SDK
    with a batch processor to an exporter that drops the spans, as the global provider; "api": the same,
    every run's span through the SDK's start_span and end (the engine's fast path turned off); "otlp": no
    global provider, only the standard variables: the SDK's OTLP exporter (HTTP) to endpoint.
    """
    if not timings:
        from engine.timings import TimingBook

        TimingBook.task_run = lambda *args, **kw: None  # type: ignore[method-assign]
        TimingBook.ensure_pass = lambda *args, **kw: None  # type: ignore[method-assign]
    if not traced:
        return _run_one_change(db, tasks, chained=chained, ready_timeout=ready_timeout)
    import os

    spans = [0]
    provider: Any = None
    if traced == "otlp":
        os.environ.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    else:
        if traced == "api":
            from engine import _otel

            _otel._FastRuns.of = classmethod(lambda cls, tracer: None)  # type: ignore[method-assign,assignment]
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, batch: Any) -> SpanExportResult:
                spans[0] += len(batch)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        os.environ["OTEL_TRACES_EXPORTER"] = "otlp"  # the Overlord traces, through the global provider

    tracer_cpu = [0.0]

    def caught_up(o: Any) -> None:
        tracer = o.state._uow.timings.tracer
        if tracer is None or not tracer.flush(ready_timeout):
            raise BenchError("the tracer is off, or did not catch up")
        tracer_cpu[0] = tracer.cpu_seconds
        if not (provider or tracer._own).force_flush():
            raise BenchError("the spans could not be exported")

    result = _run_one_change(db, tasks, chained=chained, ready_timeout=ready_timeout, after_ready=caught_up)
    if traced != "otlp" and spans[0] < tasks:
        raise BenchError(f"only {spans[0]} spans of {tasks} task runs were exported")
    return {**result, "spans": spans[0], "tracer_cpu_s": tracer_cpu[0]}


from .snaps import WORKLOADS as _SNAPS  # noqa: E402  (the managers' benchmark has a module of its own)

WORKLOADS = {"w1": w1, "w2": w2, "w3": w3, "ensure": ensure_cost, "baseline": baseline, "dispatch": dispatch,
             "timed": timed, **_SNAPS}
