# SPDX-License-Identifier: GPL-3.0-or-later
"""The file named is the file used: a path is a file name, never a URL.

A database path holding ``?``, a ``%XX`` escape, ``#``, spaces, a leading
``file:``, ``mode=ro``, bytes that are not UTF-8 or a newline names exactly
that file: the writer (another process) locks it, opens it and writes it;
a second writer on the same name is refused by that lock; the read-only
State and the viewer commands show what the writer wrote; no other file
appears beside it. Only an argument given as a URL is parsed as one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from engine import DatabaseError, DatabaseInUseError, Overlord, State
from engine.store import locate
from tests.support.helpers import Child

#: The awkward names, as bytes (the file system's view of a name).
NAMES = {
    "question mark": b"st?ate.db",
    "percent escape": b"my%20state.db",
    "hash": b"st#ate.db",
    "spaces": b"my state .db",
    "leading file:": b"file:state.db",
    "mode=ro": b"state.db?mode=ro",
    "not UTF-8": b"st\xffate.db",
    "newline": b"st\nate.db",
}

WRITER = r"""
import os, sys
from engine import State
os.chdir(os.fsdecode(bytes.fromhex(sys.argv[1])))
name = os.fsdecode(bytes.fromhex(sys.argv[2]))   # relative: "file:state.db" stays a relative name
st = State.open(name)
with st:
    chg = st.new_change("install", "written by the writer")
    chg.add_task(st.new_task("step", "a step"))
    cid = chg.id
print("ready", cid, flush=True)
sys.stdin.readline()
st.close()
print("closed", flush=True)
"""


def integrity(path: bytes) -> list[str]:
    """integrity runs PRAGMA integrity_check on exactly the file path names (a URI of its bytes)."""
    conn = sqlite3.connect("file:" + quote(os.path.abspath(path), safe="/") + "?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@pytest.mark.parametrize("name", NAMES.values(), ids=list(NAMES))
def test_the_file_named_is_locked_opened_written_and_shown(tmp_path: Path, name: bytes) -> None:
    from overlord.cli import cli

    d = os.fsencode(tmp_path)
    path = os.path.join(d, name)
    writer = Child(WRITER, d.hex(), name.hex())
    try:
        cid = writer.expect("ready").split()[1]
        # The writer made exactly that file (and SQLite's two beside it), nothing else.
        assert set(os.listdir(d)) <= {name, name + b"-wal", name + b"-shm"}
        assert name in os.listdir(d)
        # A second writer on the same name (here, through an absolute name) meets the first one's lock.
        with pytest.raises(DatabaseInUseError) as info:
            State.open(os.fsdecode(path))
        assert f"process {writer.pid}" in str(info.value)
        assert "\n" not in str(info.value)
        # The read-only State and the viewer read what the writer wrote, beside it.
        reader = State.open(os.fsdecode(path), read_only=True)
        try:
            with reader:
                assert [(c.id, c.summary) for c in reader.changes()] == [(cid, "written by the writer")]
            assert reader.path == os.fsdecode(path)
        finally:
            reader.close()
        shown = CliRunner().invoke(cli, ["changes", os.fsdecode(path), "--json"], catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        assert [c["summary"] for c in json.loads(shown.output)] == ["written by the writer"]
        one = CliRunner().invoke(cli, ["change", cid, os.fsdecode(path), "--json"], catch_exceptions=False)
        assert one.exit_code == 0, one.output
        assert json.loads(one.output)["tasks"][0]["summary"] == "a step"
        writer.send("close")
        writer.expect("closed")
    finally:
        writer.kill()
    assert os.listdir(d) == [name]  # the clean close folded the log into that file
    assert integrity(path) == ["ok"]


def test_only_an_argument_given_as_a_url_is_parsed_as_one(tmp_path: Path) -> None:
    # A path: the name as it is, whatever it holds.
    assert locate("st?ate.db").file == str(Path.cwd() / "st?ate.db")
    assert locate("//tmp/st?ate.db").uri() == "file:////tmp/st%3Fate.db"  # // is no host
    assert locate("a%20b.db").path == "a%20b.db"
    assert locate(b"st\xffate.db").path == os.fsdecode(b"st\xffate.db")
    # A URL: parsed, once, with its escapes.
    assert locate(url=f"sqlite:///{tmp_path}/a%20b.db").file == f"{tmp_path}/a b.db"
    assert locate(url=f"sqlite:///file:{tmp_path}/x.db?uri=true").file == f"{tmp_path}/x.db"
    assert locate(url="sqlite://").kind == "memory"
    assert locate(url="sqlite:///file:x?mode=memory&uri=true").kind == "memory"
    pg = locate(url="postgresql://u:secret@host/db")
    assert pg.kind == "postgresql" and "secret" not in pg.shown and pg.url is not None and "psycopg" in pg.url
    for bad in ("sqlite:///file:x.db?mode=ro&uri=true", "sqlite:///x.db?timeout=3", "mysql://h/db"):
        with pytest.raises(DatabaseError, match=r"^cannot open state database"):
            locate(url=bad)
    with pytest.raises(DatabaseError, match="NUL"):
        locate("a\0b.db")


def test_a_url_names_the_file_its_escapes_decode_to(tmp_path: Path) -> None:
    st = State.open(url=f"sqlite:///{tmp_path}/my%20state.db")
    with st:
        st.set("by", "url")
    assert st.path == f"{tmp_path}/my state.db"
    with pytest.raises(DatabaseInUseError):  # the same file, through its plain name
        State.open(tmp_path / "my state.db")
    st.close()
    assert sorted(os.listdir(tmp_path)) == ["my state.db"]


def test_a_location_parsed_once_opens_what_its_path_or_url_names(tmp_path: Path) -> None:
    """State.open takes a Location as given (the Overlord parses its path or URL once and hands it over)."""
    st = State.open(locate(url=f"sqlite:///{tmp_path}/my%20state.db"))
    with st:
        st.set("by", "location")
    assert st.path == f"{tmp_path}/my state.db"
    st.close()
    st = State.open(locate(str(tmp_path / "st?ate.db")))
    assert st.path == str(tmp_path / "st?ate.db")
    st.close()
    assert sorted(os.listdir(tmp_path)) == ["my state.db", "st?ate.db"]
    with pytest.raises(ValueError, match="give path or url, not both"):
        State.open(locate(str(tmp_path / "x.db")), url=f"sqlite:///{tmp_path}/y.db")
    o = Overlord(url=f"sqlite:///{tmp_path}/my%20state.db")
    try:
        with o.state:
            assert o.state.get("by") == "location"
        assert o.state.path == f"{tmp_path}/my state.db"
    finally:
        o.stop()
