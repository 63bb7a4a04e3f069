# SPDX-License-Identifier: GPL-3.0-or-later
"""huey on SQLite: W1 and W2 through a SqliteHuey and its consumer (thread workers) in this process.

Durability: fsync=True (PRAGMA synchronous=FULL in WAL mode, as the
engine's default; huey's own default, fsync=None, leaves SQLite's, also
FULL): two synced commits per job, its enqueue and its dequeue (2
fdatasyncs per job of W2, counted with strace). A job is deleted from the
queue when it is dequeued, before it runs (at most once; the engine's tasks
are at least once). The consumer polls its queue: initial_delay 0.1 s
(huey's default), backing off; a worker that just ran a task dequeues again
at once, so a chain does not wait for a poll. Its result store is left out
(tasks return nothing); completion is counted in memory.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

NAME = "huey"
BACKEND = "sqlite"
PACKAGE = "huey"
SETTINGS = "SqliteHuey(fsync=True), WAL; consumer with {workers} thread workers, default polling (0.1 s, backing off)"


def run(workload: str, n: int, target: str, workers: int) -> dict[str, Any]:
    """run runs W1 (n independent jobs) or W2 (a chain of n jobs, each enqueuing the next) on target (a file)."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=target, fsync=True, results=False)
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    @huey.task()
    def job() -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                done.set()

    @huey.task()
    def step(i: int) -> None:
        if i + 1 < n:
            step(i + 1)
        else:
            done.set()

    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False)
    c0, t0 = time.process_time(), time.perf_counter()
    if workload == "w1":
        for _ in range(n):
            job()
    else:
        step(0)
    t1 = time.perf_counter()
    consumer.start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"huey: {workload} did not finish in 600 s")
        t2, c2 = time.perf_counter(), time.process_time()
    finally:
        consumer.stop(graceful=True)
    Path(target).unlink(missing_ok=True)
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "tasks_per_s": n / (t2 - t0), "cpu_s": c2 - c0}
