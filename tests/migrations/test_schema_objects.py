# SPDX-License-Identifier: GPL-3.0-or-later
"""Schema objects the engine relies on are checked at open and repaired; no statement needs an index.

A database at the head revision that lost an index (``DROP INDEX
ix_tasks_runnable`` in a ``sqlite3`` shell) gets it back when a writer
opens it (an index holds no data: nothing is lost); a lost view or
constraint is reported in one line. An index dropped under a running
writer slows its passes down but never wedges them. ``overlord db check``
reports what is missing and ``overlord db upgrade`` repairs it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import Overlord, State, Status


def objects(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def shell(db: Path, *sql: str) -> None:
    """shell runs statements the way a user's sqlite3 shell would, beside the engine."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for s in sql:
            conn.execute(s)
    finally:
        conn.close()


def new_database(db: Path) -> None:
    st = State.open(db)
    with st:
        chg = st.new_change("install", "before the index went")
        chg.add_task(st.new_task("step", "a step"))
    st.close()


def run_all(o: Overlord) -> None:
    o.task_runner.add_handler("step", lambda task, tomb: None)
    o.settle(10)


def test_a_missing_index_is_recreated_at_open_and_the_rest_reported_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "state.db"
    new_database(db)
    shell(db, "DROP INDEX ix_tasks_runnable", "DROP INDEX ix_changes_unclean", "DROP VIEW v_changes",
          "DROP VIEW task_timings")
    with caplog.at_level(logging.WARNING, logger="engine"):
        o = Overlord(db)
    try:
        assert {"ix_tasks_runnable", "ix_changes_unclean", "v_changes", "task_timings"} <= objects(db)
        lines = [r.getMessage() for r in caplog.records]
        assert [m for m in lines if "recreated" in m] == [
            f"state database {db} lacked the indexes ix_changes_unclean, ix_tasks_runnable of its schema: recreated",
            f"state database {db} lacked the views task_timings, v_changes of its schema: recreated"]
        assert [m for m in lines if "differs" in m] == []
        run_all(o)
        with o.state:
            assert [c.status for c in o.state.changes()] == [Status.DONE]
            assert [t.outcome for t in o.state.changes()[0].timings()] == ["done"]
    finally:
        o.stop()
        o.state.close()


def test_an_index_dropped_under_a_running_writer_does_not_wedge_its_passes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    new_database(db)
    o = Overlord(db)
    try:
        shell(db, "DROP INDEX ix_tasks_runnable", "DROP INDEX ix_tasks_unready", "DROP INDEX ix_changes_unclean")
        run_all(o)
        with o.state:
            chg = o.state.new_change("install", "after the index went")
            chg.add_task(o.state.new_task("step", "another step"))
        run_all(o)
        with o.state:
            assert [c.status for c in o.state.changes()] == [Status.DONE, Status.DONE]
    finally:
        o.stop()
        o.state.close()


def test_a_reader_reports_a_missing_index_in_one_line_and_reads(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "state.db"
    new_database(db)
    shell(db, "DROP INDEX ix_tasks_runnable")
    with caplog.at_level(logging.WARNING, logger="engine"):
        st = State.open(db, read_only=True)
    try:
        with st:
            assert [c.summary for c in st.changes()] == ["before the index went"]
    finally:
        st.close()
    assert [r.getMessage() for r in caplog.records if "differs" in r.getMessage()] == [
        f"state database {db} differs from the schema the engine needs: index ix_tasks_runnable is missing "
        "(opening it for writing recreates a missing index or view)"]
    assert "ix_tasks_runnable" not in objects(db)  # a reader writes nothing


def test_db_check_reports_and_db_upgrade_repairs_a_missing_index(tmp_path: Path) -> None:
    from overlord.cli import cli

    db = tmp_path / "state.db"
    new_database(db)
    shell(db, "DROP INDEX ix_tasks_runnable", "DROP VIEW v_changes")
    checked = CliRunner().invoke(cli, ["db", "check", "--db", str(db)])
    assert checked.exit_code == 1, checked.output
    assert "index ix_tasks_runnable is missing;" in checked.output
    assert "view v_changes is missing" in checked.output
    upgraded = CliRunner().invoke(cli, ["db", "upgrade", "--db", str(db)])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"Recreated in {db}: index ix_tasks_runnable, view v_changes." in upgraded.output
    assert "ix_tasks_runnable" in objects(db)
    checked = CliRunner().invoke(cli, ["db", "check", "--db", str(db)])
    assert checked.exit_code == 0, checked.output
    assert "schema objects" not in checked.output


def test_on_postgresql_a_missing_index_is_recreated_at_open_and_the_rest_reported(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import create_engine, inspect

    State.open(url=pg_url).close()
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_tasks_runnable")
            conn.exec_driver_sql("DROP VIEW v_changes")
        with caplog.at_level(logging.WARNING, logger="engine"):
            st = State.open(url=pg_url, read_only=True)  # a reader says so, and repairs nothing
            st.close()
            st = State.open(url=pg_url)
            st.close()
        with engine.connect() as conn:
            assert "ix_tasks_runnable" in {ix["name"] for ix in inspect(conn).get_indexes("tasks")}
    finally:
        engine.dispose()
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if "recreated" in m and "lacked" in m] == [
        f"state database {st.path} lacked the index ix_tasks_runnable of its schema: recreated",
        f"state database {st.path} lacked the view v_changes of its schema: recreated"]
    assert sum("view v_changes is missing" in m for m in lines) == 1  # the reader's line
