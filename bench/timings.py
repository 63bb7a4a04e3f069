# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.timings: what keeping timings (engine.timings) costs W1 and W2, A/B in one run.

Each round runs W1 (one change of 10,000 independent no-op tasks) and W2 (a
chain of 1,000) twice, each in a fresh process on a fresh database file:
once as the engine is (every handler run kept as a row, written with its
outcome) and once with the timings' two hooks made no-ops. The order of the
two alternates from round to round; the table gives the medians, and the
median of the rounds' ratios (each pair ran back to back, so the drift of
the disk's commit latency over minutes cancels out).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from .common import DEFAULT_TMP, run_child

TIMEOUT = 600.0


def _one(tmp: Path, name: str, tasks: int, chained: bool, timings: bool) -> float:
    db = tmp / f"{name}-{'on' if timings else 'off'}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    result = run_child("timed", {"db": str(db), "tasks": tasks, "chained": chained, "ready_timeout": TIMEOUT,
                                 "timings": timings}, timeout=TIMEOUT)
    return float(result["tasks_per_s"])


def main(argv: list[str] | None = None) -> int:
    """main runs the rounds and prints the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.timings", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke run")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    workloads = [("W1 fan-out", 10_000 // scale, False), ("W2 chain", 1_000 // scale, True)]
    figures: dict[tuple[str, bool], list[float]] = {}
    ratios: dict[str, list[float]] = {}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="timings-", dir=DEFAULT_TMP))
    try:
        for r in range(args.runs):
            for name, tasks, chained in workloads:
                order = (True, False) if r % 2 == 0 else (False, True)
                got = {mode: _one(tmp, name.split()[0], tasks, chained, mode) for mode in order}
                for mode, value in got.items():
                    figures.setdefault((name, mode), []).append(value)
                ratios.setdefault(name, []).append(got[True] / got[False])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'tasks/s (submit + run), median of ' + str(args.runs):40} {'timings':>10} {'without':>10} "
          f"{'ratio':>7} {'paired':>7}  target")
    for name, tasks, _ in workloads:
        on, off = statistics.median(figures[(name, True)]), statistics.median(figures[(name, False)])
        paired = statistics.median(ratios[name])
        print(f"{f'{name} ({tasks:,} tasks)':40} {on:10,.0f} {off:10,.0f} {on / off:7.3f} {paired:7.3f}  >= 0.95")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
