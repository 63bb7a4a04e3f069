# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.change_data: what a change's data costs the commits that touch the change.

A change holds its data (chg.set/get) in one JSON column. For each size of
that data (10 keys, the baseline, and 1,000,000 keys by default) it builds a
file database holding one change with that many keys and one Do task, then
times, in the same process and run:

- load: the first read of the change after opening (chg.get of one key);
- set: a commit that sets one key of the change's data;
- status: a commit that touches the change without touching its data (its
  task moves Do -> Doing -> Do, as a claim and a retry do);
- other: a commit that touches another change only (the big one stays
  cached: what a big change costs everything else);
- raw: the baseline of the baseline, sqlite3 rewriting a column of that
  size (UPDATE ... SET data = ?), no engine.

Each figure is the median of --runs commits, in milliseconds. Timings are
figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _build(db: Path, keys: int) -> tuple[str, str, str]:
    from engine import State

    st = State.open(db, synchronous="NORMAL")
    try:
        with st:
            chg = st.new_change("big", f"a change holding {keys} keys")
            t = st.new_task("k", "a task of it")
            chg.add_task(t)
            other = st.new_change("small", "another change")
            other.add_task(st.new_task("k", "another task"))
            ids = chg.id, t.id, other.id
        # One key at a time would be slow to build: the data column is written whole.
        data = "{" + ",".join(f'"key-{i}":{i}' for i in range(keys)) + "}"
        st.close()
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("UPDATE changes SET data = ? WHERE id = ?", (data, int(ids[0])))
        finally:
            conn.close()
        return ids
    except BaseException:
        st.close()
        raise


def _time(fn: Callable[[], None], runs: int) -> float:
    values = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        values.append((time.perf_counter() - t0) * 1000)
    return statistics.median(values)


def measure(work: Path, keys: int, runs: int) -> dict[str, float]:
    """measure returns the figures (ms) for a change holding `keys` keys."""
    from engine import State, Status

    db = work / f"data-{keys}.db"
    cid, tid, oid = _build(db, keys)
    figures: dict[str, float] = {}

    def load() -> None:
        st = State.open(db, synchronous="NORMAL")
        try:
            with st:
                chg = st.change(cid)
                assert chg is not None
                chg.get("key-0")
        finally:
            st.close()

    figures["load"] = _time(load, max(1, runs // 2))
    st = State.open(db, synchronous="NORMAL")
    try:
        with st:
            chg, task, other = st.change(cid), st.task(tid), st.change(oid)
            assert chg is not None and task is not None and other is not None
            chg.get("key-0")  # loaded once: what follows is what each commit costs
        n = iter(range(10**9))

        def set_one() -> None:
            with st:
                chg.set("counter", next(n))

        def touch_status() -> None:
            with st:
                task.set_status(Status.DOING)
            with st:
                task.set_status(Status.DO)

        def touch_other() -> None:
            with st:
                other.set("counter", next(n))

        figures["set"] = _time(set_one, runs)
        figures["status"] = _time(touch_status, runs) / 2
        figures["other"] = _time(touch_other, runs)
    finally:
        st.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        text = conn.execute("SELECT data FROM changes WHERE id = ?", (int(cid),)).fetchone()[0]
        figures["size_mb"] = len(text.encode()) / 1e6

        def raw() -> None:
            conn.execute("UPDATE changes SET data = ? WHERE id = ?", (text + " " * (next(n) % 2), int(cid)))

        figures["raw"] = _time(raw, runs)
    finally:
        conn.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.change_data", description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10, 1_000_000],
                        help="sizes of the change's data, in keys (the first is the baseline)")
    parser.add_argument("--runs", type=int, default=7, help="commits timed per figure (median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-change-data-") as tmp:
        rows = [(keys, measure(Path(tmp), keys, args.runs)) for keys in args.keys]
    print(f"{'keys in change data':>20} {'data MB':>8} {'load ms':>9} {'set ms':>9} {'status ms':>10} "
          f"{'other ms':>9} {'raw UPDATE ms':>14}")
    for keys, f in rows:
        print(f"{keys:>20,} {f['size_mb']:>8.1f} {f['load']:>9.1f} {f['set']:>9.1f} {f['status']:>10.1f} "
              f"{f['other']:>9.1f} {f['raw']:>14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
