# SPDX-License-Identifier: GPL-3.0-or-later
"""Every interface handler is idempotent: do, undo, do again; and do again after a kill at any point of it.

Like tests/managers/test_handlers.py (whose rig and kill switch these
reuse): the handlers are called by hand on the tasks of real changes, on a
real root; a kill is a BaseException raised from the n-th file-system call.
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
from tests.managers.conftest import KINDS, make_snap, snap_id, tree
from tests.managers.test_handlers import Killed, Rig, killing

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
        self.sample.store.publish(snap, key=self.sample.publisher_key, developer_id="acme", snap_id=snap_id("hello"))

    def handler(self, kind: str, phase: str) -> Callable[[Task, Tomb], None]:
        if kind not in IKINDS:
            return super().handler(kind, phase)
        fn: Callable[[Task, Tomb], None] = getattr(self.im.handlers, IKINDS[kind][0 if phase == "do" else 1])
        return fn

    def iface(self, make: Callable[[InterfaceManager], Any]) -> list[Task]:
        with self.st:
            return list(make(self.im).tasks())

    def snapshot(self) -> tuple[Any, Any]:
        with self.st:
            return tree(self.base / "root"), (self.st.get("snaps", {}), self.st.get("conns", {}))


def _installed(r: IfaceRig) -> None:
    r.publish("1.0")
    r.run_all(lambda sm: sm.install("hello"))


Flow = tuple[Callable[[IfaceRig], None], Callable[[IfaceRig], list[Task]]]
FLOWS: dict[str, Flow] = {
    "install": (lambda r: r.publish("1.0"), lambda r: r.change(lambda sm: sm.install("hello"))),
    "refresh": (lambda r: (_installed(r), r.publish("2.0")), lambda r: r.change(lambda sm: sm.refresh("hello"))),
    "connect": (_installed, lambda r: r.iface(lambda im: im.connect("hello", "logs"))),
    "disconnect": (_installed, lambda r: r.iface(lambda im: im.disconnect("hello", "network"))),
    "remove": (_installed, lambda r: r.change(lambda sm: sm.remove("hello"))),
}
CASES = [("install", "setup-profiles"), ("install", "auto-connect"), ("refresh", "setup-profiles"),
         ("refresh", "auto-connect"), ("connect", "connect"), ("connect", "setup-profiles"),
         ("disconnect", "disconnect"), ("disconnect", "setup-profiles"), ("remove", "auto-disconnect"),
         ("remove", "remove-profiles")]


def prepared(tmp: Path, root_key: PrivateKey, acme_key: PrivateKey, flow: str, kind: str) -> tuple[IfaceRig, Task]:
    """prepared is a rig whose change has run every task before the first one of kind."""
    rig = IfaceRig(tmp, root_key, acme_key)
    setup, make = FLOWS[flow]
    setup(rig)
    tasks = make(rig)
    with rig.st:
        target = next(t for t in tasks if t.kind == kind)
    for t in tasks:
        if t == target:
            break
        rig.run(t)
    return rig, target


@pytest.mark.parametrize(("flow", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_interface_handler_is_idempotent(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, flow: str,
                                         kind: str) -> None:
    rig, task = prepared(tmp_path / "ref", root_key, acme_key, flow, kind)
    try:
        before = rig.snapshot()
        calls: list[str] = []
        with killing(None, calls):
            rig.run(task)
        done = rig.snapshot()
        assert done != before or kind == "setup-profiles", f"{kind} changed nothing"
        rig.run(task)
        assert rig.snapshot() == done, "running do twice is not like running it once"
        rig.run(task, "undo")
        assert rig.snapshot() == before, "undo does not put back what do did"
        rig.run(task, "undo")
        assert rig.snapshot() == before, "undo twice is not like undo once"
        rig.run(task)
        assert rig.snapshot() == done, "do after undo is not like the first do"
    finally:
        rig.close()
    for n in range(1, len(calls) + 1):
        rig, task = prepared(tmp_path / f"kill{n}", root_key, acme_key, flow, kind)
        try:
            with pytest.raises(Killed), killing(n, []):
                rig.run(task)
            rig.run(task)
            got = rig.snapshot()
            assert got[1] == done[1], f"state differs after a kill at {calls[n - 1]}"
            assert _rel(got[0]) == _rel(done[0]), f"the root differs after a kill at {calls[n - 1]}"
        finally:
            rig.close()


def _rel(t: dict[str, Any]) -> dict[str, Any]:
    """_rel drops what names the rig's own directory: wrappers and profiles hold absolute paths."""
    return {k: (v if not k.startswith(("snap/bin/", "var/lib/profiles/")) else ("abs",)) for k, v in t.items()}


def test_the_interface_manager_registers_its_kinds(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
    rig = IfaceRig(tmp_path, root_key, acme_key)
    try:
        assert sorted(rig.runner.known_task_kinds()) == sorted({*KINDS, *IKINDS})
        for kind in IKINDS:
            assert rig.runner.task_kind_has_undo(kind), kind
        assert isinstance(rig.sm, SnapManager)
    finally:
        rig.close()
