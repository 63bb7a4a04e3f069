# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.keys: what an idempotency key and affected keys cost new_change, beside a plain one.

Each measured request is one unit of work (``with st:``) that makes a
change of one task and commits, on a SQLite file with the engine's default
durability (and on PostgreSQL with --url). The rows:

- plain: ``st.new_change(kind, summary)``, the baseline;
- keyed: ``new_change(..., key=K)`` with a new key (one more statement, the
  claim of the key, in the transaction);
- keyed again: the same key sent again (the retried request): the change is
  found, nothing is written;
- affects: ``new_change(..., affects=["snap:N"])`` with nothing unready on
  that key (the conflict query and one more row);
- affecting: ``st.affecting(["snap:N"])`` alone, with every earlier change
  still in the index (the question the snap manager asks before each verb).

Figures, never pass/fail; medians over --runs requests after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _measure(runs: int, fn: Callable[[int], Any]) -> float:
    for i in range(min(20, runs)):  # warm-up: statements compiled, caches filled
        fn(-1 - i)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def run(st: Any, runs: int) -> dict[str, float]:
    """run measures each row on one State and returns the median microseconds per request."""
    def plain(i: int) -> None:
        with st:
            st.new_change("install", "plain").add_task(st.new_task("k", "t"))

    def keyed(i: int) -> None:
        with st:
            chg = st.new_change("install", "keyed", key=f"req-{i}")
            if chg.is_new:
                chg.add_task(st.new_task("k", "t"))

    def affects(i: int) -> None:
        with st:
            st.new_change("install", "affects", affects=[f"snap:s{i}"]).add_task(st.new_task("k", "t"))

    def affecting(i: int) -> None:
        with st:
            st.affecting([f"snap:s{i}"])

    return {
        "plain new_change (baseline)": _measure(runs, plain),
        "new_change(key=...), a new key": _measure(runs, keyed),
        "new_change(key=...), the key again": _measure(runs, keyed),
        "new_change(affects=[...])": _measure(runs, affects),
        "affecting([...]) alone": _measure(runs, affecting),
    }


def main(argv: list[str] | None = None) -> int:
    """main runs the measurements and prints the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="requests per row (default 300)")
    parser.add_argument("--url", help="also measure on this PostgreSQL database (it is written to)")
    args = parser.parse_args(argv)
    from engine import State

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        st = State.open(Path(tmp) / "keys.db")
        try:
            results["SQLite"] = run(st, args.runs)
        finally:
            st.close()
    if args.url:
        st = State.open(url=args.url)
        try:
            results["PostgreSQL"] = run(st, args.runs)
        finally:
            st.close()
    names = list(next(iter(results.values())))
    print(f"{'one request (a unit of work), median':40}" + "".join(f"{b:>22}" for b in results))
    for name in names:
        cells = []
        for b in results:
            us, base = results[b][name], results[b][names[0]]
            cells.append(f"{us:9.0f} us ({us / base:4.2f}x)")
        print(f"{name:40}" + "".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
