# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash recovery for real: child processes on a file database, SIGKILLed and resumed.

The workload and the driver live in tests/support/crash_workload.py; bench/soak.py is the long version.
Kills during a schema upgrade: tests/support/upgrade_killer.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine import State
from engine.db import SCHEMA_HEAD

# The migrations create the assert manager's table (0002): a fresh database has it when the table is declared,
# as it is wherever the snap system runs. Declared here, whatever other tests this process ran before.
from managers.assertstate import book as _assertions_table  # noqa: F401
from tests.fixtures.make_database import (
    FixedClock,
    compare,
    describe,
    fixture_path,
    fixture_revisions,
    load_description,
)
from tests.support.crash_workload import (
    CREATED_KEY,
    ForkServer,
    JournalTail,
    check_atomic,
    check_runs,
    child_command,
    final_statuses,
    integrity,
    journal_runs,
    read_journal,
    snapshot,
    soak,
    spawn,
)
from tests.support.schema import REPO, downgrade, normalised_schema, revision_of, rows

#: The seed of the short soak; CRASH_SEED=n picks another one (the failure message names it).
SEED = int(os.environ.get("CRASH_SEED", "4242"))


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """server starts the workload's lives as forks of a process that imported the engine once (ForkServer).

    Each life is still a process of its own, with its own connections and locks, SIGKILLed; a fork
    costs milliseconds where a new interpreter importing SQLAlchemy and the engine costs about a second.
    """
    s = ForkServer()
    yield s
    s.close()


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_crash_soak_short(tmp_path: Path) -> None:
    # 200 changes with lanes, edges, failures that undo their lanes, retries and self-finishing
    # handlers; killed at least 50 times, resumed to the end, then compared with an uninterrupted
    # run of the same workload (see soak() for every check). The lives are forks (ForkServer).
    out = soak(tmp_path, seed=SEED, changes=200, kills=50, log=lambda _line: None, fork=True)
    print(out.figures())
    assert out.kills >= 50, out.figures()
    assert out.changes == 200, out.figures()
    assert out.problems == [], out.figures()


def _wait_for(pred, proc, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"the workload exited {proc.returncode} before the kill"
        assert time.monotonic() < deadline, "timed out waiting for the workload"
        time.sleep(0.005)


@pytest.mark.timeout(120)
def test_kill_while_handlers_run_then_resume(tmp_path: Path, server: ForkServer) -> None:
    db, journal, stderr = tmp_path / "state.db", tmp_path / "journal", tmp_path / "stderr"
    # Slow handlers, so a kill lands while several of them run.
    cmd = child_command(db, journal, 7, 20, sleep_ms="150:300", workers=8, no_race=True, timeout=60)
    proc, _t0 = spawn(cmd, stderr, server)
    tail = JournalTail(journal)
    open_runs: set[tuple[str, str]] = set()

    def handlers_running() -> bool:
        for f in tail.lines():
            if f[2] != "-" and int(f[1]) == proc.pid:
                (open_runs.add if f[4] == "start" else open_runs.discard)((f[2], f[3]))
        return len(open_runs) >= 2

    def some_work_committed() -> bool:
        snap = snapshot(db)
        return snap is not None and any(k.startswith("effect/") for k in snap["keys"])

    _wait_for(some_work_committed, proc)
    _wait_for(handlers_running, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {proc.pid: time.time_ns()}
    tail.close()

    # What the dead process left: every handler that was running has its task still Doing/Undoing.
    snap = snapshot(db)
    assert snap is not None
    runs = journal_runs(read_journal(journal), first, [])
    killed = {(r.tid, r.phase) for r in runs if r.note == "killed"}
    assert killed, "no handler was running at the kill"
    for tid, phase in killed:
        assert snap["busy"].get(tid) == ("Doing" if phase == "do" else "Undoing"), (tid, phase, snap["busy"])
    assert check_atomic(snap) == []
    assert len(snap["inflight"]) <= 8, "more tasks claimed than there are workers"
    committed = {k: json.loads(v) for k, v in snap["keys"].items()}
    assert CREATED_KEY in committed
    assert any(k.startswith("effect/") for k in committed)
    assert f"life/{proc.pid}" in committed

    # Resume in a new process: a crashed holder does not block the restart, and it finishes.
    proc2, _t1 = spawn(cmd, stderr, server)
    try:
        rc = proc2.wait(90)
    finally:
        if proc2.poll() is None:
            proc2.kill()
            proc2.wait()
    assert rc == 0, stderr.read_text(errors="replace")[-3000:]
    deaths = {**first, proc2.pid: time.time_ns()}

    statuses, info = final_statuses(db)
    assert len(statuses) == 20
    assert info["unready"] == []
    for _label, (_status, tasks) in statuses.items():
        assert set(tasks.values()) <= {"Done", "Undone", "Error", "Hold"}, tasks

    # The tasks left Doing/Undoing ran again, in the new process.
    lines = read_journal(journal)
    problems: list[str] = []
    runs = journal_runs(lines, deaths, problems)
    rerun = {(r.tid, r.phase) for r in runs if r.pid == proc2.pid}
    for tid, status in snap["busy"].items():
        assert (tid, "do" if status == "Doing" else "undo") in rerun, (tid, status)

    # Committed work is not lost.
    st = State.open(db)
    try:
        with st:
            for key, value in committed.items():
                assert st.get(key, None) == value, key
    finally:
        st.close()

    # No task ran twice at once, each finished task ran, edges were respected.
    check_runs(runs, deaths, statuses, info, problems)
    assert problems == []
    assert integrity(db) == []


@pytest.mark.timeout(120)
def test_kill_during_first_open_then_resume(tmp_path: Path, server: ForkServer) -> None:
    # The first open of a new file creates the schema (Alembic): a kill there must leave a
    # database the next process opens, migrates and runs to the end.
    for i, delay in enumerate((0.0, 0.002, 0.005, 0.01, 0.02)):
        db, journal, stderr = tmp_path / f"s{i}.db", tmp_path / f"j{i}", tmp_path / f"e{i}"
        cmd = child_command(db, journal, 11, 5, sleep_ms="1:2", timeout=60)
        proc, _t0 = spawn(cmd, stderr, server)
        tail = JournalTail(journal)
        marks: dict[str, int] = {}

        def started(tail: JournalTail = tail, marks: dict[str, int] = marks) -> bool:
            marks.update({f[4]: int(f[0]) for f in tail.lines() if f[2] == "-"})
            return "start" in marks

        _wait_for(started, proc)
        while time.time_ns() < marks["start"] + delay * 1e9:
            time.sleep(0.0002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tail.close()
        proc2, _t1 = spawn(cmd, stderr, server)
        try:
            rc = proc2.wait(60)
        finally:
            if proc2.poll() is None:
                proc2.kill()
                proc2.wait()
        assert rc == 0, stderr.read_text(errors="replace")[-3000:]
        statuses, info = final_statuses(db)
        assert len(statuses) == 5 and info["unready"] == []
        assert integrity(db) == []


#: The migrations that change nothing on SQLite (an index of PostgreSQL's own).
POSTGRESQL_ONLY = {"0012_hpg5_change_unready_index"}


def _pending(source: str) -> list[str]:
    """_pending are the revisions an upgrade from source to head runs."""
    from alembic.script import ScriptDirectory

    from engine.db import alembic_config

    return [s.revision for s in ScriptDirectory.from_config(alembic_config()).iterate_revisions("heads", source)]


def _upgrade_sources() -> list[Any]:
    """_upgrade_sources: Alembic's base, and every fixture that is older than head (the head's has nothing to do)."""
    return [pytest.param("base", id="base")] + [pytest.param(rev, id=rev) for rev in fixture_revisions()
                                                if rev != SCHEMA_HEAD]


@pytest.mark.heavy
@pytest.mark.timeout(300)
@pytest.mark.parametrize("source", _upgrade_sources())
def test_kill_at_each_statement_of_an_upgrade_then_open_again(source: str, tmp_path: Path) -> None:
    # A child process opens a copy of the source through State.open (which upgrades it to head) and
    # is SIGKILLed before each SQL statement of the open, before its commit, and after it: one copy
    # per kill. Each copy must then open, upgrade to head and read as it was made.
    src = tmp_path / "source.db"
    stored = None
    if source == "base":
        State.open(src).close()
        downgrade(src, "base")
    else:
        shutil.copyfile(fixture_path(source), src)
        stored = load_description(source)
    was = revision_of(src)
    assert was == ([] if source == "base" else [source])
    assert not list(tmp_path.glob("source.db-*"))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "tests.support.upgrade_killer", str(src), str(work)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    points = json.loads((work / "statements.json").read_text())
    # (0010_hw1b_status_check rewrites a table's definition in sqlite_master: a schema statement too. An
    # upgrade through PostgreSQL's own migrations only, POSTGRESQL_ONLY, moves alembic_version alone.)
    schema = ("CREATE ", "ALTER ", "DROP ", "UPDATE sqlite_master ")
    assert set(_pending(source)) <= POSTGRESQL_ONLY or any(p.startswith(schema) for p in points), \
        f"no schema statement seen during the upgrade: {points}"
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(points)
    assert [r["point"] for r in results if r["signal"] != signal.SIGKILL] == []

    fresh = tmp_path / "fresh.db"
    State.open(fresh).close()
    want = normalised_schema(fresh)
    left_at: Counter[tuple[str, ...]] = Counter()
    for r in results:
        db, point = Path(r["db"]), r["point"]
        left_at[tuple(revision_of(db))] += 1
        clock = FixedClock(datetime.fromisoformat(stored["clock"])) if stored else None
        st = State.open(db, clock=clock)
        try:
            if stored is not None:
                assert compare(stored["before"], describe(st, stored["vocabulary"])) == [], point
            else:
                with st:
                    assert st.changes() == [], point
                    st.new_change("install", "after the kill").add_task(st.new_task("download", "..."))
        finally:
            st.close()
        assert revision_of(db) == [SCHEMA_HEAD], point
        assert normalised_schema(db) == want, point
        assert rows(db, "PRAGMA integrity_check") == [("ok",)], point
    # Kills landed while the upgrade was not committed (the file stays at its old revision) and after.
    assert left_at[tuple(was)] >= 1 and left_at[(SCHEMA_HEAD,)] >= 1, left_at


def test_checks_find_overlaps_lost_runs_and_torn_writes() -> None:
    # The soak's checks themselves, on a made-up journal: they must be able to fail.
    lines = [f.split() for f in [
        "100 1 1 do start -", "200 1 1 do end ok",
        "150 1 2 do start -",  # started before task 1 (which it waits for) completed
        "300 1 3 do start -", "310 2 3 do start -", "320 2 3 do end ok",  # killed run of 1 lasts until 400
        "330 2 2 do end ok",  # an end without a start in process 2
    ]]
    deaths = {1: 400, 2: 500}
    problems: list[str] = []
    runs = journal_runs(lines, deaths, problems)
    assert any("end without a start" in p for p in problems)
    statuses = {"c1": ("Done", {"c1/t1": "Done", "c1/t2": "Done", "c1/t3": "Done", "c1/t4": "Undone"})}
    info = {"label": {"1": "c1/t1", "2": "c1/t2", "3": "c1/t3", "4": "c1/t4"},
            "kind": dict.fromkeys(("c1/t1", "c1/t2", "c1/t3", "c1/t4"), "w-undo"),
            "waits": {"2": ["1"]}, "effects": set(), "undo_effects": set()}
    check_runs(runs, deaths, statuses, info, problems)
    text = "\n".join(problems)
    assert "task 2 (c1/t2) is Done but no do run" in text
    assert "task 4 (c1/t4) is Undone but no undo run" in text
    assert "task 3 (c1/t3): do run in process 1 (killed) overlaps do run in process 2" in text
    assert "task 2 (c1/t2) started in process 1 before task 1" in text
    torn = check_atomic({"keys": {"effect/a": "{}"}, "self": {"a": "Doing", "b": "Done"}})
    assert len(torn) == 2
