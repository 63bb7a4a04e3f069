# SPDX-License-Identifier: GPL-3.0-or-later
"""Every snap handler is idempotent: do, undo, do again; and do again after a kill at any point of it.

The handlers are called directly on the tasks of a real change (no runner),
on a real root. A kill is simulated by raising a BaseException from the
n-th file-system call of a handler (rename, replace, symlink, unlink,
mkdir, rmdir, open for writing, copy): nothing after it runs, nothing
uncommitted is kept; running the handler again must end where one
uninterrupted run ends, for every n.
"""

from __future__ import annotations

import builtins
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine import State, Status, Task, TaskRunner, Tomb
from engine.testing import FakeClock
from managers.asserts import PrivateKey
from managers.assertstate import AssertManager
from managers.snapstate import SnapManager
from overlord.samples import build_store
from tests.support.system import KINDS, make_snap, snap_id, tree


class Killed(BaseException):
    """Killed stands for the process dying: no handler catches it."""


class Rig:
    """Rig is a snap manager on an in-memory state and a real root, driven by hand."""

    def __init__(self, base: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
        self.base = base
        self.st = State.open(clock=FakeClock())
        self.runner = TaskRunner(self.st)
        self.am = AssertManager(self.st, self.runner, trusted_key=root_key.public_key)
        self.sample = build_store(base / "store", root_key, acme_key, versions=(), names=("hello",))
        self.sm = SnapManager(self.st, self.runner, root=base / "root", store=self.sample.snap_store,
                              assert_manager=self.am)
        self.sm.start_up()

    def close(self) -> None:
        self.runner.stop()
        self.st.close()

    def publish(self, version: str) -> None:
        (self.base / "build").mkdir(exist_ok=True)
        snap = make_snap(self.base / "build", "hello", version)
        self.sample.snap_store.publish(snap, key=self.sample.publisher_key, developer_id="acme",
                                       snap_id=snap_id("hello"))

    def handler(self, kind: str, phase: str) -> Callable[[Task, Tomb], None]:
        do, undo = KINDS[kind]
        name = do if phase == "do" else undo
        assert name is not None
        owner: object = self.sm.handlers
        if "." in name:
            owner, name = self.sm, name
            for part in name.split(".")[:-1]:
                owner = getattr(owner, part) if part else owner
            name = name.split(".")[-1]
        fn: Callable[[Task, Tomb], None] = getattr(owner, name)
        return fn

    def run(self, task: Task, phase: str = "do") -> None:
        """run calls a handler the way the runner does, and records its outcome."""
        with self.st:
            kind = task.kind
            task.set_status(Status.DOING if phase == "do" else Status.UNDOING)
        self.handler(kind, phase)(task, Tomb())
        with self.st:
            if task.status in (Status.DOING, Status.UNDOING):
                task.set_status(Status.DONE if phase == "do" else Status.UNDONE)

    def change(self, make: Callable[[SnapManager], Any]) -> list[Task]:
        with self.st:
            return list(make(self.sm).tasks())

    def run_all(self, make: Callable[[SnapManager], Any]) -> None:
        for t in self.change(make):
            self.run(t)

    def snapshot(self) -> tuple[Any, Any]:
        with self.st:
            return tree(self.base / "root"), self.st.get("snaps", {})


# Each flow: how to get there, then the change whose tasks are run in order.
FLOWS: dict[str, tuple[Callable[[Rig], None], Callable[[SnapManager], Any]]] = {
    "install": (lambda r: r.publish("1.0"), lambda sm: sm.install("hello")),
    "refresh": (lambda r: (r.publish("1.0"), r.run_all(lambda sm: sm.install("hello")),
                           (r.base / "root/var/snap/hello/1/data").write_text("data"), r.publish("2.0")),
                lambda sm: sm.refresh("hello")),
    "revert": (lambda r: (r.publish("1.0"), r.run_all(lambda sm: sm.install("hello")), r.publish("2.0"),
                          r.run_all(lambda sm: sm.refresh("hello"))),
               lambda sm: sm.revert("hello")),
    "remove": (lambda r: (r.publish("1.0"), r.run_all(lambda sm: sm.install("hello")), r.publish("2.0"),
                          r.run_all(lambda sm: sm.refresh("hello"))),
               lambda sm: sm.remove("hello")),
    # the root drifted: revision directory, current link and a wrapper gone; the ensure's repair change
    "repair": (lambda r: (r.publish("1.0"), r.run_all(lambda sm: sm.install("hello")),
                          shutil.rmtree(r.base / "root/snap/hello/1"), (r.base / "root/snap/hello/current").unlink(),
                          (r.base / "root/snap/bin/hello").unlink()),
               lambda sm: _repair_change(sm)),
}


def _repair_change(sm: SnapManager) -> Any:
    sm.drift.ensure()
    return sm.state.change(sm.state.get("repair-change"))


CASES = [("install", k) for k in ("prerequisites", "download-snap", "validate-snap", "mount-snap", "copy-snap-data",
                                  "link-snap", "start-snap-services", "cleanup", "setup-profiles")]
CASES += [("refresh", k) for k in ("stop-snap-services", "unlink-current-snap", "copy-snap-data", "link-snap",
                                   "start-snap-services")]
CASES += [("revert", k) for k in ("prepare-snap", "unlink-current-snap", "link-snap")]
CASES += [("remove", k) for k in ("stop-snap-services", "unlink-snap", "clear-snap", "discard-snap")]
CASES += [("repair", "repair-snap")]


@contextmanager
def killing(at: int | None, calls: list[str]) -> Iterator[None]:
    """killing counts file-system calls (into calls) and raises Killed at call number at."""
    names = [(os, n) for n in ("rename", "replace", "symlink", "unlink", "mkdir", "rmdir", "mkfifo")]
    names += [(shutil, "rmtree"), (shutil, "copy2"), (shutil, "copytree")]
    real: dict[tuple[Any, str], Any] = {}

    def wrap(mod: Any, name: str) -> Any:
        fn = getattr(mod, name)
        real[(mod, name)] = fn

        def counted(*args: Any, **kw: Any) -> Any:
            calls.append(f"{name} {args[0] if args else ''}")
            if at is not None and len(calls) == at:
                raise Killed(f"killed at {name}")
            return fn(*args, **kw)
        return counted

    real_open, real_os_open = builtins.open, os.open

    def counted_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if any(c in mode for c in "wax+"):
            calls.append(f"open {file}")
            if at is not None and len(calls) == at:
                raise Killed("killed at open")
        return real_open(file, mode, *args, **kw)

    def counted_os_open(path: Any, flags: int, *args: Any, **kw: Any) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR):
            calls.append(f"os.open {path}")
            if at is not None and len(calls) == at:
                raise Killed("killed at os.open")
        return real_os_open(path, flags, *args, **kw)

    patched = {(mod, n): wrap(mod, n) for mod, n in names}
    try:
        for (mod, n), fn in patched.items():
            setattr(mod, n, fn)
        builtins.open = counted_open  # type: ignore[assignment]
        os.open = counted_os_open
        yield
    finally:
        for (mod, n), fn in real.items():
            setattr(mod, n, fn)
        builtins.open = real_open
        os.open = real_os_open


def prepared(tmp: Path, root_key: PrivateKey, acme_key: PrivateKey, flow: str, kind: str, *,
             rig_type: type[Rig] | None = None, flows: dict[str, Any] | None = None) -> tuple[Rig, Task]:
    """prepared is a rig whose change has run every task before the first one of kind.

    flows (default FLOWS) maps a flow to (setup(rig), make), make being what rig.change takes.
    """
    rig = (rig_type or Rig)(tmp, root_key, acme_key)
    setup, make = (flows or FLOWS)[flow]
    setup(rig)
    tasks = rig.change(make)
    with rig.st:
        target = next(t for t in tasks if t.kind == kind)
    for t in tasks:
        if t == target:
            break
        rig.run(t)
    return rig, target


def check_idempotent(tmp_path: Path, prepare: Callable[[Path], tuple[Rig, Task]], has_undo: bool) -> tuple[Any, Any]:
    """check_idempotent runs a prepared task's do (twice), undo (twice) and do again, then kills its do at each
    file-system call and runs it again; every way must end where one run ends. It returns (before, done)."""
    rig, task = prepare(tmp_path / "ref")
    try:
        before = rig.snapshot()
        calls: list[str] = []
        with killing(None, calls):
            rig.run(task)
        done = rig.snapshot()
        rig.run(task)  # do again, on top of a complete run
        assert rig.snapshot() == done, "running do twice is not like running it once"
        if has_undo:
            rig.run(task, "undo")
            assert rig.snapshot() == before, "undo does not put back what do did"
            rig.run(task, "undo")
            assert rig.snapshot() == before, "undo twice is not like undo once"
            rig.run(task)
            assert rig.snapshot() == done, "do after undo is not like the first do"
    finally:
        rig.close()

    # A kill at each file-system call of do, then do again: the same end.
    for n in range(1, len(calls) + 1):
        rig, task = prepare(tmp_path / f"kill{n}")
        try:
            with pytest.raises(Killed), killing(n, []):
                rig.run(task)
            rig.run(task)
            assert rig.snapshot()[1] == done[1], f"state differs after a kill at {calls[n - 1]}"
            assert rel(rig.snapshot()[0]) == rel(done[0]), f"the root differs after a kill at {calls[n - 1]}"
        finally:
            rig.close()
    return before, done


@pytest.mark.parametrize(("flow", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_handler_is_idempotent(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, flow: str,
                               kind: str) -> None:
    check_idempotent(tmp_path, lambda base: prepared(base, root_key, acme_key, flow, kind),
                     KINDS[kind][1] is not None)


#: ABSOLUTE are the files under a root that name the rig's own directory: command wrappers, profiles.
ABSOLUTE = ("snap/bin/", "var/lib/profiles/")


def rel(t: dict[str, Any]) -> dict[str, Any]:
    """rel leaves out the content of the files that name the rig's own directory (absolute paths)."""
    return {k: (v if not k.startswith(ABSOLUTE) else ("absolute",)) for k, v in t.items()}


def test_the_manager_registers_these_kinds(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
    rig = Rig(tmp_path, root_key, acme_key)
    try:
        assert sorted(rig.runner.known_task_kinds()) == sorted(KINDS)
        for kind, (_do, undo) in KINDS.items():
            assert rig.runner.task_kind_has_undo(kind) is (undo is not None), kind
    finally:
        rig.close()
