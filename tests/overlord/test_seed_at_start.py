# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord daemon --seed DIR: the daemon seeds by itself and refuses early changes with too-early (409)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from overlord.client import ApiError
from overlord.samples import SEED, TEST_KEYS
from tests.support.daemon import DaemonProcess


def test_the_daemon_seeds_at_first_start_and_refuses_early_changes(base: Path) -> None:
    seed = base / "state" / "seed"  # the default place: no --seed needed
    shutil.copytree(SEED, seed)
    hold = base / "state" / "hold-mount"
    hold.touch()  # the seed change waits in mount-snap until the test lets it go on
    d = DaemonProcess(base, "--trusted-key", str(TEST_KEYS / "root.pub.pem"))
    d.start()
    try:
        with d.client() as c:
            with pytest.raises(ApiError) as e:
                c.snap_action("reader", "remove")
            assert (e.value.status_code, e.value.kind, e.value.value) == (409, "too-early", {"change-kind": "seed"})
            assert "too early for operation, device not yet seeded" in e.value.message
        p = d.cli("connect", "reader:books", "library:books")
        assert p.returncode == 10 and "too early for operation" in p.stderr, p.stderr
        hold.unlink()
        with d.client() as c:
            seeds = [ch for ch in c.changes(select="all") if ch["kind"] == "seed"]
            assert len(seeds) == 1
            d.wait_change(seeds[0]["id"], lambda x: x["ready"])
            assert c.seed_state()["seeded"] is True
        assert d.cli("disable", "reader").returncode == 0
    finally:
        hold.unlink(missing_ok=True)
        d.stop()
