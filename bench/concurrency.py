# SPDX-License-Identifier: GPL-3.0-or-later
"""W1 with a concurrency key of limit 8 on 2 PostgreSQL runner hosts, beside W1 without (docs/runner.md).

    python -m bench.concurrency            # a throwaway server (tests/support/pgcluster.py)
    python -m bench.concurrency --quick    # a smoke run (small sizes, one run each)

Each run: the parent submits W1 (independent no-op tasks in one change) in one unit of work,
starts 2 runner processes (Overlords, each with 32 workers; with --limit the kind "noop" gets
runner.set_concurrency("noop", "k", limit)), gives the go, and takes the time from the go to the
change's ready time. What the key costs: the claim locks the key, counts its live slots and
records each start (a row of concurrency_slots). Figures are the median of the runs; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .pg import run_on_hosts, serve
from .workloads import noop_change

ROOT = Path(__file__).resolve().parent.parent


def _child(url: str, go: Path, workers: int, limit: int) -> int:
    """_child is one runner host: an Overlord on url that starts looping at the go, until SIGTERM."""
    from engine import Overlord

    o = Overlord(url=url, workers=workers)
    o.task_runner.add_handler("noop", lambda task, tomb: None)
    if limit:
        o.task_runner.set_concurrency("noop", "k", limit)
    return serve(o, go)


def one_run(url: str, tasks: int, procs: int, workers: int, limit: int, tmp: Path, timeout: float) -> float:
    """one_run submits W1 and runs it with procs runner hosts; it returns tasks per second."""
    from engine import State

    st = State.open(url=url)
    try:
        with st:
            cid = int(noop_change(st, tasks, chained=False).id)
    finally:
        st.close()
    run_s = run_on_hosts("bench.concurrency", url, [cid], tasks, procs, workers, tmp, timeout,
                         ["--limit", str(limit)])
    return tasks / run_s


def main(argv: list[str] | None = None) -> int:
    """main runs W1 with and without a concurrency key on 2 hosts and prints the figures."""
    p = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one run each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--json", type=Path, help="also save the figures to FILE")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child, args.go, args.workers, args.limit)
    runs = 1 if args.quick else args.runs
    tasks = 500 if args.quick else args.tasks
    sys.path.insert(0, str(ROOT))
    from tests.support import pgcluster

    cluster = pgcluster.start_cluster(durable=True)
    tmp = Path(cluster.root)
    figures: dict[str, Any] = {}
    try:
        template = cluster.new_database()
        from engine import State

        State.open(url=cluster.url(template)).close()
        for name, limit in (("w1", 0), ("w1.limit8", 8)):
            rates = []
            for _ in range(runs):
                db = cluster.new_database(template=template)
                rates.append(one_run(cluster.url(db), tasks, args.procs, args.workers, limit, tmp, 600))
                cluster.drop_database(db)
            figures[f"{name}.procs{args.procs}.tasks_per_s"] = statistics.median(rates)
            what = f"a concurrency key of limit {limit}" if limit else "no concurrency key"
            print(f"W1 ({tasks:,} no-op tasks), {args.procs} runner hosts, {what}: "
                  f"{statistics.median(rates):,.0f} tasks/s ({', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
        without = figures[f"w1.procs{args.procs}.tasks_per_s"]
        with_key = figures[f"w1.limit8.procs{args.procs}.tasks_per_s"]
        figures["limit8.vs_without"] = with_key / without
        print(f"with the key / without: {with_key / without:.2f}x")
    finally:
        pgcluster.remove_cluster(cluster)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
