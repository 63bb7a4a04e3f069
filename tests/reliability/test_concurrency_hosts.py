# SPDX-License-Identifier: GPL-3.0-or-later
"""Concurrency keys across runner hosts on PostgreSQL: the limit holds over every host, and a killed host's slot
is free again once its lease ran out.

Each host (tests/support/concurrency_host.py, a process of its own) journals every handler run's start and end in one
append-only file; the journal, read in order, says how many tasks of the key ran at once. A handler's end is
journaled before its outcome frees the slot, so the journal never counts more at once than there were: a count
over the limit in the journal is a real breach.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import State, Status
from engine._time import POLL_INTERVAL
from tests.support.crash_workload import ROOT

WAIT = 240.0  # generous: a bound for a loaded machine, never a timing assertion


def _host(url: str, journal: Path, stderr: Path, limit: int, lease: float, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.support.concurrency_host", "--url", url, "--journal", str(journal),
           "--limit", str(limit), "--lease", str(lease), *extra]
    with stderr.open("ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err)


def _create(url: str, n: int, hang: int | None = None) -> None:
    st = State.open(url=url)
    try:
        with st:
            chg = st.new_change("slots", "Tasks sharing one concurrency key")
            for i in range(n):
                t = st.new_task("slot", f"task {i}")
                if i == hang:
                    t.set("hang", True)
                chg.add_task(t)
    finally:
        st.close()


def _lines(journal: Path) -> list[tuple[int, int, str, str]]:
    out = []
    for line in journal.read_text().splitlines():
        ns, pid, tid, what = line.split()
        out.append((int(ns), int(pid), tid, what))
    return out


def _most_at_once(lines: list[tuple[int, int, str, str]]) -> int:
    """_most_at_once replays the journal: the most runs started and not yet ended (or killed) at any point."""
    running: set[tuple[int, str]] = set()
    most = 0
    for _, pid, tid, what in lines:
        if what == "start":
            running.add((pid, tid))
            most = max(most, len(running))
        elif what == "end":
            running.discard((pid, tid))
        elif what == "killed":
            running = {r for r in running if r[0] != pid}
    return most


def _wait(procs: list[subprocess.Popen[bytes]], stderr: Path) -> None:
    deadline = time.monotonic() + WAIT
    for p in procs:
        try:
            rc = p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a runner host did not finish: {stderr.read_text()[-3000:]}")
        assert rc == 0, stderr.read_text()[-3000:]


def _statuses(url: str) -> list[Status]:
    st = State.open(url=url)
    try:
        with st:
            chg = st.change("1")
            assert chg is not None
            return [t.status for t in chg.tasks()]
    finally:
        st.close()


def _wait_for(pred: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_three_hosts_never_run_more_than_the_limit_at_once(pg_url: str, tmp_path: Path) -> None:
    _create(pg_url, 30)
    journal, stderr = tmp_path / "journal", tmp_path / "stderr"
    journal.touch()
    go = tmp_path / "go"
    procs = [_host(pg_url, journal, stderr, 3, 5.0, "--go", str(go), "--sleep-ms", "20") for _ in range(3)]
    _wait_for(lambda: sum(1 for line in _lines(journal) if line[3] == "ready") == 3, "every host to be up")
    go.touch()  # all three claim from the start
    _wait(procs, stderr)
    assert _statuses(pg_url) == [Status.DONE] * 30
    lines = _lines(journal)
    assert sum(1 for line in lines if line[3] == "end") == 30
    assert _most_at_once(lines) <= 3
    assert len({pid for _, pid, _, what in lines if what == "start"}) >= 2, "the hosts shared the work"


def test_a_killed_host_frees_its_slot_within_one_lease(pg_url: str, tmp_path: Path) -> None:
    lease = 2.0
    _create(pg_url, 6, hang=0)
    journal, stderr = tmp_path / "journal", tmp_path / "stderr"
    journal.touch()
    victim = _host(pg_url, journal, stderr, 1, lease, "--hang")
    _wait_for(lambda: any(w == "start" for _, _, _, w in _lines(journal)), "the victim to take the slot")
    held = next(tid for _, _, tid, w in _lines(journal) if w == "start")
    other = _host(pg_url, journal, stderr, 1, lease)
    _wait_for(lambda: any(p == other.pid and w == "ready" for _, p, _, w in _lines(journal)), "the other host")
    time.sleep(lease)  # the other host's passes meanwhile find the slot taken (a start here would be a breach)
    assert not any(p == other.pid and w == "start" for _, p, _, w in _lines(journal))
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.time_ns()
    victim.wait()
    with journal.open("a") as f:
        f.write(f"{killed} {victim.pid} - killed\n")
    _wait([other], stderr)
    assert _statuses(pg_url) == [Status.DONE] * 6
    lines = sorted(_lines(journal))
    assert _most_at_once(lines) <= 1
    first = min(ns for ns, pid, _, what in lines if pid == other.pid and what == "start")
    freed_after = (first - killed) / 1e9
    # The slot is free once the lease runs out (at most one lease after the last heartbeat); the other host
    # sees it at its next pass (it polls every POLL_INTERVAL). The margin is for a loaded machine (2 busy cores:
    # a pass can be late by seconds); without the lease the slot would stay taken until the test times out.
    assert 0 < freed_after <= lease + POLL_INTERVAL + 5.0, freed_after
    print(f"slot freed {freed_after:.2f} s after the kill (lease {lease} s)")
    # The task the victim held ran again on the other host.
    assert any(pid == other.pid and tid == held and what == "end" for _, pid, tid, what in lines)
