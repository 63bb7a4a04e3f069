# SPDX-License-Identifier: GPL-3.0-or-later
"""A full disk: one clear line, nothing held or left behind, and the retry works once there is room.

Opening on a full file system (a real one: a small tmpfs mounted in a
mount namespace of a child process) gives DatabaseFullError, leaves no
file and no lock behind, so that a retry in the same process gets the same
clear error (never "in use") and works once space is back. A commit
refused because the database is full (SQLite's max_page_count, the same
SQLITE_FULL a full disk gives) keeps its work and says so, so a caller
does not submit it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import DatabaseFullError, State
from tests.support.helpers import REPO, mount_namespace

FULL_DISK = r"""
import json, os, subprocess, sys
from pathlib import Path
mnt = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
from engine import DatabaseError, Overlord

def attempt(path):
    try:
        o = Overlord(path)
    except DatabaseError as e:
        return {"error": type(e).__name__, "message": str(e)}
    o.task_runner.add_handler("step", lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("install", "after the disk was full")
        chg.add_task(o.state.new_task("step", "..."))
    o.settle(60)
    with o.state:
        statuses = [c.status.value for c in o.state.changes()]
    o.stop()
    o.state.close()
    return {"ok": statuses}

def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    os.close(fd)

out = {}
old, new = mnt / "old", mnt / "new"
old.mkdir(); new.mkdir()
out["old-made"] = attempt(old / "state.db")
fill(mnt / "filler")
for n in (1, 2):  # the retry in the same process gets the same clear error
    out[f"new-{n}"] = attempt(new / "state.db")
    out[f"new-{n}-files"] = sorted(os.listdir(new))
    out[f"old-{n}"] = attempt(old / "state.db")
    out[f"old-{n}-files"] = sorted(os.listdir(old))
out["fds"] = sorted(os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
(mnt / "filler").unlink()
out["new-after"] = attempt(new / "state.db")
out["old-after"] = attempt(old / "state.db")
print(json.dumps(out))
"""


def test_open_on_a_full_disk_is_one_clear_line_and_the_retry_works(tmp_path: Path) -> None:
    cmd = mount_namespace()
    if cmd is None:
        pytest.skip("needs unshare and the right to make a mount namespace (root, or user namespaces)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([*cmd, sys.executable, "-c", FULL_DISK, str(mnt)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    if proc.returncode != 0 and "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["old-made"] == {"ok": ["Done"]}
    for n in (1, 2):
        for which in ("new", "old"):
            got = out[f"{which}-{n}"]
            assert got.get("error") == "DatabaseFullError", (which, n, got)
            message = got["message"]
            assert message.startswith("cannot open state database ") and "disk is full" in message, message
            assert "\n" not in message and "Errno" not in message, message
        assert out[f"new-{n}-files"] == [], "a failed first open left files behind"
        assert out[f"old-{n}-files"] == ["state.db"], "a failed open left files behind"
    assert not any(path.startswith(str(mnt)) for path in out["fds"]), f"descriptors left open: {out['fds']}"
    assert out["new-after"] == {"ok": ["Done"]}
    assert out["old-after"] == {"ok": ["Done", "Done"]}


def test_a_commit_refused_for_a_full_database_keeps_its_work_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    st = State.open(db)
    try:
        pages = st._store.raw.execute("PRAGMA page_count").fetchone()[0]
        st._store.raw.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(DatabaseFullError) as info, st:
            chg = st.new_change("install", "too big for the disk")
            t = st.new_task("step", "...")
            t.set("blob", "x" * 200_000)
            chg.add_task(t)
        message = str(info.value)
        assert message.startswith(f"cannot write state database {db}: the disk is full") or \
            message.startswith(f"cannot commit state database {db}: the disk is full"), message
        assert "kept" in message and "next commit" in message and "\n" not in message, message
        reader = State.open(db, read_only=True)
        try:
            with reader:
                assert reader.changes() == []  # nothing of it reached the database
            st._store.raw.execute("PRAGMA max_page_count = 1073741823")
            with st:
                pass  # the kept work is written by the next commit
            with reader:
                (written,) = reader.changes()  # once: the caller did not have to submit it again
                assert written.summary == "too big for the disk"
                assert written.tasks()[0].get("blob") == "x" * 200_000
        finally:
            reader.close()
    finally:
        st.close()
