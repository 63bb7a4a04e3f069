# SPDX-License-Identifier: GPL-3.0-or-later
"""SIGKILL a real process in the middle of an install and of a refresh; after a restart, all is consistent.

Each life is tests/support/snap_crash_child.py. A reference system runs
the same changes uninterrupted; a killed-and-restarted one must end with
the same root tree and the same snap state, its change Done.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from managers.asserts import PrivateKey
from overlord.samples import build_store
from tests.support.crash_workload import ForkServer
from tests.support.system import tree


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """server starts the lives as forks of a process that imported the managers once (a ForkServer).

    Each life is a process of its own all the same (its database, its lock, its files), SIGKILLed as
    before; a fork costs milliseconds where a new interpreter importing the managers costs over a second.
    """
    s = ForkServer(preload=("tests.support.snap_crash_child",))
    yield s
    s.close()


def life(server: ForkServer, base: Path, mode: str, *, kill_at: str | None = None, seed: int = 0) -> int | None:
    """life runs one process; with kill_at, SIGKILLs it once the journal shows that task kind Doing."""
    base.mkdir(parents=True, exist_ok=True)
    journal = base / "journal"
    journal.touch()
    start = journal.stat().st_size
    proc = server.run_module("tests.support.snap_crash_child", [mode, str(base)], base / "stderr",
                             {"SNAP_CRASH_SLOW": "0.01"})
    if kill_at is None:
        return proc.wait(120)
    deadline = time.monotonic() + 60
    while f"{kill_at} Doing" not in journal.read_text()[start:]:
        assert proc.poll() is None, f"the child exited ({proc.returncode}) before {kill_at} ran"
        assert time.monotonic() < deadline, f"{kill_at} never ran"
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0, 0.02))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the child ended before the kill in {kill_at}"
    return None


def outcome(base: Path) -> tuple[dict[str, Any], Any, list[str]]:
    """outcome is what a system ended with: its root (wrappers aside), its snaps, its change statuses."""
    t = {k: (v if not k.startswith("snap/bin/") else ("wrapper",)) for k, v in tree(base / "root").items()}
    con = sqlite3.connect(base / "state" / "state.db")
    try:
        row = con.execute("SELECT value FROM state_data WHERE key = 'snaps'").fetchone()
        statuses = [r[0] for r in con.execute("SELECT status FROM changes ORDER BY id")]
    finally:
        con.close()
    return t, json.loads(row[0]) if row else None, statuses


@pytest.fixture
def world(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> Any:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "root.pub.pem").write_text(root_key.public_key.to_pem())
    return build_store(tmp_path / "store", root_key, acme_key, versions=("1.0",))


@pytest.mark.timeout(240)
def test_sigkill_during_an_install_then_restart(tmp_path: Path, world: Any, server: ForkServer) -> None:
    assert life(server, tmp_path / "ref", "install") == 0
    ref = outcome(tmp_path / "ref")
    assert ref[2] == ["Done"]
    for i, kind in enumerate(("download-snap", "mount-snap", "link-snap")):
        base = tmp_path / f"kill-{kind}"
        life(server, base, "install", kill_at=kind, seed=i)
        assert life(server, base, "resume") == 0, (base / "stderr").read_text()[-2000:]
        got = outcome(base)
        assert got[2] == ["Done"], f"killed in {kind}"
        assert got[1] == ref[1], f"killed in {kind}: the snap state differs"
        assert got[0] == ref[0], f"killed in {kind}: the root differs"


@pytest.mark.heavy
@pytest.mark.timeout(240)
def test_sigkill_during_a_refresh_then_restart(tmp_path: Path, world: Any, server: ForkServer) -> None:
    kinds = ("unlink-current-snap", "copy-snap-data", "link-snap")
    bases = [tmp_path / "ref", *(tmp_path / f"kill-{k}" for k in kinds)]
    for base in bases:
        assert life(server, base, "install") == 0
    world.publish("2.0")
    assert life(server, tmp_path / "ref", "refresh") == 0
    ref = outcome(tmp_path / "ref")
    assert ref[2] == ["Done", "Done"]
    assert ref[1]["hello"]["current"] == "2"
    for i, (kind, base) in enumerate(zip(kinds, bases[1:], strict=True)):
        life(server, base, "refresh", kill_at=kind, seed=i)
        assert life(server, base, "resume") == 0, (base / "stderr").read_text()[-2000:]
        got = outcome(base)
        assert got[2] == ["Done", "Done"], f"killed in {kind}"
        assert got[1] == ref[1], f"killed in {kind}: the snap state differs"
        assert got[0] == ref[0], f"killed in {kind}: the root differs"


@pytest.mark.heavy
@pytest.mark.timeout(240)
def test_sigkill_during_an_auto_refresh_then_restart(tmp_path: Path, world: Any, server: ForkServer) -> None:
    kinds = ("download-snap", "mount-snap", "link-snap")
    bases = [tmp_path / "ref", *(tmp_path / f"kill-{k}" for k in kinds)]
    for base in bases:
        assert life(server, base, "install") == 0
    world.publish("2.0")
    assert life(server, tmp_path / "ref", "auto-refresh") == 0, (tmp_path / "ref" / "stderr").read_text()[-2000:]
    ref = outcome(tmp_path / "ref")
    assert ref[2] == ["Done", "Done"] and ref[1]["hello"]["current"] == "2"
    for i, (kind, base) in enumerate(zip(kinds, bases[1:], strict=True)):
        life(server, base, "auto-refresh", kill_at=kind, seed=i)
        assert life(server, base, "resume") == 0, (base / "stderr").read_text()[-2000:]
        got = outcome(base)
        assert got[2] == ["Done", "Done"], f"killed in {kind}: one auto-refresh change, Done"
        assert got[1] == ref[1], f"killed in {kind}: the snap state differs"
        assert got[0] == ref[0], f"killed in {kind}: the root differs"


@pytest.mark.timeout(240)
def test_sigkill_during_a_repair_then_restart(tmp_path: Path, world: Any, server: ForkServer) -> None:
    import shutil

    bases = [tmp_path / "ref", tmp_path / "kill-1", tmp_path / "kill-2"]
    for base in bases:
        assert life(server, base, "install") == 0
    installed = outcome(tmp_path / "ref")
    for base in bases:
        shutil.rmtree(base / "root/snap/hello/1")
        (base / "root/snap/hello/current").unlink()
        (base / "root/snap/bin/hello").unlink()
    assert life(server, tmp_path / "ref", "repair") == 0
    ref = outcome(tmp_path / "ref")
    assert ref[2] == ["Done", "Done"] and ref[0] == installed[0] and ref[1] == installed[1]
    for i, base in enumerate(bases[1:]):
        life(server, base, "repair", kill_at="repair-snap", seed=i)
        assert life(server, base, "resume") == 0, (base / "stderr").read_text()[-2000:]
        got = outcome(base)
        assert got[2] == ["Done", "Done"], "one repair change, Done"
        assert got[1] == ref[1] and got[0] == ref[0], "the repaired root differs"
