# SPDX-License-Identifier: GPL-3.0-or-later
"""History does not weigh: 100,000 finished tasks cost nothing until asked for.

The history is written straight into a database file created by State.open
(one transaction, executemany), consistent with what the engine would have
written: changes Done and clean with a ready time, tasks Done and clean, the
sequences moved on. Then opening loads no task, lookups load exactly what
was asked, a change's status comes from its own tasks, an ensure pass reads
no history, and every lookup the engine runs uses an index.

The State's private caches (st._uow.records.tasks, st._uow.records.changes) are peeked at: they are
what "loaded" means.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import State, Status, Task, TaskRunner
from engine.testing import FakeClock
from engine.tomb import Tomb

N_CHANGES = 1000
PER_CHANGE = 100
N_TASKS = N_CHANGES * PER_CHANGE
T0 = datetime(2029, 6, 1, tzinfo=UTC)
ERROR_CHANGE = N_CHANGES  # the last history change failed: one Error task, one Hold task

# A full scan is fine on these small tables, and on partial indexes that hold
# only live rows; anything else must be a SEARCH.
SMALL_TABLES = {"sequences", "state_data", "warnings", "alembic_version", "sqlite_master", "sqlite_schema"}
PARTIAL_INDEXES = {"ix_tasks_unready", "ix_tasks_runnable", "ix_changes_unready", "ix_changes_unclean",
                   "ix_tasks_orphan", "ix_change_affects_queued"}


def _text(when: datetime) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}Z"


def _tid(cid: int, k: int) -> int:
    return (cid - 1) * PER_CHANGE + k + 1


def write_history(path: Path) -> None:
    """write_history inserts N_CHANGES finished changes of PER_CHANGE tasks each, in one transaction."""
    spawn, ready = _text(T0), _text(T0 + timedelta(minutes=5))
    changes, tasks, edges, lanes, log = [], [], [], [], []
    for cid in range(1, N_CHANGES + 1):
        status = "Error" if cid == ERROR_CHANGE else "Done"
        changes.append((cid, "refresh", f"Refresh {cid}", status, None, 1, "{}", spawn, ready))
        for k in range(PER_CHANGE):
            tid = _tid(cid, k)
            tstatus, blockers, level, message = "Done", 0, "INFO", f"done {tid}"
            if cid == ERROR_CHANGE and k == PER_CHANGE - 2:
                tstatus, level, message = "Error", "ERROR", "checksum mismatch"
            elif cid == ERROR_CHANGE and k == PER_CHANGE - 1:
                tstatus, blockers = "Hold", 1  # waits for the Error task
            tasks.append((tid, cid, "hist", f"Step {k} of {cid}", tstatus, "Done", 1, "{}", spawn, ready, 0.01,
                          blockers))
            if k > 0:
                edges.append((tid, tid - 1))
            lanes.append((tid, cid))
            log.append((tid, ready, level, message))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO changes (id, kind, summary, status, explicit_status, clean, data, spawn_time, ready_time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", changes)
        conn.executemany(
            "INSERT INTO tasks (id, change_id, kind, summary, status, waited_status, clean, data, spawn_time, "
            "ready_time, doing_time, blockers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tasks)
        conn.executemany("INSERT INTO task_dependencies (task_id, wait_task_id) VALUES (?, ?)", edges)
        conn.executemany("INSERT INTO task_lanes (task_id, lane) VALUES (?, ?)", lanes)
        conn.executemany("INSERT INTO task_log (task_id, time, level, message) VALUES (?, ?, ?, ?)", log)
        conn.executemany("UPDATE sequences SET last_id = ? WHERE name = ?",
                         [(N_CHANGES, "change"), (N_TASKS, "task"), (N_CHANGES, "lane")])
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "state.db"
    State.open(path, clock=FakeClock(T0)).close()  # the schema, through the engine
    write_history(path)
    return path


@pytest.fixture
def hist(history_db: Path, tmp_path: Path) -> Path:
    """hist is a private copy of the history database (tests may write to it)."""
    copy = tmp_path / "state.db"
    copy.write_bytes(history_db.read_bytes())
    return copy


@pytest.fixture
def hst(hist: Path) -> Iterator[State]:
    state = State.open(hist, clock=FakeClock(T0 + timedelta(days=1)))
    yield state
    state.close()


class Tracer:
    """Tracer records the SQL a State runs on its connection."""

    def __init__(self, st: State) -> None:
        self.raw: sqlite3.Connection = st._store.raw
        self.statements: list[str] = []

    def __enter__(self) -> Tracer:
        self.raw.set_trace_callback(self.statements.append)
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.set_trace_callback(None)


def _schema_variants(path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    """_schema_variants yields empty in-memory copies of the schema, indexes created in every order.

    Without statistics SQLite's plans do not depend on the data, but where
    two plans cost the same the order in which indexes were created decides;
    State.open creates them in an order that varies from process to process
    (SQLAlchemy keeps a table's indexes in a set). So each table's indexes
    are tried in every order.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").fetchall()
    finally:
        conn.close()
    tables = [sql for typ, _, _, sql in objects if typ == "table"]
    indexes: dict[str, list[tuple[str, str]]] = {}
    for typ, name, tbl, sql in objects:
        if typ == "index":
            indexes.setdefault(tbl, []).append((name, sql))
    orders: list[tuple[str, dict[str, list[tuple[str, str]]]]] = [("as in the file", indexes)]
    for tbl, own in indexes.items():
        for perm in itertools.permutations(own):
            orders.append((f"{tbl} indexes created in the order {[n for n, _ in perm]}", {**indexes, tbl: list(perm)}))
    for label, order in orders:
        mem = sqlite3.connect(":memory:")
        for sql in tables:
            mem.execute(sql)
        for own in order.values():
            for _, sql in own:
                mem.execute(sql)
        try:
            yield label, mem
        finally:
            mem.close()


def full_scans(path: Path, statements: list[str]) -> list[str]:
    """full_scans returns every statement whose plan scans a big table without a partial index."""
    bad: dict[str, None] = {}
    sqls = [sql for sql in dict.fromkeys(statements) if re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", sql, re.I)]
    for label, conn in _schema_variants(path):
        for sql in sqls:
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
                detail = str(row[3])
                m = re.match(r"SCAN (\S+)", detail)
                if m is None or m.group(1) in SMALL_TABLES or detail.startswith("SCAN CONSTANT ROW"):
                    continue
                used = re.search(r"USING (?:COVERING )?INDEX (\w+)", detail)
                if used is None or used.group(1) not in PARTIAL_INDEXES:
                    bad[f"{detail} ({label})   <-   {sql}"] = None
    return list(bad)


def _noop(task: Task, tomb: Tomb) -> None:
    return None


# -- opening and looking up ----------------------------------------------------------


def test_history_is_there(hist: Path) -> None:
    conn = sqlite3.connect(hist)
    try:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == N_TASKS
        assert conn.execute("SELECT count(*) FROM changes WHERE ready_time IS NULL OR clean = 0").fetchone()[0] == 0
    finally:
        conn.close()


def test_opening_loads_no_task(hist: Path) -> None:
    st = State.open(hist, clock=FakeClock(T0 + timedelta(days=1)))
    try:
        with Tracer(st) as tr:
            assert len(st._uow.records.tasks) == 0
            with st:
                chg = st.change("500")
                assert chg is not None
                assert chg.status is Status.DONE
                assert chg.is_ready() and chg.is_clean()
            assert len(st._uow.records.tasks) == 0, "looking at a change loaded tasks"
            assert set(st._uow.records.changes) <= {500}
            with st:
                assert st.change("999999") is None
            assert len(st._uow.records.tasks) == 0
        assert full_scans(hist, tr.statements) == []
        with st:
            assert st.task_count() == N_TASKS  # counting reads them all, but loads none
        assert len(st._uow.records.tasks) == 0
    finally:
        st.close()


def test_change_and_task_load_exactly_what_was_asked(hst: State, hist: Path) -> None:
    with Tracer(hst) as tr:
        with hst:
            t = hst.task("12345")
            assert t is not None
            assert set(hst._uow.records.tasks) == {12345}
            assert (t.kind, t.status, t.summary) == ("hist", Status.DONE, "Step 44 of 124")
            assert t.change() == hst.change("124")
            assert set(hst._uow.records.tasks) == {12345}
            assert t.log() == ["2029-06-01T00:05:00Z INFO done 12345"]
            assert t.lanes() == [124]
            assert [w.id for w in t.wait_tasks()] == ["12344"]
            assert [h.id for h in t.halt_tasks()] == ["12346"]
            assert set(hst._uow.records.tasks) <= {12344, 12345, 12346}
        with hst:
            chg = hst.change("7")
            assert chg is not None
            tasks = chg.tasks()
            assert [x.id for x in tasks] == [str(_tid(7, k)) for k in range(PER_CHANGE)]
            assert set(hst._uow.records.tasks) - {12344, 12345, 12346} == {_tid(7, k) for k in range(PER_CHANGE)}
            assert set(hst._uow.records.changes) <= {7, 124}
    assert full_scans(hist, tr.statements) == []


def test_change_status_comes_from_its_own_tasks(hst: State) -> None:
    with hst:
        failed = hst.change(str(ERROR_CHANGE))
        assert failed is not None
        assert failed.status is Status.ERROR
        assert len(hst._uow.records.tasks) == 0, "the status was computed by loading tasks"
        err = failed.err()
        assert err is not None and "checksum mismatch" in str(err)
    with hst:
        live = hst.new_change("install", "Install live")
        a = hst.new_task("live", "First")
        b = hst.new_task("live", "Second")
        b.wait_for(a)
        live.add_task(a)
        live.add_task(b)
        assert live.status is Status.DO
        live_id = live.id
    with hst:
        chg = hst.change(live_id)
        assert chg is not None
        assert chg.status is Status.DO
        assert chg.id == str(N_CHANGES + 1), "the change sequence goes on after the history"
        assert a.id == str(N_TASKS + 1)
        a.set_status(Status.DONE)
        assert chg.status is Status.DO
        b.set_status(Status.DONE)
        assert chg.status is Status.DONE
        assert chg.is_ready()
    with hst:
        assert hst.change("1").status is Status.DONE  # type: ignore[union-attr]
    conn = sqlite3.connect(hst.path)
    try:
        assert conn.execute("SELECT status FROM changes WHERE id = ?", (int(live_id),)).fetchone() == ("Done",)
        assert conn.execute("SELECT count(*) FROM changes WHERE status = 'Done'").fetchone()[0] == N_CHANGES
    finally:
        conn.close()


def test_an_ensure_pass_reads_no_history(hist: Path) -> None:
    clock = FakeClock(T0 + timedelta(days=1))
    st = State.open(hist, clock=clock)
    try:
        with st:
            live = st.new_change("install", "Install live")
            a = st.new_task("live", "First")
            b = st.new_task("live", "Second")
            b.wait_for(a)
            live.add_task(a)
            live.add_task(b)
            live_ids = {int(a.id), int(b.id)}
            live_id = live.id
    finally:
        st.close()
    # A restart: a new State, a runner that knows the history's kind too.
    st = State.open(hist, clock=clock)
    runner = TaskRunner(st)
    runner.add_handler("live", _noop)
    runner.add_handler("hist", _noop)
    try:
        with Tracer(st) as tr:
            for _ in range(10):
                runner.ensure()
                runner.wait()
                with st:
                    chg = st.change(live_id)
                    assert chg is not None
                    if chg.is_ready() and chg.is_clean():
                        break
        with st:
            assert chg.status is Status.DONE
            assert chg.is_clean()
        assert set(st._uow.records.tasks) <= live_ids, "an ensure pass loaded history"
        assert set(st._uow.records.changes) <= {int(live_id)}, "an ensure pass loaded history"
    finally:
        runner.stop()
        st.close()
    assert full_scans(hist, tr.statements) == []


# -- query plans of the engine's lookups ----------------------------------------------


LOOKUPS: dict[str, Callable[[Any], object]] = {
    "started_tasks": lambda s: s.started_tasks(0, 100),
    "tasks_in_status Abort": lambda s: s.tasks_in_status("Abort", 0, 100),
    "runnable_do": lambda s: s.runnable_do(0, 100),
    "runnable_undo": lambda s: s.runnable_undo(0, 100),
    "unclean_changes": lambda s: s.unclean_changes(),
    "unclean_changes(limit=1)": lambda s: s.unclean_changes(limit=1),
    "unclean_tasks": lambda s: s.unclean_tasks(500),
    "tasks_of_change": lambda s: s.tasks_of_change(500),
    "task_ids_of_change": lambda s: s.task_ids_of_change(500),
    "status_counts": lambda s: s.status_counts(500),
    "each_task_of_change": lambda s: list(s.each_task_of_change(500)),
    "blocked_changes": lambda s: s.blocked_changes(),
    "sequences": lambda s: s.sequences(),
    "task_rows one": lambda s: s.task_rows([12345]),
    "task_rows many": lambda s: s.task_rows([12345, 23456, 34567]),
    "change_row": lambda s: s.change_row(500),
    "change_rows": lambda s: s.change_rows([1, 500, 1000]),
    "edges_touching": lambda s: s.edges_touching([12345, 23456]),
    "halted_by": lambda s: s.halted_by([12345, 23456]),
    "lanes": lambda s: s.lanes([12345, 23456]),
    "log_lines": lambda s: s.log_lines(12345, 10),
    "stale_blockers": lambda s: s.stale_blockers(),
    "state_value": lambda s: s.state_value("config"),
}


@pytest.fixture(scope="module")
def ro_st(history_db: Path) -> Iterator[State]:
    """ro_st is a State on the shared history database, for lookups that write nothing."""
    state = State.open(history_db, clock=FakeClock(T0 + timedelta(days=1)))
    yield state
    state.close()


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_engine_lookup_uses_an_index(ro_st: State, history_db: Path, name: str) -> None:
    with Tracer(ro_st) as tr:
        LOOKUPS[name](ro_st._store)
    assert tr.statements, f"{name} ran no SQL"
    assert full_scans(history_db, tr.statements) == []


def test_viewing_a_change_loads_the_graph_of_its_tasks_in_one_go(tmp_path: Path, clock: FakeClock) -> None:
    """A view of a change (every task's lanes and edges, as the daemon's API shows them) is not one query per task."""
    db = tmp_path / "state.db"
    st = State.open(db, clock=clock)
    try:
        with st:
            chg = st.new_change("view", "200 chained tasks in two lanes")
            lanes = (st.new_lane(), st.new_lane())
            prev = None
            for i in range(200):
                t = st.new_task("k", f"task {i}")
                t.join_lane(lanes[i % 2])
                if prev is not None:
                    t.wait_for(prev)
                chg.add_task(t)
                prev = t
            cid = chg.id
    finally:
        st.close()
    st = State.open(db, clock=clock)
    try:
        with Tracer(st) as tr, st:
            chg = st.change(cid)
            assert chg is not None
            view = [(t.id, t.lanes(), [w.id for w in t.wait_tasks()], len(t.halt_tasks())) for t in chg.tasks()]
        assert len(view) == 200 and view[1][2] == [view[0][0]]
        selects = [s for s in tr.statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) < 40, f"{len(selects)} queries to view 200 tasks"
    finally:
        st.close()
