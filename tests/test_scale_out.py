# SPDX-License-Identifier: GPL-3.0-or-later
"""Several runner processes on one PostgreSQL database (docs/scale-out.md), against one SQLite run.

The workload is the crash soak's (tests/crash_workload.py): lanes, failures that abort lanes and
undo what was done, retries, tasks that finish themselves, tasks aborted while they run; decided
by the seed, so that every run ends in the same statuses. Each runner process journals every
handler run (start and end, wall-clock nanoseconds, fsync'ed), which proves that no task ran in
two processes at once and that every finished task ran to its end somewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import Overlord, State, Status
from tests import pgcluster
from tests.crash_workload import (
    ROOT,
    check_runs,
    create_workload,
    final_statuses,
    journal_runs,
    plan_workload,
    read_journal,
    run_reference,
)

SEED = 20261201
WAIT = 240.0  # generous: a bound for a loaded machine, never a timing assertion


def _worker(url: str, journal: Path, stderr: Path, changes: int, lease: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.crash_workload", "RUN", "--url", url, "--journal", str(journal),
           "--seed", str(SEED), "--changes", str(changes), "--sleep-ms", "1:4", "--workers", "4",
           "--lease", str(lease), "--timeout", str(WAIT)]
    with stderr.open("ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err)


def _reference(tmp_path: Path, changes: int) -> dict[str, tuple[str, dict[str, str]]]:
    ref, life = run_reference(tmp_path, SEED, changes, "short", "1:4", 8, False, WAIT, lambda s: None)
    assert life.rc == 0, ref.stderr_of(life)
    statuses, info = final_statuses(ref.db)
    assert not info["unready"]
    return statuses


def _create(url: str, changes: int) -> None:
    st = State.open(url=url)
    try:
        create_workload(st, plan_workload(SEED, changes), SEED)
    finally:
        st.close()


def _wait_all(procs: list[subprocess.Popen[bytes]], stderr: Path) -> None:
    deadline = time.monotonic() + WAIT
    for p in procs:
        try:
            rc = p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a runner process did not finish: {stderr.read_text()[-3000:]}")
        assert rc in (0, -signal.SIGKILL), stderr.read_text()[-3000:]


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_three_runner_processes_end_as_one_sqlite_run_also_when_one_is_killed(
        pg_url: str, tmp_path: Path) -> None:
    changes = 300
    expected = _reference(tmp_path, changes)
    _create(pg_url, changes)
    journal, stderr = tmp_path / "pg.journal", tmp_path / "pg.stderr"
    journal.touch()
    lease = 2.0
    procs = [_worker(pg_url, journal, stderr, changes, lease) for _ in range(3)]
    victim = procs[0]

    def victim_is_mid_task() -> bool:
        # A do handler of the victim has started and not ended: kill it there.
        open_runs: set[str] = set()
        for f in read_journal(journal):
            if int(f[1]) == victim.pid and f[2] != "-":
                (open_runs.add if f[4] == "start" else open_runs.discard)(f[2])
        return bool(open_runs)

    _wait_for(victim_is_mid_task, "the first runner to start a task")
    os.kill(victim.pid, signal.SIGKILL)
    killed_ns = time.time_ns()
    victim.wait()
    _wait_all(procs[1:], stderr)

    statuses, info = final_statuses(pg_url)
    assert not info["unready"]
    assert statuses == expected, "the three runners did not end where one SQLite run ends"
    assert info["task_count"] == sum(len(t) for _, t in expected.values())  # nothing lost, nothing twice
    problems: list[str] = []
    lines = read_journal(journal)
    runs = journal_runs(lines, {victim.pid: killed_ns}, problems)
    check_runs(runs, {victim.pid: killed_ns}, statuses, info, problems)
    assert problems == []
    pids = {r.pid for r in runs}
    assert len(pids) == 3, "every runner process ran tasks"
    # What the victim was running when it died ran again, in another process, after its lease ran out.
    cut = [r for r in runs if r.pid == victim.pid and r.note == "killed"]
    assert cut
    for r in cut:
        again = [x for x in runs if x.tid == r.tid and x.pid != victim.pid and x.start > killed_ns]
        assert again, f"task {r.tid}, cut by the kill, never ran again"


def test_runner_processes_survive_a_postgresql_restart(pg_cluster: pgcluster.Cluster, pg_url: str,
                                                       tmp_path: Path) -> None:
    changes = 120
    expected = _reference(tmp_path, changes)
    _create(pg_url, changes)
    journal, stderr = tmp_path / "pg.journal", tmp_path / "pg.stderr"
    journal.touch()
    procs = [_worker(pg_url, journal, stderr, changes, 5.0) for _ in range(2)]

    def some_done() -> bool:
        return sum(1 for f in read_journal(journal) if f[4] == "end") >= 40

    _wait_for(some_done, "the runners to get going")
    pg_cluster.stop("fast")  # every connection dies, mid-transaction for some
    time.sleep(0.5)  # the runners meet a server that is gone (their retries wait it out)
    pg_cluster.start()
    _wait_all(procs, stderr)

    statuses, info = final_statuses(pg_url)
    assert not info["unready"]
    assert statuses == expected
    problems: list[str] = []
    runs = journal_runs(read_journal(journal), {}, problems)
    check_runs(runs, {}, statuses, info, problems)
    assert problems == []


def test_a_change_made_by_one_host_is_run_by_another_woken_at_once(pg_url: str) -> None:
    """LISTEN/NOTIFY: a change committed through one State starts on the overlord of another process."""
    o = Overlord(url=pg_url)
    started = []
    o.task_runner.add_handler("k", lambda t, tomb: started.append(time.monotonic()))
    o.loop()
    try:
        writer = State.open(url=pg_url)
        try:
            with writer:
                chg = writer.new_change("c", "made elsewhere")
                chg.add_task(writer.new_task("k", "one"))
            assert chg.wait_ready(WAIT)
            with writer:
                assert chg.status is Status.DONE
        finally:
            writer.close()
    finally:
        o.stop()
        o.state.close()
    assert started


def test_concurrent_first_starts_create_the_schema_once(pg_cluster: pgcluster.Cluster) -> None:
    name = pg_cluster.new_database()  # empty: no schema yet
    url = pg_cluster.url(name)
    code = ("import sys; from engine import State; st = State.open(url=sys.argv[1]); "
            "st.close(); print('ok')")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(4)]
        outs = [p.communicate(timeout=WAIT) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [o[1].decode()[-2000:] for o in outs]
        st = State.open(url=url)
        try:
            with st:
                chg = st.new_change("c", "after four first starts")
                assert chg.id == "1"
        finally:
            st.close()
    finally:
        pg_cluster.drop_database(name)
