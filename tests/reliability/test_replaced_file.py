# SPDX-License-Identifier: GPL-3.0-or-later
"""A database replaced under a running writer is noticed, and nothing is corrupted.

``mv backup.db state.db`` (or ``rm state.db``, or ``mv state.db elsewhere``)
while an overlord runs in another process: before its next commit the
writer finds that the path no longer names its file, refuses that commit
and every later one with one error naming the file, and its loop stops. A
second writer on the path meanwhile is refused (the first one's
write-ahead log, which SQLite finds by name, holds the other file's pages),
and once the first has stopped the file at the path passes
``PRAGMA integrity_check`` and holds what it should.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engine import DatabaseInUseError, State
from tests.support.helpers import Child

WRITER = r"""
import sys
from engine import DatabaseReplacedError, Overlord
o = Overlord(sys.argv[1])
o.task_runner.add_handler("step", lambda task, tomb: None)  # its runs' timings wait for a batch when the file goes
o.loop()
n = 0
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "commit":
        try:
            with o.state:
                n += 1
                o.state.set("n", n)
                chg = o.state.new_change("install", f"change {n}")
                chg.add_task(o.state.new_task("step", "a step"))
            print("committed", n, flush=True)
        except DatabaseReplacedError as e:
            print("refused", type(e).__name__, str(e), flush=True)
    elif cmd == "loop":
        with o.state:
            o.state.ensure_before(0)  # wake the loop: it looks at the file after its pass
        o._loop_thread.join(30)
        print("loop", "running" if o._loop_thread.is_alive() else "stopped", flush=True)
    elif cmd == "stop":
        o.stop()
        o.state.close()
        print("stopped", flush=True)
        break
"""

VARIANTS = ["rename over", "delete", "move away"]


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_replaced_database_is_noticed_and_nothing_is_corrupted(tmp_path: Path, variant: str) -> None:
    db = tmp_path / "state.db"
    backup = tmp_path / "backup.db"
    elsewhere = tmp_path / "elsewhere.db"
    st = State.open(backup)
    with st:
        st.set("who", "backup")
    st.close()

    writer = Child(WRITER, str(db))
    try:
        writer.expect("ready")
        for i in range(1, 4):
            writer.send("commit")
            assert writer.expect("committed") == f"committed {i}"
        if variant == "rename over":
            os.replace(backup, db)
        elif variant == "delete":
            db.unlink()
        else:
            os.replace(db, elsewhere)

        # That commit and every later one are refused, with one line naming the file.
        for _ in range(2):
            writer.send("commit")
            line = writer.expect("refused")
            assert line.startswith(f"refused DatabaseReplacedError cannot write state database {db}: "), line
            assert "no longer names the file" in line
        writer.send("loop")
        assert writer.expect("loop") == "loop stopped"

        # A second writer on the path is refused while the first one's log is there.
        with pytest.raises(DatabaseInUseError, match=f"write-ahead log .* process {writer.pid}"):
            State.open(db)
        assert not db.exists() or variant == "rename over"  # the refused open left no file behind

        writer.send("stop")
        writer.expect("stopped")
        assert writer.wait() == 0
    finally:
        writer.kill()
    # One log line for it, however many commits were refused.
    assert sum("no longer names the file" in line for line in writer.stderr) == 1, writer.stderr
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    if variant == "rename over":
        assert integrity(db) == ["ok"]
        reader = State.open(db, read_only=True)
        with reader:
            assert reader.get("who") == "backup"
            assert reader.changes() == []
        reader.close()
    if variant == "move away":
        # The first writer's commits are all in its own file, wherever it went.
        assert integrity(elsewhere) == ["ok"]
        reader = State.open(elsewhere, read_only=True)
        with reader:
            assert reader.get("n") == 3
            assert len(reader.changes()) == 3
        reader.close()
    # The path is free for the next writer, and what it writes is sound.
    st = State.open(db)
    with st:
        st.set("next", True)
    st.close()
    assert integrity(db) == ["ok"]
