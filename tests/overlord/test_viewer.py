# SPDX-License-Identifier: GPL-3.0-or-later
"""The viewer never writes; a clean close leaves a database file that holds everything.

State.open(path, read_only=True) and the overlord viewer commands (changes,
change) never create, migrate or checkpoint a database: an empty file is
"not a state database", a leftover write-ahead log is shown but not folded
into the file (its bytes stay the same), and a user who may read but not
write the file and its directory sees everything. A writer's clean close
(and an overlord's stop) checkpoints and truncates the log, so a copy of
the database file alone misses nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import (
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseError,
    EngineError,
    Overlord,
    ReadOnlyStateError,
    State,
    Status,
)
from overlord.cli._dbview import list_changes, show_change
from tests.support.helpers import Child, run_overlord

REPO = Path(__file__).resolve().parents[2]

NOBODY = 65534


def digest(d: Path) -> dict[str, str]:
    """digest maps every file under d to its sha256 (and catches new or vanished files)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def make_changes(st: State, n: int, kind: str = "install") -> None:
    with st:
        for i in range(n):
            chg = st.new_change(kind, f"change {i}")
            t = st.new_task("step", f"step of change {i}")
            t.logf("logged by %d", i)
            chg.add_task(t)


KILLED_WRITER = r"""
import os, sys
from engine import State
st = State.open(sys.argv[1])
with st:
    st.new_change("closed", "in the database file")
st._store.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
for i in range(3):
    with st:
        chg = st.new_change("in-wal", f"only in the log {i}")
        chg.add_task(st.new_task("step", "..."))
print("committed", flush=True)
sys.stdin.readline()
"""


def leftover_wal(d: Path) -> Path:
    """leftover_wal makes a database whose last commits are only in its -wal (the writer was killed)."""
    db = d / "state.db"
    writer = Child(KILLED_WRITER, str(db))
    writer.expect("committed")
    writer.proc.send_signal(signal.SIGKILL)
    writer.wait()
    assert (d / "state.db-wal").stat().st_size > 0
    return db


def kinds_in(db: Path) -> list[str]:
    st = State.open(db, read_only=True)
    try:
        with st:
            return [c.kind for c in st.changes()]
    finally:
        st.close()


def test_an_empty_file_is_not_a_state_database(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"")
    with pytest.raises(DatabaseCorruptError, match="not a state database"):
        State.open(db, read_only=True)
    for args in (("changes", str(db)), ("change", "1", str(db))):
        proc = run_overlord(*args)
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"error: cannot open state database {db}: ") and "not a state database" in line
    assert db.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["state.db"]


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with pytest.raises(DatabaseError, match="no such file"):
        State.open(db, read_only=True)
    proc = run_overlord("changes", str(db))
    assert proc.returncode == 1 and "no such file" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_schema_to_upgrade_is_refused_not_migrated(tmp_path: Path) -> None:
    db = tmp_path / "state.db"  # (an older revision's database: the fixture of the first revision)
    shutil.copyfile(REPO / "tests" / "fixtures" / "databases" / "0001_initial.db", db)
    before = digest(tmp_path)
    with pytest.raises(DatabaseError, match="schema revision") as info:
        State.open(db, read_only=True)
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    proc = run_overlord("changes", str(db))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "schema revision" in line, line
    assert digest(tmp_path) == before


def test_a_leftover_wal_is_shown_and_never_checkpointed(tmp_path: Path) -> None:
    d = tmp_path / "db"
    d.mkdir()
    db = leftover_wal(d)
    before = digest(d)
    # The database file alone lacks what the log holds: the test means something.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(db, alone / "state.db")
    assert kinds_in(alone / "state.db") == ["closed"]

    assert kinds_in(db) == ["closed", "in-wal", "in-wal", "in-wal"]
    shown = run_overlord("changes", str(db))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("only in the log") == 3
    shown = run_overlord("change", "4", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "only in the log 2" in shown.stdout
    after = digest(d)
    assert after["state.db"] == before["state.db"], "the viewer checkpointed the log into the database"
    assert after["state.db-wal"] == before["state.db-wal"]
    assert sorted(after) == sorted(before)


def test_a_read_only_state_never_commits(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    writer = State.open(db)
    make_changes(writer, 1)
    writer.close()
    before = digest(tmp_path)
    st = State.open(db, read_only=True)
    try:
        with st:
            (chg,) = st.changes()
        attempts: list[Callable[[], object]] = [
            lambda: st.set("k", 1), lambda: st.new_change("x", "y"), lambda: chg.set("k", 1),
            lambda: chg.tasks()[0].logf("no"), lambda: st.add_warning("no")]
        for attempt in attempts:
            with pytest.raises(ReadOnlyStateError, match="read-only") as info, st:
                attempt()
            assert isinstance(info.value, EngineError)
            with st:  # refused once; the next unit of work starts clean
                assert st.get("k", None) is None
                assert [c.kind for c in st.changes()] == ["install"]
                assert st.warnings() == []
        # A flush inside the unit of work (changes() writes what is pending first) is refused too.
        with pytest.raises(ReadOnlyStateError), st:
            st.new_change("x", "y")
            st.changes()
        with pytest.raises(ReadOnlyStateError):
            st.lock()
            st.set("k", 2)
            st.unlock()
        with st:
            assert st.get("k", None) is None
    finally:
        st.close()
    assert digest(tmp_path) == before
    with pytest.raises(ValueError, match="in-memory"):
        State.open(read_only=True)


def test_a_reader_follows_a_writer_that_starts_and_stops_after_it(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    w = State.open(db)
    make_changes(w, 1, "first")
    w.close()
    reader = State.open(db, read_only=True)
    try:
        with reader:
            assert [c.kind for c in reader.changes()] == ["first"]
        w = State.open(db)
        make_changes(w, 1, "second")
        with reader:
            assert [c.kind for c in reader.changes()] == ["first", "second"]
        make_changes(w, 1, "third")
        w.close()
        with reader:
            assert [c.kind for c in reader.changes()] == ["first", "second", "third"]
    finally:
        reader.close()


def test_a_read_overlapped_by_a_writer_changing_the_file_says_so(tmp_path: Path) -> None:
    """A snapshot read (no -wal when opened) that a writer's checkpoint overlaps is not trusted."""
    db = tmp_path / "state.db"
    w = State.open(db)
    make_changes(w, 1, "first")
    w.close()
    reader = State.open(db, read_only=True)
    try:
        with pytest.raises(DatabaseBusyError, match="changed the file while it was read"), reader:
            assert [c.kind for c in reader.changes()] == ["first"]
            w = State.open(db)
            make_changes(w, 1, "second")
            w.close()  # folds the log into the file under the reader's feet
        with reader:
            assert [c.kind for c in reader.changes()] == ["first", "second"]
    finally:
        reader.close()


def test_an_unreadable_file_is_not_called_read_only(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    State.open(db).close()
    db.chmod(0)
    try:
        for read_only in (True, False):
            with pytest.raises(DatabaseError) as info:
                State.open(db, read_only=read_only)
            assert "unreadable (permission denied)" in str(info.value)
            assert "read-only" not in str(info.value)
        proc = run_overlord("changes", str(db))
        assert proc.returncode == 1
        (line,) = proc.stderr.splitlines()
        assert "unreadable" in line and "read-only" not in line, line
    finally:
        db.chmod(0o644)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """shared_dir is a directory another user can reach (tmp_path sits in root's 0700 directory)."""
    top = Path(tempfile.mkdtemp(prefix="engine-viewer-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(top)


def _as_reader(fn: object) -> dict[str, object]:
    """_as_reader runs fn() as an ordinary user (nobody, when we are root) and returns its JSON answer.

    A forked child drops its privileges after the imports, so the checkout
    need not be readable by that user.
    """
    import rich.console
    import rich.table
    import rich.text  # noqa: F401  (imported before the fork, as the user may not read them)

    if os.geteuid() != 0:
        return fn()  # type: ignore[operator,no-any-return]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = fn()  # type: ignore[operator]
        except BaseException as e:
            answer = {"crash": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(answer).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def _view(db: Path) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        changes = list_changes(db)
        change = show_change(db, "2")
    kinds: list[str] | str
    try:
        kinds = kinds_in(db)
    except EngineError as e:
        kinds = str(e)
    return {"uid": os.geteuid(), "rc": [changes, change], "out": out.getvalue(), "err": err.getvalue(),
            "kinds": kinds}


@pytest.mark.parametrize("crashed", [False, True], ids=["closed-cleanly", "leftover-wal"])
def test_a_user_who_may_only_read_sees_everything(shared_dir: Path, crashed: bool) -> None:
    d = shared_dir / "state"
    d.mkdir()
    if crashed:
        db = leftover_wal(d)
        expected = ["closed", "in-wal", "in-wal", "in-wal"]
    else:
        db = d / "state.db"
        w = State.open(db)
        make_changes(w, 2)
        w.close()
        expected = ["install", "install"]
    # Prime what the viewer imports lazily, while we may still read the checkout.
    assert kinds_in(db) == expected
    for p in d.iterdir():
        p.chmod(0o444)
    d.chmod(0o555)
    before = digest(d)
    answer = _as_reader(lambda: _view(db))
    assert "crash" not in answer, answer
    assert answer["uid"] == (NOBODY if os.geteuid() == 0 else os.geteuid())
    assert answer["err"] == "" and answer["rc"] == [0, 0], answer
    assert answer["kinds"] == expected
    assert "read-only" not in str(answer["out"])
    assert digest(d) == before, "the viewer wrote to a database it may only read"
    assert stat.S_IMODE(d.stat().st_mode) == 0o555


def test_a_clean_close_truncates_the_log_even_beside_a_reader(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    w = State.open(db)
    reader = State.open(db, read_only=True)  # SQLite's own last-close checkpoint cannot run
    try:
        make_changes(w, 200)
        with reader:
            assert len(reader.changes()) == 200
        assert (tmp_path / "state.db-wal").stat().st_size > 0
        w.close()
        assert (tmp_path / "state.db-wal").stat().st_size == 0
        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy(db, copy / "state.db")
        assert len(kinds_in(copy / "state.db")) == 200
        with reader:
            assert len(reader.changes()) == 200
    finally:
        reader.close()


def test_a_stopped_overlord_leaves_a_self_contained_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    o = Overlord(db)
    o.task_runner.add_handler("step", lambda task, tomb: None)
    make_changes(o.state, 3)
    o.settle(60)
    o.stop()  # the State stays open (readable), the log is already folded in
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(db, copy / "state.db")
    st = State.open(copy / "state.db", read_only=True)
    try:
        with st:
            assert [c.status for c in st.changes()] == [Status.DONE] * 3
    finally:
        st.close()
    o.state.close()
    assert not (tmp_path / "state.db-wal").exists()


def test_demo_leaves_a_self_contained_file(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    proc = run_overlord("demo", "--dir", str(base))
    assert proc.returncode == 0, proc.stderr
    state = base / "state"
    wal = state / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.db"
    shutil.copy(state / "state.db", copy)  # the database file alone holds every change
    st = State.open(copy, read_only=True)
    try:
        with st:
            changes = st.changes()
            assert len(changes) >= 3 and all(c.is_ready() for c in changes)
            assert Status.ERROR in {c.status for c in changes} | {Status.UNDONE}
    finally:
        st.close()


def test_demo_dir_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_text("not a directory\n")
    proc = run_overlord("demo", "--dir", str(root))
    assert proc.returncode == 2, proc
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and str(root) in line and "is a file" in line, line
    assert root.read_text() == "not a directory\n"

