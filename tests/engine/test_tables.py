# SPDX-License-Identifier: GPL-3.0-or-later
"""Tables of your own: a manager's table on engine.metadata, its rows written in the state's transaction."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, String, Table, Text, func, select

import engine
from engine import DatabaseBusyError, ReadOnlyStateError, State, TableRows
from engine.testing import FakeClock


def declare_notes() -> Table:
    """declare_notes declares a manager's table on engine.metadata (take it off after: engine.metadata.remove)."""
    return Table("test_notes", engine.metadata,
                 Column("book", String(16), primary_key=True), Column("page", Integer, primary_key=True),
                 Column("text", Text, nullable=False), Column("stars", Integer))


@pytest.fixture
def notes() -> Iterator[Table]:
    """notes is a manager's table, declared on engine.metadata for the test (and taken off it after)."""
    table = declare_notes()
    yield table
    engine.metadata.remove(table)


@pytest.fixture
def backend_notes(backend: str, request: pytest.FixtureRequest) -> Iterator[Table]:
    """backend_notes is notes for a test of either backend.

    On PostgreSQL the session's template database is made first, without it: each test's database is a
    copy of the template, and a writer creates the table it lacks at open.
    """
    if backend == "postgresql":
        request.getfixturevalue("pg_cluster")
    table = declare_notes()
    yield table
    engine.metadata.remove(table)


@pytest.fixture
def notes_st(backend_notes: Table, backend: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[State]:
    """notes_st is a State of the test's backend on a database made while notes was declared."""
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        state = State.open(url=url, clock=clock)
    else:
        state = State.open(clock=clock)
    yield state
    state.close()


def fresh_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_put_get_delete_and_select(backend_notes: Table, notes_st: State) -> None:
    st, notes = notes_st, backend_notes
    with st:
        rows = st.table(notes)
        assert isinstance(rows, TableRows) and st.table(notes) is rows  # one per unit of work's host
        assert rows.get("a", 1) is None
        rows.put({"book": "a", "page": 1, "text": "one", "stars": 3})
        rows.put({"book": "a", "page": 2, "text": "two"})
        assert dict(rows.get("a", 1) or {}) == {"book": "a", "page": 1, "text": "one", "stars": 3}
        # select writes what is pending first (autoflush), then asks the database.
        found = rows.select(select(notes.c.page, notes.c.text).where(notes.c.book == "a").order_by(notes.c.page))
        assert [dict(r) for r in found] == [{"page": 1, "text": "one"}, {"page": 2, "text": "two"}]
    with st:
        rows = st.table(notes)
        rows.put({"book": "a", "page": 1, "stars": 5})  # only the given columns change
        rows.delete("a", 2)
        assert rows.get("a", 2) is None
    with st:
        rows = st.table(notes)
        assert dict(rows.get("a", 1) or {}) == {"book": "a", "page": 1, "text": "one", "stars": 5}
        assert rows.get("a", 2) is None
        assert rows.select(select(func.count().label("n")).select_from(notes))[0]["n"] == 1
        assert [r["page"] for r in rows.select(select(notes).where(notes.c.page.in_([1, 2, 3])))] == [1]


def test_rows_commit_with_the_state_and_roll_back_with_it(backend_notes: Table, notes_st: State) -> None:
    st, notes = notes_st, backend_notes
    with pytest.raises(RuntimeError), st:
        st.table(notes).put({"book": "a", "page": 1, "text": "lost"})
        st.set("other", 1)
        st.new_change("kind", "a change of the same unit")
        raise RuntimeError("boom")
    with st:
        assert st.table(notes).get("a", 1) is None
        assert st.get("other", None) is None and st.changes() == []
        st.table(notes).put({"book": "a", "page": 1, "text": "kept"})
        st.set("other", 2)
    with st:
        assert st.table(notes).get("a", 1)["text"] == "kept"  # type: ignore[index]
        assert st.get("other") == 2


def test_one_transaction_with_the_state_on_sqlite(notes: Table, db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    try:
        with st:
            st.table(notes).put({"book": "b", "page": 7, "text": "seven"})
            st.set("marker", "x")
            # Nothing is written before the unit of work commits.
            assert fresh_rows(db_path, "SELECT count(*) FROM test_notes") == [(0,)]
    finally:
        st.close()
    assert fresh_rows(db_path, "SELECT book, page, text, stars FROM test_notes") == [("b", 7, "seven", None)]


def test_rows_kept_through_a_busy_commit_are_written_by_the_next(notes: Table, db_path: Path,
                                                                 clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock, busy_timeout=0.05, busy_budget=0.2)
    try:
        shell = sqlite3.connect(db_path, isolation_level=None)
        shell.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusyError), st:
            st.table(notes).put({"book": "c", "page": 1, "text": "kept in memory"})
        shell.execute("ROLLBACK")
        shell.close()
        with st:
            st.set("next", True)
    finally:
        st.close()
    assert fresh_rows(db_path, "SELECT text FROM test_notes") == [("kept in memory",)]


def test_a_read_only_state_reads_and_refuses_writes(notes: Table, db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        st.table(notes).put({"book": "d", "page": 1, "text": "read me"})
    st.close()
    reader = State.open(db_path, clock=clock, read_only=True)
    try:
        with reader:
            rows = reader.table(notes)
            assert rows.get("d", 1)["text"] == "read me"  # type: ignore[index]
            assert [r["text"] for r in rows.select(select(notes))] == ["read me"]
            with pytest.raises(ReadOnlyStateError, match="cannot write to table test_notes"):
                rows.put({"book": "d", "page": 2, "text": "no"})
            with pytest.raises(ReadOnlyStateError, match="cannot delete from table test_notes"):
                rows.delete("d", 1)
    finally:
        reader.close()


def test_a_table_declared_after_the_database_was_made_is_created_by_a_writer(
        backend: str, db_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture,
        request: pytest.FixtureRequest) -> None:
    def open_state(**kw: Any) -> State:
        if backend == "postgresql":
            return State.open(url=request.getfixturevalue("pg_url"), clock=clock, **kw)
        return State.open(db_path, clock=clock, **kw)

    open_state().close()  # no test_late_notes yet
    table = Table("test_late_notes", engine.metadata, Column("book", String(16), primary_key=True),
                  Column("text", Text, nullable=False))
    try:
        caplog.set_level(logging.INFO, logger="engine.db")
        st = open_state()
        try:
            with st:
                st.table(table).put({"book": "e", "text": "new"})
        finally:
            st.close()
        assert "lacked the manager table test_late_notes: created" in caplog.text
        st = open_state(read_only=True)
        try:
            with st:
                assert dict(st.table(table).get("e") or {}) == {"book": "e", "text": "new"}
        finally:
            st.close()
    finally:
        engine.metadata.remove(table)


def test_what_is_refused(backend_notes: Table, st: State) -> None:
    notes = backend_notes
    other = Table("not_declared", engine.metadata.__class__(), Column("id", Integer, primary_key=True))
    with pytest.raises(RuntimeError, match="lock"):
        st.table(notes).get("a", 1)
    with st:
        with pytest.raises(ValueError, match=r"cannot use table 'not_declared': declare it on engine\.metadata"):
            st.table(other)
        with pytest.raises(ValueError, match=r"cannot use table 'changes': it is one of the engine's own tables"):
            st.table(engine.metadata.tables["changes"])
        rows = st.table(notes)
        with pytest.raises(ValueError, match=r"cannot use key \('a',\) of table test_notes: its primary key is "
                                             r"\(book, page\)"):
            rows.get("a")
        with pytest.raises(ValueError, match="cannot write to table test_notes: it has no column colour"):
            rows.put({"book": "a", "page": 1, "text": "t", "colour": "red"})
        with pytest.raises(ValueError, match="the row lacks its primary key page"):
            rows.put({"book": "a", "text": "t"})
        tasks = engine.metadata.tables["tasks"]
        with pytest.raises(ValueError, match="cannot select from table tasks: it is one of the engine's own tables"):
            rows.select(select(notes.c.book).where(notes.c.page.in_(select(tasks.c.id))))
        with pytest.raises(ValueError, match=r"column 1 of the statement has no name \(give it a .label\(\)\)"):
            rows.select(select(func.count()).select_from(notes))
