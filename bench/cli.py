# SPDX-License-Identifier: GPL-3.0-or-later
"""The command line of python -m bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEFAULT_CACHE, DEFAULT_TMP, BenchError, Config, Sizes
from .suite import BENCHMARKS, Suite

DESCRIPTION = """\
Benchmarks of issue 5, on real database files with the engine's default
durability (WAL, synchronous=FULL):

  baseline  raw sqlite3: single-row UPDATE+COMMIT/s, and row updates/s at 100 per transaction
  w1        fan-out: one change of 10,000 independent no-op tasks, submitted at once, run by o.loop()
  w2        chain: one change of 1,000 tasks, each waiting for the previous one
  w3        history: open a database of 100,000 finished tasks and run one 10-task chain; the same empty
  ensure    one TaskRunner.ensure() pass over 10 runnable tasks beside 0 / 10k / 100k / 1M finished ones
  dispatch  under o.loop(), the commit of a one-task change to its handler starting (p50, p99)
  snaps     install then refresh 100 small snaps (SystemOverlord): in one change, and one change each;
            beside the same file work done by the snap backend alone

Each figure is the median of --runs runs, each in a fresh process. The table
shows the targets beside the figures: W1 >= 2x and W2 >= 0.5x the
baseline's single-row commits/s, dispatch p99 <= 2 ms (issue 25). The
baseline runs whenever w1 or w2 does (their targets compare with it).
--synchronous NORMAL runs baseline, w1, w2 and dispatch with SQLite's
NORMAL durability instead (opt-in; the engine's default is FULL). History databases are built once and
cached in --cache-dir.
"""


def parse(argv: list[str]) -> argparse.Namespace:
    """parse reads the command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", metavar="BENCH", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 run each, sizes scaled by 0.1")
    p.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    p.add_argument("--scale", type=float, help="multiply the workload sizes (default 1; 0.1 with --quick)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also save every figure and run to FILE")
    p.add_argument("--tmp-dir", type=Path, default=DEFAULT_TMP,
                   help=f"where the databases are written (default {DEFAULT_TMP}; same disk as the checkout)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help=f"where history databases are cached (default {DEFAULT_CACHE})")
    p.add_argument("--keep", action="store_true", help="keep the run's databases under --tmp-dir")
    p.add_argument("--strict", action="store_true", help="exit with status 3 when a target is missed")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="instead of measuring, run w1/w2 once under py-spy (all threads) and print the hot spots; "
                        "raw stacks are saved in DIR")
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL",
                   help="SQLite durability of baseline, w1, w2 and dispatch (default FULL, the engine's; NORMAL "
                        "may lose the last commits on power loss: an opt-in figure)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    if args.scale is not None and args.scale <= 0:
        p.error("--scale must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """main runs the benchmarks and prints the table; 1 if a benchmark failed."""
    args = parse(sys.argv[1:] if argv is None else argv)
    runs = args.runs or (1 if args.quick else 3)
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    cfg = Config(runs=runs, sizes=Sizes().scaled(scale), tmp_dir=args.tmp_dir.resolve(),
                 cache_dir=args.cache_dir.resolve(), verbose=not args.quiet, keep=args.keep,
                 synchronous=args.synchronous)
    selected = list(args.benchmarks) or list(BENCHMARKS)
    if args.profile is not None:
        from .profile import profile

        try:
            print(profile(cfg, selected if args.benchmarks else ["w1", "w2"], args.profile.resolve()))
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if ("w1" in selected or "w2" in selected) and "baseline" not in selected:
        selected.append("baseline")
    from .report import machine_info, render, write_json

    machine = machine_info(cfg)
    suite = Suite(cfg, selected)
    suite.run()
    render(suite, machine)
    if args.json is not None:
        write_json(args.json, suite, machine)
        print(f"figures saved to {args.json}")
    if suite.errors:
        return 1
    if args.strict and any(f.ok is False for f in suite.figures.values()):
        return 3
    return 0
