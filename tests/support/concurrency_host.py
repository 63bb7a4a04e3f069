# SPDX-License-Identifier: GPL-3.0-or-later
"""A runner host for tests/reliability/test_concurrency_hosts.py: runs the tasks of kind "slot" under a concurrency key.

``python -m tests.support.concurrency_host --url URL --journal FILE --limit N --lease S [--hang] [--go FILE]``
opens an Overlord on URL, limits kind "slot" to N at once with key "k",
and runs until change 1 is ready. Each handler run appends "<ns> <pid>
<task> start" and "... end" to the journal (O_APPEND, one write per line,
fsync'ed), so the lines of every host form one order. With --hang, a task
whose data says "hang" never ends here (the test kills this host).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from engine import Overlord, Task, Tomb


def journal(fd: int, tid: str, what: str) -> None:
    os.write(fd, f"{time.time_ns()} {os.getpid()} {tid} {what}\n".encode())
    os.fsync(fd)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--sleep-ms", type=float, default=10.0)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--timeout", type=float, default=240.0)
    p.add_argument("--go", help="start the loop once this file exists (journal says ready before)")
    args = p.parse_args()
    fd = os.open(args.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def slot(task: Task, tomb: Tomb) -> None:
        with task.state:
            tid, hang = task.id, bool(task.get("hang", False))
        journal(fd, tid, "start")
        if hang and args.hang:
            while True:  # held until this host is killed
                time.sleep(3600)
        time.sleep(args.sleep_ms / 1000)
        journal(fd, tid, "end")

    o = Overlord(url=args.url, lease=args.lease, workers=8)
    o.task_runner.add_handler("slot", slot)
    o.task_runner.set_concurrency("slot", "k", args.limit)
    try:
        if args.go:
            journal(fd, "-", "ready")
            deadline = time.monotonic() + args.timeout
            while not os.path.exists(args.go):  # the test's go: every host is up (an event, polled)
                if time.monotonic() > deadline:
                    return 1
                time.sleep(0.01)
        o.loop()
        if not args.go:
            journal(fd, "-", "ready")
        with o.state:
            chg = o.state.change("1")
        assert chg is not None
        if not chg.wait_ready(args.timeout):
            print("change 1 did not get ready", file=sys.stderr)
            return 1
    finally:
        o.stop()
        o.state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
