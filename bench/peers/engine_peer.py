# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine, run by the peers' driver as the peers are: W1, W2 pre-built, and W2 in the peers' shape.

The peers chain by "each job defers the next": a job exists only once the
one before it ran. The engine's own W2 (bench/workloads.py, ``python -m
bench w2``) is a change of 1,000 tasks built up front, each waiting for the
previous one. Here one Overlord runs under ``o.loop()`` on a file (WAL,
``synchronous=FULL``, the default; or NORMAL) or a PostgreSQL URL, with the
same workers as the peers, in one of these shapes:

- ``prebuilt``: W1 (n independent no-op tasks in one change) or W2 (a change
  of n tasks, each waiting for the previous one), submitted in one unit of
  work, as the suite's W1 and W2;
- ``spawn`` (W2): each handler adds the next task to its own change, waiting
  for itself (``nxt.wait_for(task)``), in one ``with task.state:`` block (a
  commit); the runner records the handler's task Done in a second commit,
  which also claims the next task (the hand-on, docs/runner.md): two synced
  commits per job, as huey's enqueue and dequeue;
- ``spawn-done`` (W2): the same, and the handler also sets its own task Done
  in that block (docs/runner.md, "Handlers that finish their own task");
- ``change`` (W2): each handler submits a new one-task change (huey's
  enqueue taken literally); the loop's ensure pass claims it.

The figure is jobs per second from the submission of the first to the end
of the last; ``cpu_s`` is the process's CPU time (every thread) over the
same window.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

NAME = "engine"
BACKEND = "sqlite,postgresql"
PACKAGE = "engine"
SHAPES = ("prebuilt", "spawn", "spawn-done", "change")
SETTINGS = "one Overlord under o.loop(), {workers} worker threads, synchronous=FULL (the default)"


def run(workload: str, n: int, target: str, workers: int, shape: str = "prebuilt",
        synchronous: str = "FULL") -> dict[str, Any]:
    """run runs W1 or W2 in shape (SHAPES) on target: a file, or a PostgreSQL URL."""
    from engine import Overlord, Status

    from ..workloads import noop_change

    if shape not in SHAPES or (shape != "prebuilt" and workload != "w2"):
        raise ValueError(f"cannot run the engine's {workload} in the shape {shape!r}")
    pg = target.startswith("postgresql")
    o = Overlord(url=target, workers=workers) if pg else Overlord(target, synchronous=synchronous, workers=workers)
    done = threading.Event()
    count = [0]

    def noop(task: Any, tomb: Any) -> None:
        return None

    def step(task: Any, tomb: Any) -> None:
        st = task.state
        with st:
            i = task.get("i")
            count[0] += 1
            if i + 1 >= n:
                done.set()
                return
            nxt = st.new_task("step", f"step {i + 2}")
            nxt.set("i", i + 1)
            if shape == "change":
                chg = st.new_change("step", f"step {i + 2}")
            else:
                nxt.wait_for(task)
                chg = task.change()
            chg.add_task(nxt)
            if shape == "spawn-done":
                task.set_status(Status.DONE)

    o.task_runner.add_handler("noop", noop)
    o.task_runner.add_handler("step", step)
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        with o.state:
            if shape == "prebuilt":
                chg = noop_change(o.state, n, chained=workload == "w2")
            else:
                chg = o.state.new_change("step", "step 1")
                first = o.state.new_task("step", "step 1")
                first.set("i", 0)
                chg.add_task(first)
        t1 = time.perf_counter()
        o.loop()
        ok = chg.wait_ready(600) if shape == "prebuilt" else done.wait(600) and chg.wait_ready(60)
        if not ok:
            raise RuntimeError(f"engine: {workload} ({shape}) did not finish in 600 s")
        t2, c2 = time.perf_counter(), time.process_time()
        with o.state:
            status = chg.status
        if status is not Status.DONE:
            raise RuntimeError(f"engine: {workload} ({shape}) ended {status}, not Done")
    finally:
        o.stop()
        o.state.close()
    if not pg:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "tasks_per_s": n / (t2 - t0), "cpu_s": c2 - c0}
