# SPDX-License-Identifier: GPL-3.0-or-later
"""Every interface handler is idempotent: do, undo, do again; and do again after a kill at any point of it.

Like tests/managers/test_handlers.py (whose rig and checks these reuse):
the handlers are called by hand on the tasks of real changes, on a real
root; a kill is a BaseException raised from the n-th file-system call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Task, Tomb
from managers.asserts import PrivateKey
from managers.ifacestate import InterfaceManager
from managers.snapstate import SnapManager
from tests.managers.test_handlers import Rig, check_idempotent, prepared
from tests.support.system import KINDS, make_snap, snap_id, tree

PLUGS = """plugs:
  network:
  home:
  logs:
    interface: system-files
    read: [/var/log/syslog]
"""

IKINDS: dict[str, tuple[str, str]] = {
    "connect": ("do_connect", "undo_connect"),
    "disconnect": ("do_disconnect", "undo_disconnect"),
    "setup-profiles": ("do_setup_profiles", "undo_setup_profiles"),
    "remove-profiles": ("do_remove_profiles", "undo_remove_profiles"),
    "auto-connect": ("do_auto_connect", "undo_auto_connect"),
    "auto-disconnect": ("do_auto_disconnect", "undo_auto_disconnect"),
}


class IfaceRig(Rig):
    """IfaceRig is the snap handlers' rig with an interface manager, whose hello has plugs."""

    def __init__(self, base: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
        super().__init__(base, root_key, acme_key)
        self.im = InterfaceManager(self.st, self.runner, self.sm, assert_manager=self.am)
        self.im.start_up()

    def publish(self, version: str) -> None:
        (self.base / "build").mkdir(exist_ok=True)
        extra = PLUGS if version == "1.0" else PLUGS + "  documents: home\n"  # a new plug to auto-connect
        snap = make_snap(self.base / "build", "hello", version, extra=extra)
        self.sample.snap_store.publish(snap, key=self.sample.publisher_key, developer_id="acme",
                                       snap_id=snap_id("hello"))

    def handler(self, kind: str, phase: str) -> Callable[[Task, Tomb], None]:
        if kind not in IKINDS:
            return super().handler(kind, phase)
        fn: Callable[[Task, Tomb], None] = getattr(self.im.handlers, IKINDS[kind][0 if phase == "do" else 1])
        return fn

    def change(self, make: Callable[[IfaceRig], Any]) -> list[Task]:  # type: ignore[override]
        """change makes a change with make(rig): its snap manager's verbs, and its interface manager's."""
        with self.st:
            return list(make(self).tasks())

    def snapshot(self) -> tuple[Any, Any]:
        with self.st:
            return tree(self.base / "root"), (self.st.get("snaps", {}), self.st.get("conns", {}))


def _installed(r: IfaceRig) -> None:
    r.publish("1.0")
    r.run_all(lambda r: r.sm.install("hello"))


# Each flow: how to get there, then the change whose tasks are run in order (made from the rig).
FLOWS: dict[str, tuple[Callable[[IfaceRig], Any], Callable[[IfaceRig], Any]]] = {
    "install": (lambda r: r.publish("1.0"), lambda r: r.sm.install("hello")),
    "refresh": (lambda r: (_installed(r), r.publish("2.0")), lambda r: r.sm.refresh("hello")),
    "connect": (_installed, lambda r: r.im.connect("hello", "logs")),
    "disconnect": (_installed, lambda r: r.im.disconnect("hello", "network")),
    "remove": (_installed, lambda r: r.sm.remove("hello")),
}
CASES = [("install", "setup-profiles"), ("install", "auto-connect"), ("refresh", "setup-profiles"),
         ("refresh", "auto-connect"), ("connect", "connect"), ("connect", "setup-profiles"),
         ("disconnect", "disconnect"), ("disconnect", "setup-profiles"), ("remove", "auto-disconnect"),
         ("remove", "remove-profiles")]


@pytest.mark.parametrize(("flow", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_interface_handler_is_idempotent(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, flow: str,
                                         kind: str) -> None:
    before, done = check_idempotent(
        tmp_path, lambda base: prepared(base, root_key, acme_key, flow, kind, rig_type=IfaceRig, flows=FLOWS), True)
    assert done != before or kind == "setup-profiles", f"{kind} changed nothing"


def test_the_interface_manager_registers_its_kinds(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
    rig = IfaceRig(tmp_path, root_key, acme_key)
    try:
        assert sorted(rig.runner.known_task_kinds()) == sorted({*KINDS, *IKINDS})
        for kind in IKINDS:
            assert rig.runner.task_kind_has_undo(kind), kind
        assert isinstance(rig.sm, SnapManager)
    finally:
        rig.close()
