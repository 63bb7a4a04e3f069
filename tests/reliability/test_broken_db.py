# SPDX-License-Identifier: GPL-3.0-or-later
"""Broken databases: one clear error naming the file and the problem, and nothing changed on disk.

Each case is refused by State.open, by the Overlord constructor and by the
`overlord changes PATH` command (except the read-only file and directory,
which the viewer reads: it never writes), with an engine DatabaseError
(never a raw sqlite3 error), and the directory holding the file is
byte-for-byte the same afterwards: no -wal or -shm file left behind.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine import DatabaseCorruptError, DatabaseError, Overlord, SchemaVersionError, State, Status
from engine.db import SCHEMA_HEAD
from tests.support.other_user import OtherUser

ROOT = Path(__file__).resolve().parents[2]
OVERLORD = ROOT / ".venv" / "bin" / "overlord"
FUTURE = "9999_from_the_future"


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real_db is an engine database with enough rows to span many pages."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    st = State.open(path)
    with st:
        for c in range(4):
            chg = st.new_change("install", f"change {c}")
            prev = None
            for i in range(100):
                t = st.new_task("step", f"step {c}.{i}")
                t.set("blob", f"{i:04d}" * 50)
                t.logf("made %d", i)
                if prev is not None:
                    t.wait_for(prev)
                chg.add_task(t)
                prev = t
    st.close()
    assert path.stat().st_size > 32 * 4096
    assert sorted(os.listdir(path.parent)) == ["state.db"]
    return path


@dataclass(frozen=True)
class Case:
    """Case makes one broken database in a directory and says what the error must be."""

    name: str
    make: Callable[[Path, Path], Path]  # (directory, real database) -> path to open
    error: type[DatabaseError]
    words: tuple[str, ...]  # each must appear in the message


def _directory(d: Path, real: Path) -> Path:
    (d / "state.db").mkdir()
    return d / "state.db"


def _missing_parent(d: Path, real: Path) -> Path:
    return d / "no-such-dir" / "state.db"


def _text(d: Path, real: Path) -> Path:
    p = d / "state.db"
    p.write_text("this is a shopping list, not a database\n" * 100)
    return p


def _truncated_half(d: Path, real: Path) -> Path:
    data = real.read_bytes()
    p = d / "state.db"
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_50(d: Path, real: Path) -> Path:
    p = d / "state.db"
    p.write_bytes(real.read_bytes()[:50])
    return p


def _corrupt_pages(d: Path, real: Path) -> Path:
    data = bytearray(real.read_bytes())
    data[8192 : 8192 + 4096] = b"\xff" * 4096
    p = d / "state.db"
    p.write_bytes(bytes(data))
    return p


def _read_only_file(d: Path, real: Path) -> Path:
    p = d / "state.db"
    shutil.copy(real, p)
    p.chmod(0o444)
    return p


def _read_only_dir(d: Path, real: Path) -> Path:
    p = d / "state.db"
    shutil.copy(real, p)
    d.chmod(0o555)
    return p


def _read_only_dir_new_file(d: Path, real: Path) -> Path:
    d.chmod(0o555)
    return d / "state.db"


def _newer(d: Path, real: Path) -> Path:
    p = d / "state.db"
    shutil.copy(real, p)
    conn = sqlite3.connect(p)
    conn.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
    conn.commit()
    conn.close()
    return p


def _other_program(d: Path, real: Path) -> Path:
    p = d / "state.db"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("INSERT INTO bookmarks (url) VALUES ('https://example.org')")
    conn.commit()
    conn.close()
    return p


CASES = [
    Case("directory", _directory, DatabaseError, ("directory",)),
    Case("missing-parent", _missing_parent, DatabaseError, ("does not exist",)),
    Case("not-a-database", _text, DatabaseCorruptError, ("not a SQLite database",)),
    Case("truncated-half", _truncated_half, DatabaseCorruptError, ("corrupt",)),
    Case("truncated-50-bytes", _truncated_50, DatabaseCorruptError, ("truncated",)),
    Case("corrupt-pages", _corrupt_pages, DatabaseCorruptError, ("corrupt",)),
    Case("read-only-file", _read_only_file, DatabaseError, ("read-only",)),
    Case("read-only-dir", _read_only_dir, DatabaseError, ("read-only",)),
    Case("read-only-dir-new-file", _read_only_dir_new_file, DatabaseError, ("read-only",)),
    Case("newer-version", _newer, SchemaVersionError, (FUTURE, SCHEMA_HEAD, "newer")),
    Case("other-program", _other_program, DatabaseError, ("another program", "bookmarks")),
]


def snapshot(d: Path) -> dict[str, tuple[int, bytes | None]]:
    """snapshot records every entry under d: its mode and, for files, its bytes."""
    out: dict[str, tuple[int, bytes | None]] = {".": (stat.S_IMODE(d.stat().st_mode), None)}
    for p in sorted(d.rglob("*")):
        mode = p.lstat().st_mode
        out[str(p.relative_to(d))] = (stat.S_IMODE(mode), p.read_bytes() if stat.S_ISREG(mode) else None)
    return out


@pytest.fixture
def broken(request: pytest.FixtureRequest, tmp_path: Path, real_db: Path) -> Iterator[tuple[Case, Path, Path]]:
    case: Case = request.param
    d = tmp_path / "db"
    d.mkdir()
    try:
        path = case.make(d, real_db)
        yield case, d, path
    finally:
        d.chmod(0o755)
        for p in d.rglob("*"):
            if p.is_file():
                p.chmod(0o644)


def check_message(case: Case, path: Path, error: BaseException) -> None:
    assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
    assert not isinstance(error, sqlite3.Error)
    message = str(error)
    assert message.startswith("cannot "), message
    assert str(path) in message, message
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message, f"the message is not one line: {message!r}"


parametrize = pytest.mark.parametrize("broken", CASES, ids=[c.name for c in CASES], indirect=True)


@parametrize
def test_state_open_refuses(broken: tuple[Case, Path, Path]) -> None:
    case, d, path = broken
    before = snapshot(d)
    with pytest.raises(DatabaseError) as excinfo:
        State.open(path)
    check_message(case, path, excinfo.value)
    assert snapshot(d) == before


@parametrize
def test_state_open_url_refuses(broken: tuple[Case, Path, Path]) -> None:
    case, d, path = broken
    before = snapshot(d)
    with pytest.raises(DatabaseError) as excinfo:
        State.open(url=f"sqlite:///{path}")
    check_message(case, path, excinfo.value)
    assert snapshot(d) == before


@parametrize
def test_overlord_refuses(broken: tuple[Case, Path, Path]) -> None:
    case, d, path = broken
    before = snapshot(d)
    with pytest.raises(DatabaseError) as excinfo:
        Overlord(path)
    check_message(case, path, excinfo.value)
    assert snapshot(d) == before, "the failed Overlord changed the directory"


#: What the viewer can read although a writer refuses it (it never writes).
VIEWABLE = ("read-only-file", "read-only-dir")
CLI_CASES = [replace(c, words=("no such file",)) if c.name == "read-only-dir-new-file" else c
             for c in CASES if c.name not in VIEWABLE]


@pytest.mark.parametrize("broken", CLI_CASES, ids=[c.name for c in CLI_CASES], indirect=True)
def test_cli_refuses(broken: tuple[Case, Path, Path]) -> None:
    case, d, path = broken
    before = snapshot(d)
    proc = subprocess.run([str(OVERLORD), "changes", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {proc.stderr!r}"
    assert lines[0].startswith("error: cannot "), lines
    assert str(path) in lines[0]
    for word in case.words:
        assert word in lines[0]
    assert proc.stdout == ""
    assert snapshot(d) == before


@pytest.mark.parametrize("broken", [c for c in CASES if c.name in VIEWABLE], ids=VIEWABLE, indirect=True)
def test_cli_reads_what_it_may_not_write(broken: tuple[Case, Path, Path]) -> None:
    """The viewer shows a database it may not write, and changes nothing beside it."""
    _case, d, path = broken
    before = snapshot(d)
    proc = subprocess.run([str(OVERLORD), "changes", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert all(f"change {c}" in proc.stdout for c in range(4)), proc.stdout
    assert snapshot(d) == before


def test_refusal_keeps_the_driver_error_out_of_sight(tmp_path: Path, real_db: Path) -> None:
    """A damaged file gives an engine error whose message stands alone (no sqlite3 class to catch)."""
    path = _corrupt_pages(tmp_path, real_db)
    with pytest.raises(DatabaseError) as excinfo:
        State.open(path)
    assert type(excinfo.value).__module__ == "engine.errors"


def test_empty_file_becomes_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    st = State.open(path)
    try:
        with st:
            chg = st.new_change("first", "in a file that was empty")
            chg.add_task(st.new_task("k", "t"))
    finally:
        st.close()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    st = State.open(path)
    try:
        with st:
            assert [(c.kind, c.status) for c in st.changes()] == [("first", Status.DO)]
    finally:
        st.close()


def test_empty_file_through_overlord_and_cli(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    o = Overlord(path)
    o.stop()
    proc = subprocess.run([str(OVERLORD), "changes", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_read_only_file_refused_even_for_root(tmp_path: Path, real_db: Path) -> None:
    """Root may write anything; the engine still refuses a file with no write permission bits."""
    path = _read_only_file(tmp_path, real_db)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="read-only"):
        State.open(path)
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_overlord_in_read_only_dir_as_an_ordinary_user(real_db: Path, nobody: OtherUser) -> None:
    """As an ordinary user (not root) the refusal must still say the directory is read-only."""
    d = nobody.scratch("engine-ro") / "ro"
    d.mkdir()
    path = d / "state.db"
    shutil.copy(real_db, path)
    path.chmod(0o644)
    d.chmod(0o555)
    before = snapshot(d)
    script = (
        "import sys\n"
        "from engine import Overlord, DatabaseError\n"
        "try:\n"
        "    Overlord(sys.argv[1])\n"
        "except DatabaseError as e:\n"
        "    print(type(e).__name__)\n"
        "    print(e)\n"
    )
    try:
        proc = nobody.run("-c", script, str(path))
    finally:
        d.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    kind, message = proc.stdout.splitlines()[:2]
    assert kind != "DatabaseInUseError", f"a read-only directory is reported as a database in use: {message}"
    assert "read-only" in message and str(path) in message, message
    d.chmod(0o555)
    try:
        assert snapshot(d) == before
    finally:
        d.chmod(0o755)
