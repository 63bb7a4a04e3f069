# SPDX-License-Identifier: GPL-3.0-or-later
"""Two runner hosts on many small changes of several lanes: the server counts no deadlock, and every change ends Done.

The snap-install shape (bench/installs.py) with 2 runner processes met 3 to 8
deadlocks a run between the commits of the two hosts, on the change rows
(each held share locks and waited for the exclusive lock of a row the other
shared). The engine ran the unit of work again, so every change still ended
Done, but each deadlock stalled both hosts for the server's deadlock_timeout.
Change rows are now locked in one order (engine/store/postgresql_locks.py,
docs/scale-out.md, "Locking"): the server must count none.

Each host is a process of its own (this module run with --host): an Overlord
with no-op handlers, until every change is ready.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from engine import Overlord, State, Status
from tests.support.crash_workload import ROOT
from tests.support.pgcluster import connect

WAIT = 240.0  # generous: a bound for a loaded machine, never a timing assertion
CHANGES = 300
LANES = 4
STEPS = ("fetch", "mount", "link")


def _create(url: str) -> list[str]:
    """_create adds CHANGES changes of LANES lanes, each a chain of STEPS (bench/installs.py's shape)."""
    st = State.open(url=url)
    try:
        ids = []
        with st:
            for c in range(CHANGES):
                chg = st.new_change("install", f"install {LANES} snaps ({c + 1})")
                for _ in range(LANES):
                    lane, prev = st.new_lane(), None
                    for kind in STEPS:
                        t = st.new_task(kind, f"{kind} a snap")
                        t.join_lane(lane)
                        if prev is not None:
                            t.wait_for(prev)
                        chg.add_task(t)
                        prev = t
                ids.append(chg.id)
        return ids
    finally:
        st.close()


def _host(url: str, ids: list[str], workers: int) -> None:
    """_host runs an Overlord of workers on url until every change of ids is ready (the --host process)."""
    o = Overlord(url=url, workers=workers)
    try:
        for kind in STEPS:
            o.task_runner.add_handler(kind, lambda task, tomb: None)
        o.loop()
        with o.state:
            chgs = [o.state.change(cid) for cid in ids]
        for chg in chgs:
            if not chg.wait_ready(WAIT):
                raise SystemExit(f"change {chg.id} was not ready after {WAIT} s")
    finally:
        o.stop()
        o.state.close()


def _deadlocks(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0])


def _wait_gone(url: str) -> None:
    """_wait_gone waits until the hosts' server processes ended (they report their counts as they end)."""
    deadline = time.monotonic() + WAIT
    with connect(url) as conn:
        conn.autocommit = True
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline, "the hosts' connections did not end"
            time.sleep(0.05)


def test_two_runner_hosts_on_many_changes_of_several_lanes_meet_no_deadlock(pg_url: str, tmp_path: Path) -> None:
    ids = _create(pg_url)
    before = _deadlocks(pg_url)
    listing = tmp_path / "ids"
    listing.write_text(" ".join(ids))
    stderr = tmp_path / "hosts.err"
    cmd = [sys.executable, "-m", "tests.reliability.test_pg_deadlocks", "--url", pg_url, "--ids", str(listing)]
    with stderr.open("ab") as err:
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err) for _ in range(2)]
    try:
        for p in procs:
            assert p.wait(WAIT) == 0, stderr.read_text()[-4000:]
    finally:
        for p in procs:
            p.kill()
    _wait_gone(pg_url)
    st = State.open(url=pg_url)
    try:
        with st:
            statuses = {cid: st.change(cid).status for cid in ids}
    finally:
        st.close()
    assert all(s is Status.DONE for s in statuses.values()), {c: s for c, s in statuses.items() if s is not Status.DONE}
    log = stderr.read_text()
    assert _deadlocks(pg_url) - before == 0, [line for line in log.splitlines() if "deadlock" in line][:3]
    assert "deadlock" not in log


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ids", type=Path, required=True)
    p.add_argument("--workers", type=int, default=16)
    a = p.parse_args()
    _host(a.url, a.ids.read_text().split(), a.workers)
