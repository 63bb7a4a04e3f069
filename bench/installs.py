# SPDX-License-Identifier: GPL-3.0-or-later
"""A snap-install-shaped workload: changes of 12 tasks in 4 lanes, on SQLite and on PostgreSQL.

    python -m bench.installs                 # 1,000 changes; SQLite, then PostgreSQL with 1 and 2 processes
    python -m bench.installs --quick         # 50 changes, one run each

Each change is what installing 4 snaps at once looks like to the engine:
4 lanes, each a chain of 3 tasks (fetch, mount, link: no-op handlers),
so a change ends when its 4 chains have run. All the changes are submitted
first, in one unit of work, and then run; the figure is changes per second
from the go to the ready time of the last change (the submission apart).
SQLite: one Overlord on a file (the engine's default durability: WAL,
synchronous=FULL), 32 workers. PostgreSQL: 1 and 2 runner processes on a
throwaway server with its default durability (bench/pg.py's runners).
Nothing is asserted; docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import DEFAULT_TMP, ROOT

LANES = 4
STEPS = ("fetch", "mount", "link")


def add_installs(st: Any, changes: int) -> list[str]:
    """add_installs adds to st (locked) changes of 4 lanes of 3 chained no-op tasks; it returns their ids."""
    ids = []
    for c in range(changes):
        chg = st.new_change("install", f"install 4 snaps ({c + 1})")
        for _ in range(LANES):
            lane = st.new_lane()
            prev = None
            for kind in STEPS:
                t = st.new_task(kind, f"{kind} a snap")
                t.join_lane(lane)
                if prev is not None:
                    t.wait_for(prev)
                chg.add_task(t)
                prev = t
        ids.append(chg.id)
    return ids


def register(runner: Any) -> None:
    """register adds the no-op handlers of the workload's task kinds to a TaskRunner."""
    for kind in STEPS:
        runner.add_handler(kind, lambda task, tomb: None)


def run_sqlite(db: Path, changes: int, workers: int) -> dict[str, float]:
    """run_sqlite runs the workload through one Overlord on a database file."""
    from engine import Overlord, Status

    o = Overlord(str(db), workers=workers)
    try:
        register(o.task_runner)
        t0 = time.perf_counter()
        with o.state:
            ids = add_installs(o.state, changes)
        t1 = time.perf_counter()
        o.loop()
        with o.state:
            chgs = [o.state.change(cid) for cid in ids]
        for chg in chgs:
            if not chg.wait_ready(600):
                raise RuntimeError(f"change {chg.id} was not ready after 600 s")
        t2 = time.perf_counter()
        with o.state:
            bad = [chg.id for chg in chgs if chg.status is not Status.DONE]
        if bad:
            raise RuntimeError(f"changes {bad[:5]} did not end Done")
    finally:
        o.stop()
        o.state.close()
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "changes_per_s": changes / (t2 - t1)}


def _submit_pg(url: str, changes: int) -> tuple[list[str], float]:
    from engine import State

    st = State.open(url=url)
    try:
        t0 = time.perf_counter()
        with st:
            ids = add_installs(st, changes)
        return ids, time.perf_counter() - t0
    finally:
        st.close()


def main(argv: list[str] | None = None) -> int:
    """main runs the workload on SQLite and PostgreSQL and prints changes per second."""
    p = argparse.ArgumentParser(prog="python -m bench.installs", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="50 changes, one run each")
    p.add_argument("--changes", type=int, help="how many changes (1,000; --quick: 50)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--procs", default="1,2", help="PostgreSQL runner process counts")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--no-postgresql", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--cpu", action="store_true",
                   help="print each PostgreSQL run's CPU seconds per process (bench.pg --cpu)")
    p.add_argument("--json", type=Path, help="also save the figures to FILE")
    args = p.parse_args(argv)
    runs = 1 if args.quick else args.runs
    changes = args.changes or (50 if args.quick else 1000)
    figures: dict[str, Any] = {"changes": changes, "tasks_per_change": LANES * len(STEPS)}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="installs-", dir=DEFAULT_TMP))
    try:
        if not args.no_sqlite:
            out = [run_sqlite(tmp / f"installs-{i}.db", changes, args.workers) for i in range(runs)]
            _report(figures, "sqlite", out, changes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_postgresql:
        sys.path.insert(0, str(ROOT))
        from engine import State
        from tests.support import pgcluster

        from .pg import describe_run, one_run

        cluster = pgcluster.start_cluster(durable=True)
        try:
            template = cluster.new_database()
            State.open(url=cluster.url(template)).close()
            for n in (int(x) for x in args.procs.split(",")):
                out = []
                for _ in range(runs):
                    db = cluster.new_database(template=template)
                    r = one_run(cluster.url(db), changes * LANES * len(STEPS), False, n, args.workers,
                                Path(cluster.root), 900, submit=lambda url: _submit_pg(url, changes), kinds=STEPS)
                    cluster.drop_database(db)
                    out.append({**r, "changes_per_s": changes / r["run_s"]})
                    if args.cpu:
                        print(f"  {n} process{'es' if n > 1 else ''}: {changes / r['run_s']:,.1f} changes/s; "
                              f"{describe_run(r['cpu'])}", flush=True)
                _report(figures, f"postgresql.procs{n}", out, changes)
            one = figures.get("postgresql.procs1.changes_per_s")
            two = figures.get("postgresql.procs2.changes_per_s")
            if one and two:
                figures["postgresql.procs2.vs_one"] = two / one
                print(f"postgresql: 2 processes / 1 process: {two / one:.2f}x")
        finally:
            pgcluster.remove_cluster(cluster)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _report(figures: dict[str, Any], key: str, out: list[dict[str, Any]], changes: int) -> None:
    rates = [r["changes_per_s"] for r in out]
    figures[f"{key}.changes_per_s"] = statistics.median(rates)
    figures[f"{key}.submit_s"] = statistics.median(r["submit_s"] for r in out)
    print(f"{key}: {changes:,} changes of {LANES * len(STEPS)} tasks in {LANES} lanes: "
          f"{figures[f'{key}.changes_per_s']:,.1f} changes/s ({', '.join(f'{x:,.1f}' for x in rates)}); "
          f"submit {figures[f'{key}.submit_s']:.2f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
