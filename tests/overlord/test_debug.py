# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord debug state`, `graph` and `db`: reading a database file without a daemon, never writing to it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import State, Status
from overlord.cli import cli
from tests.support.daemon import DaemonProcess

STATUSES = [s for s in Status if s is not Status.DEFAULT]


def make_db(path: Path) -> Path:
    """make_db writes a database with a task in every status, lanes, edges, and text that looks like markup."""
    st = State.open(path)
    with st:
        chg = st.new_change("install", 'Install "[bold]x[/]" \\ [link=y]')
        lane = st.new_lane()
        prev = None
        for status in STATUSES:
            t = st.new_task(status.value.lower(), f"Task in {status.value} [/] [")
            if status is Status.WAIT:
                t.set_to_wait(Status.DONE)
            else:
                t.set_status(status)
            if status is Status.ERROR:
                t.errorf("broke on [red]purpose")
            else:
                t.logf("line of %s", status.value)
            if prev is not None:
                t.wait_for(prev)
            if status in (Status.DONE, Status.DOING):
                t.join_lane(lane)
            chg.add_task(t)
            prev = t
    st.close()
    return path


def snapshot_of(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_debug_state_reads_without_writing(tmp_path: Path) -> None:
    db = make_db(tmp_path / "state.db")
    before = snapshot_of(tmp_path)
    code, out, err = invoke("debug", "state", "--db", str(db))
    assert code == 0, err
    assert 'Install "[bold]x[/]" \\ [link=y]' in out and "Abort" in out
    code, out, err = invoke("debug", "state", "--db", str(db), "--change", "1")
    assert code == 0, err
    for status in STATUSES:
        assert f"Task in {status.value} [/] [" in out
    assert "ERROR broke on [red]purpose" in out
    code, out, err = invoke("debug", "state", "--db", str(db), "--json")
    [info] = json.loads(out)
    assert [t["status"] for t in info["tasks"]] == [s.value for s in STATUSES]
    assert snapshot_of(tmp_path) == before  # not a byte written, no -wal or -shm left behind


def test_debug_state_json_is_the_apis(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Compare", {"kind": "quick", "summary": "One"}, {"kind": "fail", "summary": "Two"},
                            **{"snap-names": ["foo"]})
    daemon.wait_change(cid, lambda c: c["ready"])
    with daemon.client() as c:
        api = c.change(cid)
    code, out, err = invoke("debug", "state", "--state-dir", str(daemon.state_dir), "--change", cid, "--json")
    assert code == 0, err
    assert json.loads(out) == api  # the same shape, read from the live database file


def test_dot_graph_has_edges_lanes_and_colours(tmp_path: Path) -> None:
    db = make_db(tmp_path / "state.db")
    code, out, err = invoke("debug", "state", "--db", str(db), "--dot", "1")
    assert code == 0, err
    assert out.startswith('digraph "change 1" {')
    assert 'label="Change 1 (install): Install \\"[bold]x[/]\\" \\\\ [link=y] - Abort";' in out
    assert 'subgraph "cluster_lane_1" {' in out and out.count('"t') >= 2 * len(STATUSES) - 1
    assert '"t1" -> "t2";' in out and 'fillcolor="#f4a7a7"' in out  # Error is red
    same = invoke("graph", "1", "--db", str(db))[1]
    assert same == out


def test_graph_svg_needs_dot(tmp_path: Path) -> None:
    db = make_db(tmp_path / "state.db")
    empty = tmp_path / "bin"
    empty.mkdir()
    code, _, err = invoke("graph", "1", "--db", str(db), "--svg", str(tmp_path / "g.svg"), env={"PATH": str(empty)})
    assert code == 1 and err.startswith("error: cannot render the graph: Graphviz's 'dot' program is not installed")
    assert not (tmp_path / "g.svg").exists()
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed: the SVG itself is not checked here")
    code, _, err = invoke("graph", "1", "--db", str(db), "--svg", str(tmp_path / "g.svg"))
    assert code == 0, err
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "lane 1" in svg and "Task in Done [/] [" in svg


@pytest.mark.parametrize("args", [["debug", "state"], ["db", "current"], ["db", "check"]])
def test_missing_or_foreign_files_are_refused(tmp_path: Path, args: list[str]) -> None:
    code, _, err = invoke(*args, "--db", str(tmp_path / "none.db"))
    assert (code, err) == (1, f"error: cannot read state database {tmp_path / 'none.db'}: no such file\n")
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    code, _, err = invoke(*args, "--db", str(other))
    assert (code, err) == (1, f"error: cannot read state database {other}: it is not a state database\n")


def test_db_current_history_check(tmp_path: Path) -> None:
    from engine.db import SCHEMA_HEAD

    db = make_db(tmp_path / "state.db")
    before = snapshot_of(tmp_path)
    assert invoke("db", "current", "--db", str(db))[1] == f"{SCHEMA_HEAD} (head)\n"
    assert json.loads(invoke("db", "current", "--db", str(db), "--json")[1])["is-head"] is True
    assert f"-> {SCHEMA_HEAD} (head, current):" in invoke("db", "history", "--db", str(db))[1]
    code, out, _ = invoke("db", "check", "--db", str(db))
    assert code == 0 and out.splitlines() == ["integrity: ok", f"schema revision: {SCHEMA_HEAD} (head)",
                                              "schema matches the models"]
    assert snapshot_of(tmp_path) == before
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX ix_tasks_change_id")
    conn.commit()
    conn.close()
    code, out, _ = invoke("db", "check", "--db", str(db), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and "ix_tasks_change_id" in report["schema-differences"][0]


def test_db_check_finds_rows_that_break_a_check_constraint(tmp_path: Path) -> None:
    """A read-only check still runs the models' CHECK constraints (SQLite skips them on a read-only file)."""
    import sqlite3

    db = make_db(tmp_path / "state.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("UPDATE tasks SET status = 'Bogus' WHERE id = (SELECT min(id) FROM tasks)")
    conn.commit()
    conn.close()
    before = snapshot_of(tmp_path)
    code, out, _ = invoke("db", "check", "--db", str(db))
    assert code == 1
    assert out.splitlines()[0] == "integrity: CHECK constraint failed in tasks: 1 row breaks ck_tasks_status"
    assert snapshot_of(tmp_path) == before


def test_db_upgrade_refuses_a_database_a_daemon_holds(daemon: DaemonProcess) -> None:
    code, _, err = invoke("db", "upgrade", "--state-dir", str(daemon.state_dir))
    assert code == 1
    assert err.startswith(f"error: cannot upgrade {daemon.state_dir / 'state.db'}: a running daemon holds it")
    assert f"in use by process {daemon.proc.pid}" in err and err.count("\n") == 1  # type: ignore[union-attr]


def test_db_upgrade_upgrades_an_old_database(tmp_path: Path) -> None:
    import sqlite3

    from engine.db import SCHEMA_HEAD

    db = make_db(tmp_path / "state.db")
    assert "already at the newest schema revision" in invoke("db", "upgrade", "--db", str(db))[1]
    old = tmp_path / "old.db"  # stamped at Alembic's base, nothing else: the oldest schema there is
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    conn.commit()
    conn.close()
    assert invoke("db", "current", "--db", str(old))[1].startswith("base (head is")
    code, out, err = invoke("db", "upgrade", "--db", str(old))
    assert (code, out) == (0, f"Upgraded {old} from schema revision base to {SCHEMA_HEAD}.\n"), err
    assert invoke("db", "check", "--db", str(old))[0] == 0
