# SPDX-License-Identifier: GPL-3.0-or-later
"""One writer per database, whatever the path, whatever the process; readers always welcome.

A writing State (an Overlord's, or a plain State.open) holds a flock on the
database file itself: a second writer, through the same path, a symlink, a
hard link or a URL, in this process or another, gets DatabaseInUseError
naming the holder's pid. Readers (State.open(read_only=True), the overlord
viewer commands) never take it and see what the writer commits. A file
with several hard links is refused outright (SQLite would look for its
write-ahead log beside the wrong name).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import DatabaseError, DatabaseInUseError, Overlord, ReadOnlyStateError, State, Status
from tests.support.helpers import Child, run_overlord

HOLDER = r"""
import sys
from engine import Overlord
o = Overlord(sys.argv[1])
def add(kind):
    with o.state:
        chg = o.state.new_change(kind, "made by the holder")
        chg.add_task(o.state.new_task("step", "a step of " + kind))
        return chg.id
print("ready", add("first"), flush=True)
for line in sys.stdin:
    if line.strip() == "more":
        print("added", add("second"), flush=True)
"""


def writers(db: Path, tmp_path: Path) -> dict[str, dict[str, object]]:
    """writers are the ways to reach db: its path, a relative path, a symlink, a hard link, URLs."""
    link = tmp_path / "link.db"
    link.symlink_to(db)
    hard = tmp_path / "hard.db"
    os.link(db, hard)
    return {
        "path": {"path": db},
        "relative": {"path": Path(os.path.relpath(db))},
        "symlink": {"path": link},
        "hard link": {"path": hard},
        "url": {"url": f"sqlite:///{db}"},
        "uri": {"url": f"sqlite:///file:{link}?uri=true"},
    }


def test_a_second_writer_in_another_process_is_refused_and_readers_work(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    holder = Child(HOLDER, str(db))
    try:
        first = holder.expect("ready").split()[1]
        for how, where in writers(db, tmp_path).items():
            with pytest.raises(DatabaseInUseError) as info:
                State.open(**where)  # type: ignore[arg-type]
            message = str(info.value)
            assert f"process {holder.pid}" in message, (how, message)
            assert str(where.get("path", "")) in message or "sqlite" in str(where.get("url")), (how, message)
            assert "\n" not in message and message.startswith("cannot "), message
            with pytest.raises(DatabaseInUseError, match=f"process {holder.pid}"):
                Overlord(**where)  # type: ignore[arg-type]
        # While the file has another name, a reader is refused too: SQLite
        # would look for the write-ahead log beside the wrong one.
        with pytest.raises(DatabaseError, match="hard links"):
            State.open(tmp_path / "hard.db", read_only=True)
        (tmp_path / "hard.db").unlink()

        # Readers work beside the writer, and see what it commits next.
        reader = State.open(tmp_path / "link.db", read_only=True)
        try:
            with reader:
                assert [c.kind for c in reader.changes()] == ["first"]
            holder.send("more")
            second = holder.expect("added").split()[1]
            with reader:
                assert [(c.id, c.kind) for c in reader.changes()] == [(first, "first"), (second, "second")]
                assert reader.read_only
        finally:
            reader.close()
        shown = run_overlord("changes", str(db))
        assert shown.returncode == 0, shown.stderr
        assert "first" in shown.stdout and "second" in shown.stdout
        shown = run_overlord("change", first, str(db))
        assert shown.returncode == 0, shown.stderr
        assert "a step of first" in shown.stdout
    finally:
        holder.kill()

    # The holder died without stopping: the kernel dropped its lock.
    st = State.open(tmp_path / "link.db")
    try:
        with st:
            assert len(st.changes()) == 2
            st.new_change("third", "by the next writer")
    finally:
        st.close()


def test_a_second_writer_in_this_process_is_refused_whatever_the_path(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    try:
        for how, where in writers(db, tmp_path).items():
            with pytest.raises(DatabaseInUseError) as info:
                State.open(**where)  # type: ignore[arg-type]
            assert f"process {os.getpid()} (this process)" in str(info.value), how
        # The symlink's message also names the file it leads to.
        with pytest.raises(DatabaseInUseError, match=str(db)):
            State.open(tmp_path / "link.db")
        (tmp_path / "hard.db").unlink()
        reader = State.open(tmp_path / "link.db", read_only=True)
        reader.close()
        with o.state:
            o.state.new_change("kept", "the refused writers changed nothing")
    finally:
        o.stop()
    # Stopped: the next writer may start, through any path.
    st = State.open(tmp_path / "link.db")
    try:
        with st:
            assert [c.kind for c in st.changes()] == ["kept"]
    finally:
        st.close()
    o.state.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.db", "state.db"], \
        "a lock file, or a log, was left beside the database"


def test_a_refused_writer_leaves_the_holder_whole(tmp_path: Path) -> None:
    """Opening and closing the file for a refused writer must not drop the holder's SQLite locks."""
    db = tmp_path / "state.db"
    st = State.open(db)
    try:
        for _ in range(3):
            with pytest.raises(DatabaseInUseError):
                State.open(db)
            State.open(db, read_only=True).close()
        with st:
            chg = st.new_change("install", "after refusals")
            chg.add_task(st.new_task("step", "..."))
        other = Child("import sys\nfrom engine import State\nState.open(sys.argv[1])", str(db))
        assert other.wait() != 0, "another process opened the database for writing"
        with st:
            assert [c.status for c in st.changes()] == [Status.DO]
    finally:
        st.close()


def test_a_reader_in_this_process_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    try:
        reader = State.open(db, read_only=True)
        try:
            with pytest.raises(ReadOnlyStateError, match="read-only"), reader:
                reader.new_change("sneaky", "through a reader")
            with reader:
                assert reader.changes() == []
        finally:
            reader.close()
    finally:
        o.stop()


def test_a_hard_linked_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    State.open(db).close()
    os.link(db, tmp_path / "backup.db")
    before = db.read_bytes()
    for name in ("state.db", "backup.db"):
        for read_only in (False, True):
            with pytest.raises(DatabaseError, match=r"2 names \(hard links\)") as info:
                State.open(tmp_path / name, read_only=read_only)
            assert "\n" not in str(info.value)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "state.db"]
    (tmp_path / "backup.db").unlink()
    State.open(db).close()


def test_an_overlord_that_cannot_start_lets_go_of_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with pytest.raises(ValueError, match="0 workers"):
        Overlord(db, workers=0)
    o = Overlord(db)  # not "in use" by the failed one
    o.stop()
    o.state.close()
