# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a chain's step spends its CPU, thread by thread, with and without a synced commit (issue 25).

    python -m bench.stepcpu [--tasks 3000] [--rounds 3] [--tmp-dir DIR]

Runs a chain of no-op tasks under o.loop(), each run in a fresh process,
in three ways per round, one after another: synchronous=NORMAL (no sync),
FULL (one fdatasync a step), and NORMAL with each handler sleeping 0.3 ms
(the worker thread blocks as long as a sync, without one). For each it
prints the process's CPU per task, each thread's CPU per task (from
/proc/self/task/*/schedstat, exact), the worker's voluntary and
involuntary context switches per task, and the 5th and 25th percentiles of
the step's own thread CPU (OutcomeRecorder.report: record, hand on, commit).
docs/performance.md ("A chain's step at FULL", hw2g) reads the figures.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import ROOT

SLEEP_S = 0.0003
MODES = (("NORMAL", 0.0), ("FULL", 0.0), ("NORMAL", SLEEP_S))


def _threads() -> dict[int, tuple[int, int, int]]:
    """_threads is each thread's (CPU ns, voluntary, involuntary context switches), by native id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            ns = int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
            status = Path(f"/proc/self/task/{tid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[int(tid)] = (ns, int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"]))
    return out


def run_chain(db: str, tasks: int, synchronous: str, sleep_s: float) -> dict[str, Any]:
    """run_chain runs one chain of tasks in this process and returns its figures."""
    from engine.outcomes import OutcomeRecorder

    steps: list[int] = []
    report = OutcomeRecorder.report

    def timed(self: OutcomeRecorder, run: Any, *, inline: bool = False) -> Any:
        t0 = time.thread_time_ns()
        try:
            return report(self, run, inline=inline)
        finally:
            steps.append(time.thread_time_ns() - t0)

    OutcomeRecorder.report = timed  # type: ignore[method-assign]
    try:
        return _run(db, tasks, synchronous, sleep_s, steps)
    finally:
        OutcomeRecorder.report = report  # type: ignore[method-assign]


def _run(db: str, tasks: int, synchronous: str, sleep_s: float, steps: list[int]) -> dict[str, Any]:
    from engine import Overlord, Status

    def handler(task: Any, tomb: Any) -> None:
        if sleep_s:
            time.sleep(sleep_s)

    o = Overlord(db, synchronous=synchronous)
    try:
        o.task_runner.add_handler("noop", handler)
        with o.state:
            chg = o.state.new_change("bench", "chain")
            prev = None
            for i in range(tasks):
                t = o.state.new_task("noop", f"task {i + 1}")
                if prev is not None:
                    t.wait_for(prev)
                chg.add_task(t)
                prev = t
        before = _threads()
        cpu0, t0 = time.process_time(), time.perf_counter()
        o.loop()
        if not chg.wait_ready(600):
            raise RuntimeError("the chain was not ready after 600 s")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = _threads()
        names = {t.native_id: t.name for t in threading.enumerate()}
        with o.state:
            if chg.status is not Status.DONE:
                raise RuntimeError(f"the chain ended {chg.status}")
    finally:
        o.stop()
        o.state.close()
    threads: dict[str, list[float]] = {}
    for tid, (ns, vol, invol) in after.items():
        b = before.get(tid, (0, 0, 0))
        if ns > b[0]:
            name = names.get(tid, str(tid)).rstrip("0123456789").rstrip("-")
            cur = threads.setdefault(name, [0.0, 0.0, 0.0])
            for k, v in enumerate((ns - b[0], vol - b[1], invol - b[2])):
                cur[k] += v / tasks
    steps.sort()
    return {"wall_us": wall / tasks * 1e6, "cpu_us": cpu / tasks * 1e6,
            "threads": {k: (v[0] / 1e3, v[1], v[2]) for k, v in threads.items()},
            "step_p5_us": steps[len(steps) // 20] / 1e3, "step_p25_us": steps[len(steps) // 4] / 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stepcpu", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tmp-dir", default=str(ROOT / "var" / "bench-tmp"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        mode = json.loads(args.child)
        print(json.dumps(run_chain(mode["db"], args.tasks, mode["sync"], mode["sleep"])))
        return 0
    Path(args.tmp_dir).mkdir(parents=True, exist_ok=True)
    for rnd in range(1, args.rounds + 1):
        for sync, sleep_s in MODES:
            with tempfile.TemporaryDirectory(dir=args.tmp_dir) as d:
                child = json.dumps({"db": str(Path(d) / "state.db"), "sync": sync, "sleep": sleep_s})
                out = subprocess.run([sys.executable, "-m", "bench.stepcpu", "--tasks", str(args.tasks),
                                      "--child", child], cwd=ROOT, capture_output=True, text=True, check=True)
            print(line(rnd, sync, sleep_s, json.loads(out.stdout.strip().splitlines()[-1])), flush=True)
    return 0


def line(rnd: int, sync: str, sleep_s: float, r: dict[str, Any]) -> str:
    """line is how main prints one run's figures (run_chain's)."""
    label = f"{sync}{' + sleep 0.3 ms' if sleep_s else ''}"
    threads = ", ".join(f"{name} {us:.1f} us ({vol:.2f} vol, {invol:.2f} invol)"
                        for name, (us, vol, invol) in sorted(r["threads"].items(), key=lambda kv: -kv[1][0]))
    return (f"round {rnd} {label:22} wall {r['wall_us']:7.1f} us  CPU {r['cpu_us']:6.1f} us a task; "
            f"step p5 {r['step_p5_us']:6.1f} p25 {r['step_p25_us']:6.1f} us; {threads}")


if __name__ == "__main__":
    sys.exit(main())
