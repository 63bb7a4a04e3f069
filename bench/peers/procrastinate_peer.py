# SPDX-License-Identifier: GPL-3.0-or-later
"""procrastinate on PostgreSQL: W1 and W2 through its worker (asyncio), in this process.

W1 defers n jobs in one batch (batch_defer_async: one statement, as the
engine submits W1 in one unit of work), then runs
a worker with the stated concurrency until the queue is empty (wait=False).
W2 defers the first job of the chain; each job defers the next before it
returns. Durability: PostgreSQL's default (synchronous commits). The worker
learns of new jobs by LISTEN/NOTIFY (procrastinate's default), and also polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

NAME = "procrastinate"
BACKEND = "postgresql"
PACKAGE = "procrastinate"
SETTINGS = "PsycopgConnector, async tasks, W1 deferred in one batch, worker concurrency={workers} (W2: 1, a " \
           "chain has one job at a time), LISTEN/NOTIFY on, wait=False"


def run(workload: str, n: int, target: str, workers: int) -> dict[str, Any]:
    """run runs W1 or W2 with target a libpq connection string."""
    return asyncio.run(_run(workload, n, target, workers))


async def _run(workload: str, n: int, target: str, workers: int) -> dict[str, Any]:
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=target))
    count = [0]

    @app.task(name="job")
    async def job() -> None:
        count[0] += 1

    @app.task(name="step")
    async def step(i: int) -> None:
        count[0] += 1
        if i + 1 < n:
            await step.defer_async(i=i + 1)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        c0, t0 = time.process_time(), time.perf_counter()
        if workload == "w1":
            await job.batch_defer_async(*({} for _ in range(n)))  # one INSERT, as the engine's one unit of work
        else:
            await step.defer_async(i=0)
        t1 = time.perf_counter()
        await app.run_worker_async(concurrency=workers if workload == "w1" else 1, wait=False,
                                   install_signal_handlers=False)
        t2, c2 = time.perf_counter(), time.process_time()
    if count[0] != n:
        raise RuntimeError(f"procrastinate: {workload} ran {count[0]} of {n} jobs")
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "tasks_per_s": n / (t2 - t0), "cpu_s": c2 - c0}
