# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.notices: how soon a notice waiter learns that a change finished, beside polling.

An Overlord on a SQLite file (the engine's default durability) runs changes
of one no-op task in its loop. For each change, a waiter blocked in
State.wait_notices (or awaiting State.wait_notices_async on an asyncio
loop) for the change's change-update notices wakes when the commit that
makes it Done lands; the figure is the time from the moment the runner
decided Done (the change status hook, lock held, before the commit) to the
waiter having the notice: the commit and the wake-up. The baseline is what
clients did before notices: read the change every 0.2 s (the old `overlord
watch`), measured the same way. Target: 100 ms. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_MS = 100.0
POLL = 0.2


def _noop(task: Any, tomb: Any) -> None:
    return None


def _run(db: Path, runs: int, mode: str) -> list[float]:
    from engine import Overlord, Status

    o = Overlord(db)
    st = o.state
    o.task_runner.add_handler("noop", _noop)
    done_at: dict[str, float] = {}

    def hook(chg: Any, old: Status, new: Status) -> None:
        if new is Status.DONE:
            done_at[chg.id] = time.perf_counter()

    with st:
        st.add_change_status_changed_handler(hook)
    o.loop()
    out: list[float] = []
    try:
        for _ in range(runs):
            with st:
                chg = st.new_change("bench", "one no-op task")
                cid = chg.id
                (n,) = st.notices(types=["change-update"], keys=[cid])
                cursor = n.last_repeated
                chg.add_task(st.new_task("noop", "noop"))
            seen = None
            while seen is None:
                if mode == "wait":
                    got = st.wait_notices(after=cursor, types=["change-update"], keys=[cid], timeout=60)
                elif mode == "async":
                    got = asyncio.run(st.wait_notices_async(after=cursor, types=["change-update"], keys=[cid],
                                                            timeout=60))
                else:  # the baseline: read the change every POLL seconds
                    time.sleep(POLL)
                    got = []
                    with st:
                        if chg.status is Status.DONE:
                            seen = time.perf_counter()
                    continue
                if got:
                    cursor = got[-1].last_repeated
                    with st:
                        if chg.status is Status.DONE:
                            seen = time.perf_counter()
            out.append((seen - done_at[cid]) * 1000)
    finally:
        o.stop()
        st.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """main runs the measurements and prints the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.notices", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="changes per measurement (default 30)")
    args = parser.parse_args(argv)
    print(f"{'wake latency (commit of Done -> waiter has it)':52} {'median':>9} {'p90':>9} {'max':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-notices-") as tmp:
        for mode, label in [("wait", "State.wait_notices"), ("async", "State.wait_notices_async"),
                            ("poll", f"baseline: reading the change every {POLL:g} s")]:
            ms = sorted(_run(Path(tmp) / f"{mode}.db", args.runs, mode))
            p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
            print(f"{label:52} {statistics.median(ms):7.1f}ms {p90:7.1f}ms {ms[-1]:7.1f}ms")
    print(f"target: {TARGET_MS:g} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
