# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.peers: the peers' W1 and W2 beside the engine's and the raw baselines, in one run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..common import DEFAULT_TMP, ROOT, run_child
from . import ADAPTERS, adapter, installed

RESULT = "PEER-RESULT "


def _child(name: str, workload: str, n: int, target: str, workers: int) -> int:
    """_child runs one peer measurement and prints its figures on one line."""
    try:
        result = adapter(name).run(workload, n, target, workers)
    except Exception as e:  # said on the line: the driver prints it and goes on
        result = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    sys.stdout.write(RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # some peers leave threads behind


def _run_peer(name: str, workload: str, n: int, target: str, workers: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.peers", "--child", name, workload, str(n), target, "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            out: dict[str, Any] = json.loads(line[len(RESULT):])
            return out
    tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {"error": f"exited with {proc.returncode}: {tail[:300]}"}


class Table:
    """Table collects the runs of each (system, backend, workload) and prints their medians."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, system: str, backend: str, workload: str, runs: list[dict[str, Any]]) -> None:
        row = self.rows.setdefault((system, backend), {})
        errors = [r["error"] for r in runs if "error" in r]
        rates = [r["tasks_per_s"] for r in runs if "error" not in r]
        row[workload] = statistics.median(rates) if rates else None
        row[f"{workload}_runs"] = rates
        if errors:
            row[f"{workload}_error"] = errors[0]
        shown = f"{row[workload]:,.0f} jobs/s ({', '.join(f'{x:,.0f}' for x in rates)})" if rates else errors[0]
        print(f"{system} ({backend}) {workload}: {shown}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """main runs the engine, the installed peers and the baselines, and prints one table."""
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (W1 500, W2 50), one run each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--w1", type=int, help="W1's jobs (10,000; --quick: 500)")
    p.add_argument("--w2", type=int, help="W2's chain length (1,000; --quick: 50)")
    p.add_argument("--commits", type=int, help="the baselines' commits per run (2,000; --quick: 200)")
    p.add_argument("--workers", type=int, default=32, help="worker threads (or concurrency) of every system")
    p.add_argument("--only", default="", help="comma-separated: engine, huey, dbos, procrastinate (default: all)")
    p.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    p.add_argument("--json", type=Path, help="also save the figures to FILE")
    p.add_argument("--child", nargs=4, metavar=("PEER", "WORKLOAD", "N", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        name, workload, n, target = args.child
        return _child(name, workload, int(n), target, args.workers)
    runs = 1 if args.quick else args.runs
    sizes = {"w1": args.w1 or (500 if args.quick else 10_000), "w2": args.w2 or (50 if args.quick else 1_000)}
    commits = args.commits or (200 if args.quick else 2_000)
    only = set(filter(None, args.only.split(",")))

    def wanted(system: str) -> bool:
        return not only or system in only

    table = Table()
    figures: dict[str, Any] = {"sizes": sizes, "workers": args.workers, "runs": runs}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="peers-", dir=DEFAULT_TMP))
    cluster = None
    try:
        # The baselines: one synced single-row commit, raw.
        base = [run_child("baseline", {"db": str(tmp / f"base{i}.db"), "rows": 1000, "single": commits,
                                       "batches": 1, "per_batch": 1}, timeout=300) for i in range(runs)]
        figures["baseline.sqlite"] = statistics.median(b["commits_per_s"] for b in base)
        print(f"baseline sqlite3 (WAL, FULL): single-row UPDATE+COMMIT {figures['baseline.sqlite']:,.0f} commits/s",
              flush=True)
        peers = [(n, adapter(n)) for n in ADAPTERS]
        missing = [m.PACKAGE for _, m in peers if not installed(m.PACKAGE)]
        if missing:
            print(f"not installed, left out: {', '.join(missing)} (pip install -e '.[bench]')", flush=True)
        for workload in ("w1", "w2"):
            n = sizes[workload]
            if wanted("engine"):
                table.add("engine", "sqlite", workload, [_engine_sqlite(workload, n, tmp, i) for i in range(runs)])
            for name, mod in peers:
                if "sqlite" in mod.BACKEND and installed(mod.PACKAGE) and wanted(mod.NAME):
                    table.add(mod.NAME, "sqlite", workload, [
                        _run_peer(name, workload, n, _sqlite_target(mod.NAME, tmp, i), args.workers, 900)
                        for i in range(runs)])
        if not args.no_postgresql:
            sys.path.insert(0, str(ROOT))
            from bench import pg
            from tests.support import pgcluster

            cluster = pgcluster.start_cluster(durable=True)
            template = cluster.new_database()
            from engine import State

            State.open(url=cluster.url(template)).close()
            figures["baseline.postgresql"] = statistics.median(pg.baseline(cluster.dsn(template), commits)
                                                               for _ in range(runs))
            print(f"baseline psycopg: single-row UPDATE+COMMIT {figures['baseline.postgresql']:,.0f} commits/s",
                  flush=True)
            for workload in ("w1", "w2"):
                n = sizes[workload]
                if wanted("engine"):
                    out = []
                    for _ in range(runs):
                        db = cluster.new_database(template=template)
                        out.append(pg.one_run(cluster.url(db), n, workload == "w2", 1, args.workers,
                                              Path(cluster.root), 900))
                        cluster.drop_database(db)
                    table.add("engine", "postgresql", workload, out)
                for name, mod in peers:
                    if "postgresql" in mod.BACKEND and installed(mod.PACKAGE) and wanted(mod.NAME):
                        out = []
                        for _ in range(runs):
                            db = cluster.new_database()
                            target = (cluster.dsn(db) if mod.NAME == "procrastinate"
                                      else f"postgresql+psycopg://postgres@/{db}?host={cluster.socket_dir}")
                            out.append(_run_peer(name, workload, n, target, args.workers, 900))
                            cluster.drop_database(db)
                        table.add(mod.NAME, "postgresql", workload, out)
    finally:
        if cluster is not None:
            pgcluster.remove_cluster(cluster)
        shutil.rmtree(tmp, ignore_errors=True)
    _print(table, figures, sizes, args.workers)
    figures["rows"] = {f"{s}.{b}": row for (s, b), row in table.rows.items()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _sqlite_target(peer: str, tmp: Path, i: int) -> str:
    path = tmp / f"{peer}-{i}-{time.monotonic_ns()}.db"
    return f"sqlite:///{path}" if peer == "dbos" else str(path)


def _engine_sqlite(workload: str, n: int, tmp: Path, i: int) -> dict[str, Any]:
    db = tmp / f"engine-{workload}-{i}.db"
    try:
        return run_child(workload, {"db": str(db), "tasks": n, "ready_timeout": 600}, timeout=900)
    except Exception as e:
        return {"error": str(e)}
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


def _print(table: Table, figures: dict[str, Any], sizes: dict[str, int], workers: int) -> None:
    print()
    print(f"W1: {sizes['w1']:,} independent jobs; W2: a chain of {sizes['w2']:,}; {workers} workers; "
          "jobs/s (submit + run), and / the raw single-row commit rate of the same backend")
    print(f"{'system':<15}{'backend':<12}{'W1 jobs/s':>11}{'W1/base':>9}{'W2 jobs/s':>11}{'W2/base':>9}")
    for (system, backend), row in table.rows.items():
        base = figures.get(f"baseline.{backend}")
        cells = []
        for w in ("w1", "w2"):
            v = row.get(w)
            cells.append(f"{v:>11,.0f}" if v else f"{'-':>11}")
            cells.append(f"{v / base:>8.2f}x" if v and base else f"{'-':>9}")
        print(f"{system:<15}{backend:<12}{''.join(cells)}")
    for backend in ("sqlite", "postgresql"):
        if f"baseline.{backend}" in figures:
            print(f"baseline {backend}: {figures[f'baseline.{backend}']:,.0f} single-row commits/s")


if __name__ == "__main__":
    sys.exit(main())
