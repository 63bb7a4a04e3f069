# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings packed: a batch's runs of a change are one row of task_timing_batches, the view task_timings shows a
row per run (engine.timings, engine/store/views.py, migration 0011_h27pack_timing_batches)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, pool

import engine.timings
from engine import State, TaskTiming
from engine.db import alembic_config
from engine.testing import FakeClock
from tests.fixtures.make_database import fixture_path
from tests.support import pgcluster

SQLITE3 = shutil.which("sqlite3")

#: Runs noted by hand: (task index, phase, attempt, how long in seconds); the outcome is the task's status.
MIXED = [(0, "do", 1, 0.25), (1, "do", 1, 0.000_001), (0, "do", 2, 1.5), (1, "undo", 1, 0.012_345_678),
         (2, "do", 3, 0)]
#: Runs every field of which but the task and times is shared (a batch writes them once).
ALIKE = [(0, "do", 1, 0.0001), (1, "do", 1, 0.0002), (2, "do", 1, 0.0003)]


def _change(st: State, n: int) -> tuple[str, list[int]]:
    with st:
        chg = st.new_change("test", "timed")
        tasks = [st.new_task("k", f"task {i}") for i in range(n)]
        for t in tasks:
            chg.add_task(t)
        return chg.id, [int(t.id) for t in tasks]


def _note(st: State, clock: FakeClock, tids: list[int], runs: list[tuple[int, str, int, float]]) -> None:
    """_note notes runs as the recorder does, a commit each, the clock moving on by 1.25 ms between them."""
    w = st._uow
    for i, phase, attempt, elapsed in runs:
        clock.advance(0.001_25)
        with st:
            rec = w.records.trec(tids[i])
            w.dirty_task(rec)
            w.timings.task_run(rec, phase, attempt, elapsed)


def _write(st: State) -> None:
    """_write makes the next commit write every run waiting, and commits."""
    st._uow.timings.write_all()
    with st:
        st.set("a commit", "that writes them")


def _timings(st: State, cid: str) -> list[TaskTiming]:
    with st:
        chg = st.change(cid)
        assert chg is not None
        return chg.timings()


@pytest.mark.parametrize("runs", [MIXED, ALIKE], ids=["mixed", "alike"])
def test_runs_read_from_their_batch_are_the_runs_noted(st: State, clock: FakeClock,
                                                        runs: list[tuple[int, str, int, float]]) -> None:
    """What a reader gets from the database (through the view, on either backend) is what it got while the runs
    waited in memory: task, kind, phase, attempt, outcome, start and duration to the microsecond, in order."""
    clock.set(datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))  # (runs on both sides of a year)
    cid, tids = _change(st, 3)
    _note(st, clock, tids, runs)
    waiting = _timings(st, cid)
    assert len(st._uow.store.task_timings(int(cid))) == 0
    _write(st)
    assert len(st._uow.store.task_timings(int(cid))) == len(runs)
    assert _timings(st, cid) == waiting
    assert [(int(t.task_id), t.phase, t.attempt) for t in waiting] == [(tids[i], p, a) for i, p, a, _ in runs]
    assert [t.duration for t in waiting] == [timedelta(seconds=e) for *_, e in runs]
    with st:
        assert len(st._uow.store.timing_batches(int(cid))) == 1  # (one row for the batch's runs of the change)


@pytest.mark.sqlite_only
@pytest.mark.skipif(SQLITE3 is None, reason="no sqlite3 shell installed")
def test_the_sqlite3_shell_shows_a_row_per_run(file_st: State, db_path: Path, clock: FakeClock) -> None:
    """The promise: every piece of state is a row anyone can read with the sqlite3 shell. SELECT * FROM
    task_timings shows one row per run, with the columns and values the engine's readers show."""
    st = file_st
    cid, tids = _change(st, 3)
    other, others = _change(st, 3)
    _note(st, clock, tids, MIXED)
    _note(st, clock, others, ALIKE)
    _write(st)
    assert SQLITE3 is not None
    out = subprocess.run([SQLITE3, "-readonly", "-header", "-separator", "|", str(db_path),
                          "SELECT * FROM task_timings ORDER BY batch_id, seq"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out[0] == "batch_id|seq|change_id|task_id|phase|attempt|outcome|started|duration"
    rows = [line.split("|") for line in out[1:]]
    expected = [(c, t) for c in (cid, other) for t in _timings(st, c)]
    assert len(rows) == len(MIXED) + len(ALIKE) == len(expected)
    for row, (c, t) in zip(rows, expected, strict=True):
        assert row[2:7] == [c, t.task_id, t.phase, str(t.attempt), t.outcome]
        assert row[7] == f"{t.started:%Y-%m-%dT%H:%M:%S.%f}Z"
        assert float(row[8]) == t.duration.total_seconds()
    # Two rows of the table hold them: one per change.
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT change_id FROM task_timing_batches ORDER BY id").fetchall() \
            == [(int(cid),), (int(other),)]
    finally:
        conn.close()


def test_a_task_keeps_its_newest_runs_in_the_database(st: State, clock: FakeClock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound: the newest TASK_RUNS_KEEP runs of each task are kept. A batch holding a run of a task's
    TASK_RUNS_KEEP-th attempt or later rewrites the change's batches without the older runs of its tasks,
    and deletes the batches left empty; the other tasks' runs stay."""
    monkeypatch.setattr(engine.timings, "TASK_RUNS_KEEP", 3)
    cid, tids = _change(st, 2)
    _note(st, clock, tids, [(1, "do", 1, 0.5)])
    for attempt in range(1, 8):  # a batch each
        _note(st, clock, tids, [(0, "do", attempt, 0.1 * attempt)])
        _write(st)
    kept = _timings(st, cid)
    assert [(int(t.task_id), t.attempt) for t in kept] == [(tids[1], 1), (tids[0], 5), (tids[0], 6), (tids[0], 7)]
    with st:
        assert len(st._uow.store.task_timings(int(cid))) == 4
        assert len(st._uow.store.timing_batches(int(cid))) == 4  # the first (the other task's run), 5, 6 and 7


def test_a_run_goes_to_its_change_whatever_the_cache_holds_and_none_without_one(st: State,
                                                                                clock: FakeClock) -> None:
    """The records of tasks leave the cache (ready history, past its limit) while their runs wait: the batch
    still goes to their change; a task in no change has no run kept."""
    cid, tids = _change(st, 2)
    with st:
        orphan = int(st.new_task("k", "in no change").id)
    _note(st, clock, [*tids, orphan], [(0, "do", 1, 0.001), (2, "do", 1, 0.002), (1, "do", 1, 0.003)])
    st._uow.records.clear()
    _write(st)
    assert not st._uow.timings.runs.held and not st._uow.timings.runs.todo  # (none waits: each noted its change)
    with st:
        assert [(int(t.task_id), t.duration) for t in _timings(st, cid)] == [
            (tids[0], timedelta(milliseconds=1)), (tids[1], timedelta(milliseconds=3))]
        assert len(st._uow.store.timing_batches(int(cid))) == 1


def test_a_pruned_change_takes_its_batches_with_it(st: State, clock: FakeClock) -> None:
    cid, tids = _change(st, 2)
    kept, others = _change(st, 1)
    _note(st, clock, tids, ALIKE[:2])
    _note(st, clock, others, ALIKE[:1])
    _write(st)
    with st:
        st._uow.store.begin_write()
        st._uow.store.delete_changes([int(cid)])
    with st:
        assert st._uow.store.timing_batches(int(cid)) == []
        assert len(st._uow.store.timing_batches(int(kept))) == 1


# -- an older database's rows move ------------------------------------------------------------------------------

OLD = "0010_hw1b_status_check"


def _old_runs(rows: list[tuple[object, ...]]) -> dict[int, list[tuple[str, str, int, str, str, timedelta]]]:
    """_old_runs are the rows of the old task_timings (change, task, phase, attempt, outcome, started, duration),
    oldest first, by change, as a TaskTiming shows them."""
    out: dict[int, list[tuple[str, str, int, str, str, timedelta]]] = {}
    for cid, tid, phase, attempt, outcome, started, duration in rows:
        out.setdefault(int(str(cid)), []).append((str(tid), str(phase), int(str(attempt)), str(outcome),
                                                   str(started), timedelta(seconds=float(str(duration)))))
    return out


def _shown(st: State, cid: int) -> list[tuple[str, str, int, str, str, timedelta]]:
    return [(t.task_id, t.phase, t.attempt, t.outcome, f"{t.started:%Y-%m-%dT%H:%M:%S.%f}Z", t.duration)
            for t in _timings(st, str(cid))]


_OLD_ROWS = ("SELECT t.change_id, r.task_id, r.phase, r.attempt, r.outcome, r.started, r.duration "
             "FROM task_timings r JOIN tasks t ON t.id = r.task_id ORDER BY r.id")


@pytest.mark.sqlite_only
def test_an_older_database_opens_with_its_runs_moved_into_batches(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copyfile(fixture_path(OLD), db)
    conn = sqlite3.connect(db)
    try:
        old = _old_runs(conn.execute(_OLD_ROWS).fetchall())
    finally:
        conn.close()
    assert sum(len(r) for r in old.values()) > 10 and len(old) > 3, "the fixture has too few runs to prove much"
    st = State.open(db)
    try:
        for cid, runs in old.items():
            assert _shown(st, cid) == runs
    finally:
        st.close()
    conn = sqlite3.connect(db)
    try:  # a row per stretch of runs of one change
        assert 0 < conn.execute("SELECT count(*) FROM task_timing_batches").fetchone()[0] < sum(map(len, old.values()))
    finally:
        conn.close()


def _alembic(cluster: pgcluster.Cluster, name: str, revision: str, verb: str = "upgrade") -> None:
    eng = create_engine(cluster.url(name), poolclass=pool.NullPool)
    try:
        with eng.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            getattr(command, verb)(cfg, revision)
            conn.commit()
    finally:
        eng.dispose()


def test_an_older_postgresql_database_opens_with_its_runs_moved_and_downgrades_back(
        pg_cluster: pgcluster.Cluster) -> None:
    name = pg_cluster.new_database()
    _alembic(pg_cluster, name, OLD)
    rows = [(1, 1, "do", 1, "retry", "2030-01-01T00:00:00.000001Z", 0.000_25),
            (2, 2, "do", 1, "done", "2030-01-01T00:00:01.000000Z", 1.25),
            (3, 1, "do", 2, "done", "2030-01-01T00:00:02.999999Z", 0.5),
            (4, 1, "undo", 1, "undone", "2030-01-01T00:00:03.500000Z", 3600.0)]
    with psycopg.connect(pg_cluster.dsn(name)) as conn:
        conn.execute("INSERT INTO changes (id, kind, summary, status, spawn_time) "
                     "VALUES (1, 'old', 'timed at 0010', 'Do', '2030-01-01T00:00:00.000000Z')")
        for tid in (1, 2):
            conn.execute("INSERT INTO tasks (id, change_id, kind, summary, status, spawn_time) "
                         "VALUES (%s, 1, 'k', 'task', 'Done', '2030-01-01T00:00:00.000000Z')", (tid,))
        conn.execute("UPDATE sequences SET last_id = 2 WHERE name = 'task'")
        conn.execute("UPDATE sequences SET last_id = 1 WHERE name = 'change'")
        for row in rows:
            conn.execute("INSERT INTO task_timings (id, task_id, phase, attempt, outcome, started, duration) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
        old = _old_runs(conn.execute(_OLD_ROWS).fetchall())
    st = State.open(url=pg_cluster.url(name))
    try:
        assert _shown(st, 1) == old[1]
    finally:
        st.close()
    _alembic(pg_cluster, name, OLD, "downgrade")
    with psycopg.connect(pg_cluster.dsn(name)) as conn:
        assert conn.execute("SELECT task_id, phase, attempt, outcome, started, duration FROM task_timings "
                            "ORDER BY id").fetchall() == [row[1:] for row in rows]


def test_a_batch_holds_its_runs_kinds(st: State, clock: FakeClock) -> None:
    """A batch keeps each run's task kind (what the tracing helper names its span by): one value for runs of one
    kind, an array in the runs' order otherwise, kept by the trim of a task's oldest runs."""
    with st:
        chg = st.new_change("test", "kinds")
        tasks = [st.new_task(kind, f"task {i}") for i, kind in enumerate(["k", "f\u00e6il", "k"])]
        for t in tasks:
            chg.add_task(t)
        cid, tids = chg.id, [int(t.id) for t in tasks]
    _note(st, clock, tids, MIXED)
    _write(st)
    _note(st, clock, tids, [(0, "do", 1, 0.1), (2, "do", 1, 0.2)])
    _write(st)
    with st:
        batches = [json.loads(text) for _, text in st._uow.store.timing_batches(int(cid))]
    assert [b["kind"] for b in batches] == [["k", "f\u00e6il", "k", "f\u00e6il", "k"], "k"]


def test_a_trimmed_batch_keeps_its_kinds(st: State, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trim that keeps a task's newest runs rewrites a batch with the kinds of the runs it keeps."""
    monkeypatch.setattr(engine.timings, "TASK_RUNS_KEEP", 2)
    with st:
        chg = st.new_change("test", "kinds")
        tasks = [st.new_task(kind, "t") for kind in ("a", "b")]
        for t in tasks:
            chg.add_task(t)
        cid, tids = chg.id, [int(t.id) for t in tasks]
    _note(st, clock, tids, [(0, "do", 1, 0.1), (1, "do", 1, 0.1), (0, "do", 2, 0.1)])
    _write(st)
    _note(st, clock, tids, [(0, "do", 3, 0.1)])
    _write(st)
    with st:
        batches = [json.loads(text) for _, text in st._uow.store.timing_batches(int(cid))]
    assert [(b["task_id"], b["kind"]) for b in batches] == [([tids[1], tids[0]], ["b", "a"]), ([tids[0]], "a")]
