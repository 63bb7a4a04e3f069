# SPDX-License-Identifier: GPL-3.0-or-later
"""Drift repair and clean-up from the SnapManager's ensure: each kind of drift is put back by a repair change."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from engine import Status
from managers.snapstate.drift import CLEANUP_AGE, FULL_CHECK_INTERVAL, QUICK_CHECK_INTERVAL
from tests.support.system import System, tree

Break = Callable[[Path], None]


def _edit_same_size(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data.replace(b"exec", b"EXEC", 1))


BREAKS: dict[str, tuple[Break, str, bool]] = {
    # name: (how, what the warning says, whether only the full check sees it)
    "current link deleted": (lambda r: (r / "snap/hello/current").unlink(), "current link snap/hello/current is "
                                                                             "missing", False),
    "current link elsewhere": (lambda r: ((r / "snap/hello/current").unlink(),
                                          (r / "snap/hello/current").symlink_to("7")),
                               "current link points to '7', not '1'", False),
    "wrapper deleted": (lambda r: (r / "snap/bin/hello").unlink(), "wrapper snap/bin/hello is missing", False),
    "wrapper edited": (lambda r: (r / "snap/bin/hello.svc").write_text("#!/bin/sh\necho pwned\n"),
                       "wrapper snap/bin/hello.svc was edited", False),
    "wrapper edited, same size": (lambda r: _edit_same_size(r / "snap/bin/hello"),
                                  "wrapper snap/bin/hello was edited", True),
    "revision directory deleted": (lambda r: shutil.rmtree(r / "snap/hello/1"),
                                   "revision directory snap/hello/1 is missing", False),
    "service deleted": (lambda r: (r / "var/lib/services/snap.hello.svc.json").unlink(),
                        "service var/lib/services/snap.hello.svc.json is missing", False),
    "profile deleted": (lambda r: (r / "var/lib/profiles/hello").unlink(),
                        "security profile var/lib/profiles/hello is missing", False),
    "profile edited": (lambda r: (r / "var/lib/profiles/hello").write_text('{"network": true}\n'),
                       "security profile var/lib/profiles/hello was edited", True),
}


def repair_changes(system: System) -> list[tuple[str, Status]]:
    with system.o.state:
        return [(c.id, c.status) for c in system.o.state.changes() if c.kind == "repair"]


def warnings(system: System) -> list[str]:
    with system.o.state:
        return [w.message for w in system.o.state.warnings()]


@pytest.mark.parametrize("kind", list(BREAKS))
def test_each_drift_is_repaired_with_a_warning(system: System, kind: str) -> None:
    how, says, full_only = BREAKS[kind]
    system.publish("hello", "1.0")
    system.publish("world", "1.0")
    system.run(lambda sm: sm.install(["hello", "world"]))
    before = system.snapshot()
    how(system.root)
    system.o.settle(30)
    assert repair_changes(system) == []  # the stat checks run at most every QUICK_CHECK_INTERVAL
    system.clock.advance(QUICK_CHECK_INTERVAL.total_seconds())
    system.o.settle(30)
    if full_only:  # a pass's stat calls do not see it; the next full check does
        assert repair_changes(system) == []
        system.clock.advance(FULL_CHECK_INTERVAL.total_seconds())
        system.o.settle(30)
    [(cid, status)] = repair_changes(system)
    assert status is Status.DONE, system.err(cid)
    assert system.snapshot() == before
    [w] = [w for w in warnings(system) if "drifted" in w]
    assert w.startswith("snap 'hello' drifted from its state: ") and says in w and f"change {cid} repairs it" in w
    system.clock.advance(QUICK_CHECK_INTERVAL.total_seconds())
    system.o.settle(30)
    assert len(repair_changes(system)) == 1  # repaired: nothing more to do


def test_a_revision_whose_snap_file_is_gone_too_is_reported_not_guessed(system: System,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    shutil.rmtree(system.root / "snap/hello/1")
    (system.root / "var/lib/snaps/hello_1.snap").unlink()
    system.clock.advance(QUICK_CHECK_INTERVAL.total_seconds())
    system.o.settle(30)
    assert repair_changes(system) == []
    [w] = warnings(system)
    assert w.startswith("cannot repair snap 'hello': its revision directory snap/hello/1 is missing")
    assert "snap file var/lib/snaps/hello_1.snap are both gone (reinstall it, or revert" in w
    for _ in range(3):
        system.clock.advance(QUICK_CHECK_INTERVAL.total_seconds())
        system.o.settle(30)
    assert repair_changes(system) == []
    said = [r for r in caplog.records if r.getMessage().startswith("cannot repair snap 'hello'")]
    assert len(said) == 1  # logged once, not at every check (every 30 s)


def test_a_disabled_snap_is_not_drift(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.run(lambda sm: sm.disable("hello"))
    system.clock.advance(FULL_CHECK_INTERVAL.total_seconds())
    system.o.settle(30)
    assert repair_changes(system) == [] and warnings(system) == []


def test_old_downloads_and_unused_snap_files_are_cleaned_up(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    snaps = system.root / "var/lib/snaps"
    now = system.clock.now.timestamp()
    files = {"partial/world_3.snap.partial": now - CLEANUP_AGE.total_seconds() - 1,
             "world_2.snap": now - CLEANUP_AGE.total_seconds() - 1,
             "partial/other_1.snap.partial": now - 60,  # too recent
             }
    for rel, mtime in files.items():
        (snaps / rel).write_bytes(b"x")
        os.utime(snaps / rel, (mtime, mtime))
    os.utime(snaps / "hello_1.snap", (now - 10 * CLEANUP_AGE.total_seconds(),) * 2)  # old, but in use
    system.clock.advance(FULL_CHECK_INTERVAL.total_seconds())
    system.o.settle(30)
    with system.o.state:
        [chg] = [c for c in system.o.state.changes() if c.kind == "clean-up"]
        assert chg.status is Status.DONE
        assert chg.tasks()[0].get("files") == ["var/lib/snaps/partial/world_3.snap.partial",
                                               "var/lib/snaps/world_2.snap"]
    left = sorted(str(p.relative_to(snaps)) for p in snaps.rglob("*") if p.is_file())
    assert left == ["hello_1.snap", "partial/other_1.snap.partial"]
    assert "snap/hello/current" in tree(system.root)
    # the next full check has nothing to remove: no new change
    system.clock.advance(FULL_CHECK_INTERVAL.total_seconds() + timedelta(minutes=1).total_seconds())
    system.o.settle(30)
    with system.o.state:
        assert [c.kind for c in system.o.state.changes()].count("clean-up") == 1
