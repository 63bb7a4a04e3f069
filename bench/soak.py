# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash soak, the long version: SIGKILL the workload hundreds of times and check what survived.

    python -m bench.soak --kills 500 --changes 300 --seed 1

Runs the workload of tests/support/crash_workload.py once uninterrupted, then again on a second database
while killing the child process at random moments (during start-up, open, creation, and mostly
while handlers run), resumes it to the end and compares: final statuses equal the uninterrupted
run's, every finished task's handler completed in the journal, no two runs of a task overlapped,
committed work survived, `PRAGMA integrity_check` is ok. Prints the figures; exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.support.crash_workload import soak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=500, help="how many times to SIGKILL the workload")
    p.add_argument("--changes", type=int, default=300, help="changes in the workload (at least 200)")
    p.add_argument("--seed", type=int, default=1, help="decides the workload and the kill moments")
    p.add_argument("--shape", choices=("short", "long"), default="long",
                   help="long: up to 3 lanes of up to 3 tasks per change; short: 2 of 2")
    p.add_argument("--workers", type=int, default=2, help="the child's task runner workers")
    p.add_argument("--sleep-ms", default="4:30",
                   help="handler sleep range LO:HI in ms (longer gives room for more kills)")
    p.add_argument("--final-timeout", type=float, default=300.0, help="seconds the last life may take")
    p.add_argument("--workdir", type=Path, help="keep the databases and journals here (default: a temp dir)")
    args = p.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="engine-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"soak: seed {args.seed}, {args.changes} changes, {args.kills} kills, in {workdir}", flush=True)
    out = soak(workdir, seed=args.seed, changes=args.changes, kills=args.kills, shape=args.shape,
               sleep_ms=args.sleep_ms, workers=args.workers, final_timeout=args.final_timeout,
               log=lambda line: print(line, flush=True))
    print(out.figures())
    if out.problems:
        print(f"FAILED: {len(out.problems)} problems; the files are in {workdir}", file=sys.stderr)
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
