# SPDX-License-Identifier: GPL-3.0-or-later
"""SystemOverlord: where its database lives, its managers in order, its configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import DatabaseInUseError, Overlord
from managers import SystemOverlord
from managers.asserts import PrivateKey
from managers.assertstate import AssertManager
from managers.firstboot import FirstBoot
from managers.ifacestate import InterfaceManager
from managers.snapstate import SnapManager
from overlord.samples import build_store


def test_system_overlord(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
    build_store(tmp_path / "store", root_key, acme_key, versions=("1.0",))
    (tmp_path / "root.pub.pem").write_text(root_key.public_key.to_pem())
    o = SystemOverlord(tmp_path / "state", tmp_path / "root", store=f"file://{tmp_path / 'store'}",
                       trusted_key=tmp_path / "root.pub.pem")
    try:
        assert isinstance(o, Overlord)
        assert (tmp_path / "state" / "state.db").is_file()
        assert not (tmp_path / "root" / "state.db").exists()
        managers = o.state_engine.managers()
        assert managers == [o.events, o.schedules, o.assert_manager, o.snap_manager, o.interface_manager,
                            o.hook_manager, o.config_manager, o.first_boot, o.service_manager, o.task_runner]
        assert isinstance(o.assert_manager, AssertManager) and isinstance(o.snap_manager, SnapManager)
        assert isinstance(o.interface_manager, InterfaceManager) and isinstance(o.first_boot, FirstBoot)
        assert o.assert_manager.trusted is not None and o.assert_manager.trusted.key == root_key.public_key
        with pytest.raises(DatabaseInUseError):
            SystemOverlord(tmp_path / "state", tmp_path / "root2")
        with o.state:
            chg = o.snap_manager.install("hello")
        o.settle(60)
        with o.state:
            assert chg.status.value == "Done", chg.err()
            assert [s.name for s in o.snap_manager.snaps()] == ["hello"]
    finally:
        o.stop()
    with pytest.raises(ValueError, match="both the state directory and the system root"):
        SystemOverlord(tmp_path / "same", tmp_path / "same")
