# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.peers: the peers' W1 and W2 beside the engine's and the raw baselines, interleaved, in one run."""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common import DEFAULT_TMP, ROOT, run_child
from . import ADAPTERS, ENGINE, adapter, installed

RESULT = "PEER-RESULT "


def _child(name: str, workload: str, n: int, target: str, workers: int, shape: str) -> int:
    """_child runs one measurement and prints its figures on one line."""
    try:
        kw = {"shape": shape} if shape else {}
        result = adapter(name).run(workload, n, target, workers, **kw)
    except Exception as e:  # said on the line: the driver prints it and goes on
        result = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    sys.stdout.write(RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # some peers leave threads behind


def _run_peer(name: str, workload: str, n: int, target: str, workers: int, timeout: float,
              shape: str = "") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.peers", "--child", name, workload, str(n), target, "--workers", str(workers)]
    if shape:
        cmd += ["--shape", shape]
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

    def add(self, system: str, backend: str, workload: str, n: int, result: dict[str, Any]) -> None:
        """add records one run (its figures, or its error) and prints it."""
        row = self.rows.setdefault((system, backend), {})
        runs = row.setdefault(f"{workload}_results", [])
        runs.append(result)
        row[f"{workload}_n"] = n
        errors = [r["error"] for r in runs if "error" in r]
        ok = [r for r in runs if "error" not in r]
        rates = [r["tasks_per_s"] for r in ok]
        cpu = [r["cpu_s"] * 1000 / n for r in ok if "cpu_s" in r]
        row[workload] = statistics.median(rates) if rates else None
        row[f"{workload}_runs"] = rates
        row[f"{workload}_cpu_ms"] = statistics.median(cpu) if cpu else None
        if errors:
            row[f"{workload}_error"] = errors[0]
        if "error" in result:
            shown = result["error"]
        else:
            shown = f"{result['tasks_per_s']:,.0f} jobs/s"
            if "cpu_s" in result:
                shown += f", {result['cpu_s'] * 1000 / n:.2f} ms CPU/job"
        print(f"  {system} ({backend}) {workload}, {n:,} jobs: {shown}", flush=True)


@dataclass
class Entry:
    """Entry is one system on one backend: which workloads it runs, and how one run is made."""

    system: str
    backend: str
    workloads: tuple[str, ...]
    run: Callable[[str, int], dict[str, Any]]
    caps: dict[str, int] = field(default_factory=dict)


def _rotated(entries: list[Entry], i: int) -> list[Entry]:
    if not entries:
        return entries
    k = i % len(entries)
    return entries[k:] + entries[:k]


def main(argv: list[str] | None = None) -> int:
    """main runs the engine, the installed peers and the baselines, interleaved, and prints one table."""
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (W1 500, W2 50), one run each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--w1", type=int, help="W1's jobs (10,000; --quick: 500)")
    p.add_argument("--w2", type=int, help="W2's chain length (1,000; --quick: 50)")
    p.add_argument("--commits", type=int, help="the baselines' commits per run (2,000; --quick: 200)")
    p.add_argument("--workers", type=int, default=32, help="worker threads (or concurrency) of every system")
    p.add_argument("--only", default="", help="comma-separated: engine, huey, dbos, procrastinate (default: all)")
    p.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--no-caps", action="store_true", help="run every peer at the full sizes (DBOS's W1 on SQLite "
                                                           "is capped at 1,000 jobs otherwise)")
    p.add_argument("--json", type=Path, help="also save the figures to FILE")
    p.add_argument("--child", nargs=4, metavar=("PEER", "WORKLOAD", "N", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--shape", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        name, workload, n, target = args.child
        return _child(name, workload, int(n), target, args.workers, args.shape)
    runs = 1 if args.quick else args.runs
    sizes = {"w1": args.w1 or (500 if args.quick else 10_000), "w2": args.w2 or (50 if args.quick else 1_000)}
    commits = args.commits or (200 if args.quick else 2_000)
    only = set(filter(None, args.only.split(",")))
    workers = args.workers

    def wanted(system: str) -> bool:
        return not only or system.split("-")[0] in only

    table = Table()
    figures: dict[str, Any] = {"sizes": sizes, "workers": workers, "runs": runs}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="peers-", dir=DEFAULT_TMP))
    peers = [(n, adapter(n)) for n in ADAPTERS]
    missing = [m.PACKAGE for _, m in peers if not installed(m.PACKAGE)]
    if missing:
        print(f"not installed, left out: {', '.join(missing)} (pip install -e '.[bench]')", flush=True)
    cluster = None
    try:
        # SQLite: the engine in its own shape and in the peers', then each peer.
        def file_target(system: str, dbos: bool = False) -> str:
            path = tmp / f"{system}-{time.monotonic_ns()}.db"
            return f"sqlite:///{path}" if dbos else str(path)

        entries = [Entry(system, "sqlite", wls, lambda w, n, s=shape, sy=system: _run_peer(
                       ENGINE, w, n, file_target(sy), workers, 900, s))
                   for system, shape, wls in ENGINE_ROWS]
        for name, mod in peers:
            if "sqlite" in mod.BACKEND and installed(mod.PACKAGE):
                entries.append(Entry(mod.NAME, "sqlite", ("w1", "w2"), lambda w, n, nm=name, sy=mod.NAME: _run_peer(
                    nm, w, n, file_target(sy, sy == "dbos"), workers, 900),
                    {} if args.no_caps else {"w1": getattr(mod, "W1_MAX", {}).get("sqlite", 0)}))
        entries = [e for e in entries if wanted(e.system)]
        base: list[float] = []
        for i in range(0 if args.no_sqlite else runs):
            print(f"round {i + 1}/{runs} (SQLite)", flush=True)
            b = run_child("baseline", {"db": str(tmp / f"base{i}.db"), "rows": 1000, "single": commits,
                                       "batches": 1, "per_batch": 1}, timeout=300)
            base.append(b["commits_per_s"])
            print(f"  baseline sqlite3 (WAL, FULL): single-row UPDATE+COMMIT {base[-1]:,.0f} commits/s", flush=True)
            _round(table, _rotated(entries, i), sizes)
        if base:
            figures["baseline.sqlite"] = statistics.median(base)
            figures["baseline.sqlite_runs"] = base
        if not args.no_postgresql:
            sys.path.insert(0, str(ROOT))
            from bench import pg
            from tests.support import pgcluster

            cluster = pgcluster.start_cluster(durable=True)
            template = cluster.new_database()
            from engine import State

            State.open(url=cluster.url(template)).close()
            c = cluster

            def engine_hosts(w: str, n: int) -> dict[str, Any]:
                db = c.new_database(template=template)
                try:
                    return pg.one_run(c.url(db), n, w == "w2", 1, workers, Path(c.root), 900)
                except Exception as e:
                    return {"error": f"{type(e).__name__}: {e}"}
                finally:
                    c.drop_database(db)

            def fresh(name: str, shape: str = "", tpl: str | None = None) -> Callable[[str, int], dict[str, Any]]:
                def one(w: str, n: int) -> dict[str, Any]:
                    db = c.new_database(template=tpl) if tpl else c.new_database()
                    try:
                        if name == ENGINE:
                            target = c.url(db)
                        elif name == "procrastinate_peer":
                            target = c.dsn(db)
                        else:
                            target = f"postgresql+psycopg://postgres@/{db}?host={c.socket_dir}"
                        return _run_peer(name, w, n, target, workers, 900, shape)
                    finally:
                        c.drop_database(db)
                return one

            pg_entries = [Entry("engine", "postgresql", ("w1", "w2"), engine_hosts),
                          Entry("engine-spawn", "postgresql", ("w2",), fresh(ENGINE, "spawn", template)),
                          Entry("engine-spawn-done", "postgresql", ("w2",), fresh(ENGINE, "spawn-done", template))]
            for name, mod in peers:
                if "postgresql" in mod.BACKEND and installed(mod.PACKAGE):
                    pg_entries.append(Entry(mod.NAME, "postgresql", ("w1", "w2"), fresh(name)))
            pg_entries = [e for e in pg_entries if wanted(e.system)]
            pbase: list[float] = []
            for i in range(runs):
                print(f"round {i + 1}/{runs} (PostgreSQL)", flush=True)
                pbase.append(pg.baseline(cluster.dsn(template), commits))
                print(f"  baseline psycopg: single-row UPDATE+COMMIT {pbase[-1]:,.0f} commits/s", flush=True)
                _round(table, _rotated(pg_entries, i), sizes)
            figures["baseline.postgresql"] = statistics.median(pbase)
            figures["baseline.postgresql_runs"] = pbase
    finally:
        if cluster is not None:
            pgcluster.remove_cluster(cluster)
        shutil.rmtree(tmp, ignore_errors=True)
    figures["ahead"] = _ahead(table)
    _print(table, figures, sizes, workers)
    figures["rows"] = {f"{s}.{b}": row for (s, b), row in table.rows.items()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


#: The engine's rows: (system, shape, workloads) (bench/peers/engine_peer.py).
ENGINE_ROWS = (
    ("engine", "prebuilt", ("w1", "w2")),
    ("engine-spawn", "spawn", ("w2",)),
    ("engine-spawn-done", "spawn-done", ("w2",)),
    ("engine-change", "change", ("w2",)),
)


def _round(table: Table, entries: list[Entry], sizes: dict[str, int]) -> None:
    """_round runs every entry once on each of its workloads, in the given order."""
    for workload in ("w1", "w2"):
        for e in entries:
            if workload in e.workloads:
                n = sizes[workload]
                cap = e.caps.get(workload)
                if cap:
                    n = min(n, cap)
                table.add(e.system, e.backend, workload, n, e.run(workload, n))


def _ahead(table: Table) -> dict[str, dict[str, list[int]]]:
    """_ahead counts, for each engine row and peer on one backend and workload, the rounds the engine was faster.

    Keyed "backend.workload.engine-row", then by peer: [rounds ahead, rounds
    both ran] (a round where either failed is not counted).
    """
    engines = {s for s, _, _ in ENGINE_ROWS}
    out: dict[str, dict[str, list[int]]] = {}
    for (system, backend), row in table.rows.items():
        if system not in engines:
            continue
        for w in ("w1", "w2"):
            mine = row.get(f"{w}_results", [])
            for (peer, b), other in table.rows.items():
                theirs = other.get(f"{w}_results", [])
                if b != backend or peer in engines or not mine or not theirs:
                    continue
                pairs = [(m["tasks_per_s"], t["tasks_per_s"]) for m, t in zip(mine, theirs, strict=False)
                         if "error" not in m and "error" not in t]
                out.setdefault(f"{backend}.{w}.{system}", {})[peer] = [sum(m > t for m, t in pairs), len(pairs)]
    return out


def _print(table: Table, figures: dict[str, Any], sizes: dict[str, int], workers: int) -> None:
    print()
    print(f"W1: {sizes['w1']:,} independent jobs; W2: a chain of {sizes['w2']:,}; {workers} workers; "
          "medians: jobs/s (submit + run), / the raw single-row commit rate of the same backend, "
          "CPU ms per job (the process, every thread)")
    print(f"{'system':<19}{'backend':<12}{'W1 jobs/s':>11}{'W1/base':>9}{'W1 CPU':>8}"
          f"{'W2 jobs/s':>11}{'W2/base':>9}{'W2 CPU':>8}")
    notes = []
    engine_first = [s for s, _, _ in ENGINE_ROWS]

    def order(key: tuple[str, str]) -> tuple[int, int, int]:
        system, backend = key
        rank = engine_first.index(system) if system in engine_first else len(engine_first)
        return (backend != "sqlite", rank, list(table.rows).index(key))

    for system, backend in sorted(table.rows, key=order):
        row = table.rows[(system, backend)]
        base = figures.get(f"baseline.{backend}")
        cells = []
        for w in ("w1", "w2"):
            v = row.get(w)
            cpu = row.get(f"{w}_cpu_ms")
            cells.append(f"{v:>11,.0f}" if v else f"{'-':>11}")
            cells.append(f"{v / base:>8.2f}x" if v and base else f"{'-':>9}")
            cells.append(f"{cpu:>8.2f}" if cpu else f"{'-':>8}")
            if row.get(f"{w}_n") not in (None, sizes[w]):
                notes.append(f"{system} ({backend}) {w.upper()}: {row[f'{w}_n']:,} jobs")
            if row.get(f"{w}_error"):
                notes.append(f"{system} ({backend}) {w.upper()}: {row[f'{w}_error']}")
        print(f"{system:<19}{backend:<12}{''.join(cells)}")
    for backend in ("sqlite", "postgresql"):
        if f"baseline.{backend}" in figures:
            runs = ", ".join(f"{x:,.0f}" for x in figures[f"baseline.{backend}_runs"])
            print(f"baseline {backend}: {figures[f'baseline.{backend}']:,.0f} single-row commits/s ({runs})")
    for key, peers in figures.get("ahead", {}).items():
        backend, w, system = key.split(".")
        said = ", ".join(f"{peer} in {k} of {n}" for peer, (k, n) in peers.items())
        print(f"rounds ahead, {backend} {w.upper()}: {system} ahead of {said}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
