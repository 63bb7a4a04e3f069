# SPDX-License-Identifier: GPL-3.0-or-later
"""Seeding at first start from the ensure loop (snapd's ensureSeeded): refusals until seeded, retries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from engine import Status
from engine.testing import FakeClock
from managers import SystemOverlord, TooEarlyError
from managers.firstboot.firstboot import SEED_RETRY_DELAY
from overlord.samples import SEED, TEST_KEYS


def overlord(tmp_path: Path, clock: FakeClock, seed: Path) -> SystemOverlord:
    return SystemOverlord(tmp_path / "state", tmp_path / "root", trusted_key=TEST_KEYS / "root.pub.pem", clock=clock,
                          synchronous="NORMAL", seed=seed)


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    d = tmp_path / "seed"
    shutil.copytree(SEED, d)
    return d


@pytest.fixture
def system(tmp_path: Path, clock: FakeClock, seed: Path) -> Iterator[SystemOverlord]:
    o = overlord(tmp_path, clock, seed)
    yield o
    o.stop()


def test_seeding_starts_by_itself_and_early_changes_are_refused(system: SystemOverlord) -> None:
    o = system
    with o.state:
        for verb in (lambda: o.snap_manager.install("hello"), lambda: o.snap_manager.remove("reader"),
                     lambda: o.snap_manager.refresh(), lambda: o.interface_manager.connect("reader", "books")):
            with pytest.raises(TooEarlyError, match="too early for operation, device not yet seeded"):
                verb()
        assert not o.snap_manager.can_auto_refresh()
    o.settle(60)
    with o.state:
        assert o.first_boot.seeded
        chg = o.first_boot.seed_change()
        assert chg is not None and chg.status is Status.DONE
        assert {s.name for s in o.snap_manager.snaps()} == {"library", "reader"}
        assert o.snap_manager.can_auto_refresh()
        o.snap_manager.disable("reader")  # allowed now
    o.settle(60)
    o.stop()
    # Started again, a seeded system does not seed again.
    o2 = SystemOverlord(o.state_dir, o.root_dir, trusted_key=TEST_KEYS / "root.pub.pem", synchronous="NORMAL",
                        seed=o.first_boot.seed_dir)
    try:
        o2.settle(60)
        with o2.state:
            assert [c.kind for c in o2.state.changes()].count("seed") == 1
    finally:
        o2.stop()


def test_a_seed_that_cannot_be_used_is_retried_after_the_delay_with_a_warning(
        tmp_path: Path, clock: FakeClock, seed: Path) -> None:
    hidden = tmp_path / "library.snap"
    library = next((seed / "snaps").glob("library_*.snap"))
    library.rename(hidden)
    o = overlord(tmp_path, clock, seed)
    try:
        o.first_boot.ensure()  # (not settle: the ensure asks to run again in 5 real minutes)
        with o.state:
            assert o.first_boot.seed_change() is None and not o.first_boot.seeded
            [w] = [w.message for w in o.state.warnings()]
            assert w.startswith(f"cannot seed the system from {seed}: snaps/library_") and \
                w.endswith("(trying again every 5 minutes)")
        hidden.rename(library)
        clock.advance((SEED_RETRY_DELAY - timedelta(seconds=1)).total_seconds())
        o.first_boot.ensure()
        with o.state:
            assert o.first_boot.seed_change() is None
        clock.advance(1)
        o.settle(60)
        with o.state:
            assert o.first_boot.seeded
    finally:
        o.stop()


def test_without_a_seed_nothing_waits(tmp_path: Path, clock: FakeClock) -> None:
    o = SystemOverlord(tmp_path / "state", tmp_path / "root", clock=clock, synchronous="NORMAL")
    try:
        o.settle(30)
        with o.state:
            assert o.first_boot.seed_change() is None and o.snap_manager.can_auto_refresh()
            o.snap_manager.check_seeded("install")  # no error: the system is not waiting for a seed
    finally:
        o.stop()
