# SPDX-License-Identifier: GPL-3.0-or-later
"""DBOS Transact: W1 and W2 as durable workflows, on SQLite or on PostgreSQL.

Each job is a workflow started with DBOS.start_workflow (its status row is
committed before it runs, and it runs on DBOS's executor, bounded here to
the same number of threads as the engine's workers). W2's workflow starts
the next one (a child workflow) before it returns. Durability: on SQLite,
the engine's: WAL with synchronous=FULL. DBOS sets no journal mode or
synchronous pragma, so left alone it runs in SQLite's rollback journal (about
8 fdatasyncs per job of W2, counted with strace; 2 to 2.5 times slower than
in WAL here): the adapter puts the file in WAL before DBOS opens it (the mode
is kept in the file), synchronous stays SQLite's FULL. PostgreSQL:
synchronous commits, as the server's default.

DBOS's W1 on SQLite runs at about 100 jobs/s here in WAL (32 threads taking
turns at the write lock): W1_MAX caps its size (the driver's --no-caps lifts
it) so that three runs take minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

NAME = "dbos"
BACKEND = "sqlite,postgresql"
PACKAGE = "dbos"
#: The largest W1 per backend (python -m bench.peers --no-caps: none).
W1_MAX = {"sqlite": 1_000}
SETTINGS = "DBOS.start_workflow per job, max_executor_threads={workers}, SQLite in WAL (synchronous=FULL), no admin " \
           "server"


def run(workload: str, n: int, target: str, workers: int) -> dict[str, Any]:
    """run runs W1 or W2 with target the system database URL (sqlite:///FILE or postgresql://...)."""
    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    if target.startswith("sqlite:///"):
        _wal(target.removeprefix("sqlite:///"))
    done = threading.Event()
    count = [0]
    lock = threading.Lock()
    DBOS(config={"name": "bench", "system_database_url": target, "run_admin_server": False,
                 "max_executor_threads": workers, "log_level": "WARNING"})

    @DBOS.workflow()
    def job() -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                done.set()

    @DBOS.workflow()
    def step(i: int) -> None:
        if i + 1 < n:
            DBOS.start_workflow(step, i + 1)
        else:
            done.set()

    DBOS.launch()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        if workload == "w1":
            for _ in range(n):
                DBOS.start_workflow(job)
        else:
            DBOS.start_workflow(step, 0)
        t1 = time.perf_counter()
        if not done.wait(600):
            raise RuntimeError(f"dbos: {workload} did not finish in 600 s")
        t2, c2 = time.perf_counter(), time.process_time()
    finally:
        DBOS.destroy(destroy_registry=True)
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "tasks_per_s": n / (t2 - t0), "cpu_s": c2 - c0}


def _wal(path: str) -> None:
    """_wal puts a new SQLite file in WAL mode (kept in the file), as the engine's and huey's: the same durability."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        conn.close()
    if mode != "wal":
        raise RuntimeError(f"dbos: cannot put {path} in WAL mode (it is in {mode})")
