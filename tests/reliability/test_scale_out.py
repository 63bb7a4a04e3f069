# SPDX-License-Identifier: GPL-3.0-or-later
"""Several runner processes on one PostgreSQL database (docs/scale-out.md), against one SQLite run.

The workload is the crash soak's (tests/support/crash_workload.py): lanes, failures that abort lanes and
undo what was done, retries, tasks that finish themselves, tasks aborted while they run; decided
by the seed, so that every run ends in the same statuses. Each runner process journals every
handler run (start and end, wall-clock nanoseconds, fsync'ed), which proves that no task ran in
two processes at once and that every finished task ran to its end somewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, State, Status
from tests.support import pgcluster
from tests.support.crash_workload import (
    ROOT,
    check_runs,
    create_workload,
    final_statuses,
    journal_runs,
    plan_workload,
    read_journal,
    run_reference,
)
from tests.support.helpers import unit_held_open

SEED = 20261201
WAIT = 240.0  # generous: a bound for a loaded machine, never a timing assertion


def _worker(url: str, journal: Path, stderr: Path, changes: int, lease: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.support.crash_workload", "RUN", "--url", url, "--journal", str(journal),
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


def _proc_state(pid: int) -> str:
    """_proc_state is the process's state letter in /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.heavy
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

    def stopped_mid_task() -> bool:
        # Freeze the victim, then look: a run seen open in the journal is still open when the SIGKILL lands
        # (looking at a running process, its task could end between the look and the kill).
        os.kill(victim.pid, signal.SIGSTOP)
        _wait_for(lambda: _proc_state(victim.pid) in ("T", "t"), "the runner to stop")
        if victim_is_mid_task():
            return True
        os.kill(victim.pid, signal.SIGCONT)
        return False

    # Stopped only once the journal shows it mid-task: stopping it at every look would starve its lease's
    # heartbeats on a loaded machine, and another runner would rightly take its task while it still ran it.
    _wait_for(lambda: victim_is_mid_task() and stopped_mid_task(), "the first runner to start a task")
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


def test_the_listener_is_woken_by_other_hosts_commits_not_by_its_own(pg_url: str) -> None:
    """A host's own NOTIFY is not heard back: its State wakes its loop itself (a second wake cost a pass per task)."""
    from engine.store.postgresql import CHANNEL

    here, other = State.open(url=pg_url), State.open(url=pg_url)
    woken: list[float] = []
    came = threading.Event()
    stop, listening = threading.Event(), threading.Event()

    def wake() -> None:
        woken.append(time.monotonic())
        came.set()

    store = here._uow.store
    t = threading.Thread(target=store.listen, args=(wake, stop, CHANNEL, listening), daemon=True)
    t.start()
    try:
        assert listening.wait(WAIT)
        for st in (here, other):  # the same NOTIFY a commit that made tasks runnable sends, in this order
            with st:
                st._uow.store.run("SELECT pg_notify(%s, '')", (CHANNEL,), "write")
        # Delivered in commit order: by the time the other host's woke it, its own came and was passed over.
        assert came.wait(WAIT)
        assert len(woken) == 1
    finally:
        stop.set()
        t.join(WAIT)
        here.close()
        other.close()


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


def test_two_states_never_write_back_a_stale_row(pg_url: str) -> None:
    """Two hosts writing one task: the second waits for the first's lock on the task, then reads what
    it committed."""
    a, b = State.open(url=pg_url), State.open(url=pg_url)
    try:
        with a:
            chg = a.new_change("c", "shared")
            t = a.new_task("k", "one task, two writers")
            chg.add_task(t)
            tid = t.id

        def from_a() -> None:
            ta = a.task(tid)
            assert ta is not None
            ta.set("from-a", 1)  # the task's row is locked from here to a's commit

        done = threading.Event()
        errors: list[BaseException] = []

        def from_b() -> None:
            try:
                with b:
                    tb = b.task(tid)  # waits here for a's commit, then reads the row a wrote
                    assert tb is not None
                    tb.set("from-b", 2)
                done.set()
            except BaseException as e:
                errors.append(e)

        th = threading.Thread(target=from_b)
        with unit_held_open(a, from_a) as errors_a:
            th.start()
            assert not done.wait(0.3), "the second writer did not wait for the first's lock"
        th.join(WAIT)
        assert errors == errors_a == []
        with a:
            final = a.task(tid)
            assert final is not None
            assert (final.get("from-a"), final.get("from-b")) == (1, 2)  # neither write was lost
    finally:
        a.close()
        b.close()


def test_an_outcome_after_the_lease_ran_out_is_dropped_and_the_task_runs_elsewhere(pg_url: str) -> None:
    """Fencing: a runner that lost its lease (stalled, partitioned) does not record its handler's outcome."""
    from engine import TaskRunner

    gate = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    def stalled(task: object, tomb: object) -> None:
        runs.append("a")
        started.set()
        gate.wait(WAIT)
        raise RuntimeError("this outcome must not be recorded")

    sa, sb = State.open(url=pg_url), State.open(url=pg_url)
    ra = TaskRunner(sa, lease=0.5)
    rb = TaskRunner(sb, lease=0.5)
    ra.add_handler("k", stalled)
    rb.add_handler("k", lambda task, tomb: runs.append("b"))
    try:
        with sa:
            chg = sa.new_change("c", "one task")
            chg.add_task(sa.new_task("k", "claimed by a, then lost"))
            cid = chg.id
        ra.ensure()
        assert started.wait(WAIT)
        ra._leases.stop()  # type: ignore[union-attr]  # a stalls: no heartbeat any more
        deadline = time.monotonic() + WAIT
        while "b" not in runs:  # b's reaper returns the task to Do once the lease ran out, and runs it
            assert time.monotonic() < deadline, "the other runner never ran the task"
            rb.ensure()
            rb.wait()
            time.sleep(0.05)
        gate.set()
        ra.wait()
        with sa:
            c = sa.change(cid)
            assert c is not None
            assert c.status is Status.DONE, "a's late failure was recorded over b's success"
            assert any("ran out" in line for line in c.tasks()[0].log())
    finally:
        gate.set()
        ra.stop()
        rb.stop()
        sa.close()
        sb.close()


def test_two_hosts_finishing_the_last_tasks_of_one_change_at_once_make_it_ready_once(pg_url: str) -> None:
    """Each host counts the change's tasks again under its row lock at commit: the later commit sees the earlier
    one's task, so the change ends Done and ready although neither host alone finished all of its tasks."""
    import psycopg
    from sqlalchemy.engine import make_url

    a, b = State.open(url=pg_url), State.open(url=pg_url)
    try:
        with a:
            chg = a.new_change("c", "two tasks, two hosts")
            t1, t2 = a.new_task("k", "finished by a"), a.new_task("k", "finished by b")
            chg.add_task(t1)
            chg.add_task(t2)
            cid, tid1, tid2 = chg.id, t1.id, t2.id
        seen_by_a: list[bool] = []

        def finish_first() -> None:
            task = a.task(tid1)
            assert task is not None
            task.set_status(Status.DONE)
            c = a.change(cid)
            assert c is not None
            seen_by_a.append(c.is_ready())  # a alone still counts b's task as Do

        with unit_held_open(a, finish_first) as errors:
            with b:  # commits while a's unit of work is still open: b cannot see a's task Done
                task = b.task(tid2)
                assert task is not None
                task.set_status(Status.DONE)
            with b:
                c = b.change(cid)
                assert c is not None and not c.is_ready() and c.status is Status.DO
        assert errors == [] and seen_by_a == [False]
        with b:
            c = b.change(cid)
            assert c is not None
            assert c.status is Status.DONE and c.is_ready() and c.ready_time is not None
        u = make_url(pg_url)
        with psycopg.connect(host=u.query.get("host"), user=u.username, dbname=u.database) as conn:
            row = conn.execute("SELECT status, ready_time IS NOT NULL FROM changes WHERE id = %s",
                               (int(cid),)).fetchone()
        assert row == ("Done", True)  # what psql shows too
    finally:
        a.close()
        b.close()


@contextlib.contextmanager
def _other_host(pg_url: str) -> Iterator[Any]:
    """_other_host is a raw connection in an open transaction: another host's commit in flight."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    with psycopg.connect(host=u.query.get("host"), user=u.username, dbname=u.database) as conn:
        yield conn


def _commit_or_wait(pg_url: str, work: Callable[[], object]) -> tuple[threading.Thread, threading.Event, bool]:
    """_commit_or_wait runs work (a unit of work) on another thread until it has committed or its connection
    waits for a lock (as the server sees it); it returns the thread, its done event, and whether it committed."""
    done = threading.Event()

    def go() -> None:
        work()
        done.set()

    th = threading.Thread(target=go)
    th.start()
    with _other_host(pg_url) as conn:
        conn.autocommit = True
        deadline = time.monotonic() + WAIT
        while not done.wait(0.005) and time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()").fetchone()[0]:
                return th, done, False
    return th, done, done.is_set()


def _three_tasks(st: State) -> tuple[str, list[str]]:
    """_three_tasks makes a change of three tasks, the first two Doing (the change Doing)."""
    with st:
        chg = st.new_change("c", "three tasks")
        tasks = [st.new_task("k", f"task {i}") for i in range(3)]
        for t in tasks:
            chg.add_task(t)
        cid, tids = chg.id, [t.id for t in tasks]
    _set(st, {tid: Status.DOING for tid in tids[:2]})
    return cid, tids


def _set(st: State, moves: dict[str, Status]) -> None:
    with st:
        for tid, status in moves.items():
            task = st.task(tid)
            assert task is not None
            task.set_status(status)


def test_commits_that_keep_a_changes_status_do_not_wait_for_each_other(pg_url: str) -> None:
    """A unit of work that cannot move its change's status (it leaves a task of its own in the change's status)
    only share-locks the change's row at commit: hosts committing such units on one change do not wait for each
    other (here the other host's commit in flight holds the row's share lock, as such a commit does)."""
    a = State.open(url=pg_url)
    try:
        cid, (t1, t2, t3) = _three_tasks(a)
        with _other_host(pg_url) as other:
            other.execute("SELECT id FROM changes WHERE id = %s FOR SHARE", (int(cid),))
            th, _, committed = _commit_or_wait(pg_url, lambda: _set(a, {t1: Status.DONE, t3: Status.DOING}))
            assert committed, "the commit waited for the other host's"
        th.join(WAIT)
        with a:
            c = a.change(cid)
            assert c is not None and c.status is Status.DOING and not c.is_ready()
        _set(a, {t2: Status.DONE, t3: Status.DONE})
        with a:
            c = a.change(cid)
            assert c is not None and c.status is Status.DONE and c.is_ready()
    finally:
        a.close()


def test_a_commit_that_moves_a_changes_status_waits_for_the_commits_that_keep_it(pg_url: str) -> None:
    """A unit of work that moves its change's status locks the change's row exclusively at commit: it waits for
    the other hosts' commits that hold its share lock, and counts the tasks they wrote (here the last one)."""
    a = State.open(url=pg_url)
    try:
        cid, (t1, t2, t3) = _three_tasks(a)
        with _other_host(pg_url) as other:
            other.execute("SELECT id FROM changes WHERE id = %s FOR SHARE", (int(cid),))
            other.execute("UPDATE tasks SET status = 'Done' WHERE id = %s", (int(t3),))
            th, done, committed = _commit_or_wait(pg_url, lambda: _set(a, {t1: Status.DONE, t2: Status.DONE}))
            assert not committed
            other.commit()
        assert done.wait(WAIT)
        th.join(WAIT)
        with a:
            c = a.change(cid)
            assert c is not None and c.status is Status.DONE and c.is_ready() and c.ready_time is not None
    finally:
        a.close()


def test_the_heartbeat_passes_over_a_task_a_unit_of_work_holds_locked(pg_url: str) -> None:
    """The heartbeat never waits for a task row locked by a unit of work (it deadlocked with the host's own
    recorder, which locks tasks in id order): it extends the other leases, and the locked task's at the next beat."""
    a = State.open(url=pg_url)
    try:
        _, tids = _three_tasks(a)
        store: Any = a._uow.store
        with _other_host(pg_url) as other:
            other.execute("UPDATE tasks SET runner = 'r1', lease_until = 1 WHERE id = ANY (%s)",
                          ([int(t) for t in tids],))
            other.commit()
            other.execute("SELECT id FROM tasks WHERE id = %s FOR NO KEY UPDATE", (int(tids[0]),))  # a unit's lock
            counted: list[int] = []
            th, _, done = _commit_or_wait(pg_url, lambda: counted.append(store.heartbeat("r1", 30.0)))
            assert done, "the heartbeat waited for the locked task"
            assert counted == [2]  # the two others (not clean yet: a cleanup may still run under the lease)
            other.rollback()
        th.join(WAIT)
        assert store.heartbeat("r1", 30.0) == 3
    finally:
        a.close()


def test_wait_ready_rides_out_a_server_restart(pg_cluster: pgcluster.Cluster, pg_url: str) -> None:
    """A connection the restarted server dropped while idle is opened again at the first statement of the next
    unit of work; a waiter meets no error either, and sees the change that another host made ready."""
    a = State.open(url=pg_url)
    try:
        with a:
            chg = a.new_change("c", "made ready after a restart")
            t = a.new_task("k", "finished by another host")
            chg.add_task(t)
            tid = t.id
        pg_cluster.stop("fast")  # a's connection dies; a does not know yet
        pg_cluster.start()
        result: list[bool] = []
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                result.append(chg.wait_ready(WAIT))
            except BaseException as e:  # reported below
                errors.append(e)

        th = threading.Thread(target=wait)
        th.start()
        b = State.open(url=pg_url)
        try:
            with b:
                task = b.task(tid)
                assert task is not None
                task.set_status(Status.DONE)
        finally:
            b.close()
        th.join(WAIT)
        assert errors == [] and result == [True]
        pg_cluster.stop("fast")
        pg_cluster.start()
        with a:  # the first statement meets the dropped connection: it runs again on a new one
            c = a.change(chg.id)
            assert c is not None and c.status is Status.DONE
    finally:
        a.close()
