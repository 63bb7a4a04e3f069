# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.timings: what keeping timings (engine.timings) costs W1 and W2, A/B in one run.

Each round runs W1 (one change of 10,000 independent no-op tasks) and W2 (a
chain of 1,000) in each mode, each run in a fresh process on a fresh
database file: "timings" as the engine is (every handler run kept as a row,
written with its outcome), "without" with the timings' two hooks made
no-ops, and, where the OpenTelemetry SDK is installed, "traced": timings
and a span per run and per change, through the SDK's BatchSpanProcessor to
an exporter that drops them. Which mode goes first turns from round to
round; the table gives the medians, and the median of the rounds' ratios to
"without" (the runs of a round ran back to back, so the drift of the disk's
commit latency over minutes cancels out).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from .common import DEFAULT_TMP, run_child

TIMEOUT = 600.0


MODES = ("timings", "without", "traced")


def _one(tmp: Path, name: str, tasks: int, chained: bool, mode: str) -> float:
    db = tmp / f"{name}-{mode}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    result = run_child("timed", {"db": str(db), "tasks": tasks, "chained": chained, "ready_timeout": TIMEOUT,
                                 "timings": mode != "without", "traced": mode == "traced"}, timeout=TIMEOUT)
    return float(result["tasks_per_s"])


def _have_sdk() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """main runs the rounds and prints the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.timings", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke run")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    workloads = [("W1 fan-out", 10_000 // scale, False), ("W2 chain", 1_000 // scale, True)]
    modes = MODES if _have_sdk() else MODES[:2]
    figures: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="timings-", dir=DEFAULT_TMP))
    try:
        for r in range(args.runs):
            for name, tasks, chained in workloads:
                order = modes[r % len(modes):] + modes[:r % len(modes)]  # each mode goes first in turn
                got = {mode: _one(tmp, name.split()[0], tasks, chained, mode) for mode in order}
                for mode, value in got.items():
                    figures.setdefault((name, mode), []).append(value)
                    ratios.setdefault((name, mode), []).append(value / got["without"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tasks/s (submit + run), median of {args.runs} rounds; ratio: to 'without', median of the rounds' ratios")
    print(f"{'':28}" + "".join(f"{m:>12}" for m in modes) + "".join(f"{'ratio ' + m:>16}" for m in modes if
                                                                     m != "without"))
    for name, tasks, _ in workloads:
        line = f"{f'{name} ({tasks:,})':28}" + "".join(f"{statistics.median(figures[(name, m)]):12,.0f}"
                                                       for m in modes)
        line += "".join(f"{statistics.median(ratios[(name, m)]):16.3f}" for m in modes if m != "without")
        print(line)
    print("target: ratio >= 0.95 (timings, and tracing when enabled, cost W1 and W2 no more than 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
