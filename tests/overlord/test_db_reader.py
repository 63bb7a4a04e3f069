# SPDX-License-Identifier: GPL-3.0-or-later
"""One reader for the viewer: every read command goes through the read-only State and the daemon's serializer.

``overlord changes DB --json``, ``change ID DB --json``, ``debug state``,
``graph --db`` and ``db current/check`` open the file through the engine
(``State.open(path, read_only=True)`` or the store's inspect), so they
refuse what the plain viewer refuses, each in one line: a FIFO (never
waited on), a hard-linked database, an emptied ``alembic_version``. The
JSON is the daemon's (``overlord.changeinfo.change_info``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import State, Status
from managers.assertstate import ASSERTIONS
from overlord.changeinfo import change_info
from tests.support.helpers import run_overlord

READERS = [
    ("changes", "{db}", "--json"),
    ("change", "1", "{db}", "--json"),
    ("changes", "{db}"),
    ("debug", "state", "--db", "{db}"),
    ("graph", "1", "--db", "{db}"),
    ("db", "current", "--db", "{db}"),
    ("db", "check", "--db", "{db}"),
]


def make_db(path: Path) -> Path:
    st = State.open(path)
    with st:
        chg = st.new_change("install", "Install x")
        t = st.new_task("step", "a step")
        t.errorf("broke")
        chg.add_task(t)
        other = st.new_task("other", "another step")
        chg.add_task(other)
        t.set_status(Status.ERROR)
        other.set_status(Status.DONE)
    st.close()
    return path


def test_the_json_is_the_daemons(tmp_path: Path) -> None:
    db = make_db(tmp_path / "state.db")
    st = State.open(db, read_only=True)
    with st:
        expected = [change_info(c) for c in st.changes()]
        expected_one = change_info(st.changes()[0], why=True)  # one change: each task's why, as the daemon's
    st.close()
    shown = run_overlord("changes", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == expected
    one = run_overlord("change", "1", str(db), "--json")
    assert json.loads(one.stdout) == expected_one
    assert [t["why"] and t["why"]["reason"] for t in expected_one["tasks"]] == ["failed", None]
    assert "err" in expected[0] and expected[0]["tasks"][0]["log"][0].endswith("ERROR broke")


def test_db_check_compares_the_snap_systems_tables_too(tmp_path: Path) -> None:
    """A database with the assert manager's table (made with the managers imported) checks clean in a new process."""
    db = make_db(tmp_path / "state.db")
    conn = sqlite3.connect(db)
    try:
        assert ASSERTIONS.name in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    checked = run_overlord("db", "check", "--db", str(db), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert (report["ok"], report["schema-differences"], report["schema-objects-missing"]) == (True, [], [])


def damaged(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """damaged makes a file the viewer refuses, and the reason it gives."""
    db = tmp_path / "state.db"
    if kind == "fifo":
        os.mkfifo(db)
        return db, "it is not a regular file"
    make_db(db)
    if kind == "hard link":
        os.link(db, tmp_path / "other-name.db")
        return db, "the file has 2 names (hard links)"
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM alembic_version")
    conn.commit()
    conn.close()
    return db, "its alembic_version table is empty"


@pytest.mark.timeout(30)  # a FIFO must not hang a reader: opening it would wait for a writer forever
@pytest.mark.parametrize("kind", ["fifo", "hard link", "empty alembic_version"])
@pytest.mark.parametrize("args", READERS, ids=[" ".join(a[:2]) for a in READERS])
def test_every_reader_refuses_what_the_viewer_refuses_in_one_line(tmp_path: Path, kind: str,
                                                                 args: tuple[str, ...]) -> None:
    from overlord.cli import cli

    db, reason = damaged(kind, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, [a.format(db=db) for a in args], catch_exceptions=False)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith("error: cannot "), err
    assert str(db) in err and reason in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside it
