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
import threading
import time
from pathlib import Path
from typing import Any

from bench.installs import STEPS, add_installs
from engine import DatabaseConflictError, Overlord, State, Status
from tests.support.crash_workload import ROOT
from tests.support.helpers import chain_across
from tests.support.pgcluster import connect

WAIT = 240.0  # generous: a bound for a loaded machine, never a timing assertion
CHANGES = 300


def _create(url: str) -> list[str]:
    """_create adds CHANGES changes of 4 lanes, each a chain of 3 tasks (bench/installs.py's shape, its builder)."""
    st = State.open(url=url)
    try:
        with st:
            return add_installs(st, CHANGES)
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


def _two_changes(url: str) -> list[str]:
    st = State.open(url=url)
    try:
        with st:
            return [st.new_change("c", f"change {i}").id for i in range(2)]
    finally:
        st.close()


def _waiting(conn: Any, done: threading.Event) -> bool:
    """_waiting says whether a backend of the database waits for a lock (as the server sees it), until done."""
    deadline = time.monotonic() + WAIT
    while not done.wait(0.005) and time.monotonic() < deadline:
        if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()").fetchone()[0]:
            return True
    return False


def _set_both(st: State, first: str, second: str, value: int, done: threading.Event,
              errors: list[BaseException]) -> None:
    """_set_both sets the data of two changes in one unit of work (each row locked as it is owned), first first."""
    try:
        with st:
            st.change(first).set("x", value)  # (UnitOfWork.own_change locks the row)
            st.change(second).set("x", value)
    except BaseException as e:  # (told by the assertions of the test)
        errors.append(e)
    done.set()


def test_a_change_lock_below_one_held_never_waits(pg_url: str) -> None:
    """A unit of work that holds change 2 locked and then needs change 1, which another host holds shared, does
    not wait for it (a circle could close: the other host may wait for change 2): lock_not_available, the unit of
    work rolled back, to be run again."""
    low, high = _two_changes(pg_url)
    st = State.open(url=pg_url)
    done = threading.Event()
    errors: list[BaseException] = []
    try:
        with connect(pg_url) as other, connect(pg_url) as watch:
            other.autocommit = False
            other.execute("SELECT id FROM changes WHERE id = %s FOR SHARE", (int(low),))
            th = threading.Thread(target=_set_both, args=(st, high, low, 1, done, errors))
            th.start()
            waited = _waiting(watch, done)
            other.rollback()
            th.join(WAIT)
        assert not waited, "the lock of change 1 was waited for while change 2 was held"
        assert len(errors) == 1 and isinstance(errors[0], DatabaseConflictError), errors
        assert "could not obtain lock" in str(errors[0])
        _set_both(st, high, low, 2, threading.Event(), errors)  # (the lock is free again: taken at once)
        assert len(errors) == 1, errors
        with st:
            assert st.change(low).get("x") == 2 and st.change(high).get("x") == 2
    finally:
        st.close()


def test_a_change_lock_above_those_held_waits_for_the_other_host(pg_url: str) -> None:
    """In ascending order a lock is waited for, as before: the unit of work commits once the other host's does."""
    low, high = _two_changes(pg_url)
    st = State.open(url=pg_url)
    done = threading.Event()
    errors: list[BaseException] = []

    try:
        with connect(pg_url) as other, connect(pg_url) as watch:
            other.autocommit = False
            other.execute("SELECT id FROM changes WHERE id = %s FOR SHARE", (int(high),))
            th = threading.Thread(target=_set_both, args=(st, low, high, 1, done, errors))
            th.start()
            assert _waiting(watch, done), errors
            other.rollback()
            assert done.wait(WAIT)
            th.join()
        assert not errors, errors
        with st:
            assert st.change(high).get("x") == 1
    finally:
        st.close()


def _noop(task: object, tomb: object) -> None:
    return None


def test_the_first_pass_does_not_wait_for_the_tasks_of_changes_no_cycle_can_go_through(pg_url: str) -> None:
    """A runner's first pass searches the changes with waiting tasks for cycles, loading (so locking) their tasks:
    only those a cycle could go through (PostgresStore.cycle_suspects). One whose tasks each wait for an older one
    of the change is not loaded: its task held by another host (its first pass, say) does not hold this one up."""
    st = State.open(url=pg_url)
    try:
        with st:
            held = st.new_change("held", "a task held by another host")
            a, b = st.new_task("idle", "a"), st.new_task("k", "b")  # ("idle": no handler, so b waits on)
            b.wait_for(a)
            held.add_task(a)
            held.add_task(b)
            run = st.new_change("run", "a chain")
            prev = None
            for i in range(3):
                t = st.new_task("k", f"step {i}")
                if prev is not None:
                    t.wait_for(prev)
                run.add_task(t)
                prev = t
            tid, cid = int(b.id), run.id
    finally:
        st.close()
    o = Overlord(url=pg_url, workers=2)
    o.task_runner.add_handler("k", _noop)
    done = threading.Event()
    try:
        with connect(pg_url) as other, connect(pg_url) as watch:
            other.autocommit = False
            other.execute("SELECT id FROM tasks WHERE id = %s FOR NO KEY UPDATE", (tid,))
            o.loop()
            with o.state:
                chg = o.state.change(cid)
            ready = threading.Thread(target=lambda: chg.wait_ready(WAIT) and done.set())
            ready.start()
            waited = _waiting(watch, done)
            other.rollback()
            ready.join(WAIT)
        assert not waited, "the first pass waited for the lock of a task of a change no cycle can go through"
        with o.state:
            assert o.state.change(cid).status is Status.DONE
    finally:
        o.stop()
        o.state.close()


def test_cycles_written_before_the_first_pass_are_found_on_postgresql(pg_url: str) -> None:
    """What the first pass searches still finds every cycle: one closed by an older task waiting for a newer one
    of its change, and one across two changes closed by a task waiting for an older one of another change."""
    st = State.open(url=pg_url)
    try:
        with st:
            one, two, three = (st.new_change(n, n) for n in ("one", "two", "three"))
            chain = chain_across(st, one, two)
            x, y = st.new_task("k", "x"), st.new_task("k", "y")
            y.wait_for(x)
            three.add_task(x)
            three.add_task(y)
        with st:
            chain[2].wait_for(chain[4])  # t2 -> t4 -> t3 -> t2, across the changes
            x.wait_for(y)  # x -> y -> x, in one change
            ids = [t.id for t in (*chain[2:], x, y)]
            cids = [c.id for c in (one, two, three)]
    finally:
        st.close()
    o = Overlord(url=pg_url, workers=2)
    o.task_runner.add_handler("k", _noop)
    try:
        o.loop()
        with o.state:
            chgs = [o.state.change(c) for c in cids]
        assert all(c.wait_ready(WAIT) for c in chgs)
        with o.state:
            assert [o.state.task(t).status for t in ids] == [Status.ERROR] * 5
            assert [o.state.change(c).status for c in cids] == [Status.ERROR] * 3
    finally:
        o.stop()
        o.state.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ids", type=Path, required=True)
    p.add_argument("--workers", type=int, default=16)
    a = p.parse_args()
    _host(a.url, a.ids.read_text().split(), a.workers)
