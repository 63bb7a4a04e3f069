# SPDX-License-Identifier: GPL-3.0-or-later
"""A SystemOverlord on temporary directories with a sample store, and the snaps the manager tests make."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tenacity

from engine import Change, Status
from engine.testing import FakeClock
from managers import SystemOverlord
from managers.asserts import PrivateKey
from managers.asserts.build import snap_id_for
from managers.snap import pack
from managers.snapstate import SnapManager
from managers.snapstore import is_transient
from overlord.samples import SampleStore, build_store

#: NO_WAIT retries a download at once (tests drive time; the default policy waits seconds).
NO_WAIT = tenacity.Retrying(retry=tenacity.retry_if_exception(is_transient),
                            wait=tenacity.wait_none(), stop=tenacity.stop_after_attempt(5))


# kind -> (do, undo) handler names on sm.handlers (or a dotted path from the SnapManager), as it registers them.
KINDS: dict[str, tuple[str, str | None]] = {
    "prerequisites": ("do_prerequisites", None),
    "prepare-snap": ("do_prepare_snap", None),
    "download-snap": ("do_download_snap", "undo_download_snap"),
    "validate-snap": ("do_validate_snap", None),
    "mount-snap": ("do_mount_snap", "undo_mount_snap"),
    "stop-snap-services": ("do_stop_snap_services", "undo_stop_snap_services"),
    "unlink-current-snap": ("do_unlink_snap", "undo_unlink_snap"),
    "copy-snap-data": ("do_copy_snap_data", "undo_copy_snap_data"),
    "link-snap": ("do_link_snap", "undo_link_snap"),
    "start-snap-services": ("do_start_snap_services", "undo_start_snap_services"),
    "cleanup": ("do_cleanup", None),
    "unlink-snap": ("do_unlink_snap", "undo_unlink_snap"),
    "clear-snap": ("do_clear_snap", None),
    "discard-snap": ("do_discard_snap", None),
    "setup-profiles": ("do_nothing", "do_nothing"),
    "remove-profiles": ("do_nothing", "do_nothing"),
    "auto-connect": ("do_nothing", "do_nothing"),
    "auto-disconnect": ("do_nothing", "do_nothing"),
    "run-hook": ("do_nothing", "do_nothing"),
    "switch-snap-channel": ("do_switch_channel", "undo_switch_channel"),
    # kinds whose handlers are not on sm.handlers: a path from the SnapManager
    "check-refresh": ("auto_refresh.do_check_refresh", None),
    "repair-snap": ("drift.do_repair_snap", None),
    "remove-files": ("drift.do_remove_files", None),
    "run-queued-request": (".do_queued_request", None),  # the SnapManager's own (a leading dot)
}


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """tree snapshots every entry under root: directories, symlink targets, file modes and digests."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def make_snap(base: Path, name: str, version: str, *, apps: str | None = None, extra: str = "",
              files: dict[str, str] | None = None, hooks: dict[str, str] | None = None) -> Path:
    """make_snap packs a small snap named name at version into base; hooks are scripts for meta/hooks/<name>."""
    d = base / f"src-{name}-{version}"
    (d / "meta").mkdir(parents=True, exist_ok=True)
    (d / "bin").mkdir(exist_ok=True)
    if apps is None:
        apps = (f"apps:\n  {name}:\n    command: bin/run\n  svc:\n    command: bin/run --serve\n"
                "    daemon: simple\n")
    (d / "meta" / "snap.yaml").write_text(f"name: {name}\nversion: '{version}'\nsummary: The {name} snap\n"
                                          f"{apps}{extra}")
    (d / "bin" / "run").write_text(f"#!/bin/sh\necho {name} {version}\n")
    os.chmod(d / "bin" / "run", 0o755)
    for rel, content in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(content)
    for hook, script in (hooks or {}).items():
        path = d / "meta" / "hooks" / hook
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        os.chmod(path, 0o755)
    return pack(d, base)


class System:
    """System is a SystemOverlord on temporary directories, with a sample store."""

    def __init__(self, base: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock,
                 names: tuple[str, ...] = ("hello",), **options: Any) -> None:
        self.base = base
        self.clock = clock
        self.root = base / "root"
        self.state_dir = base / "state"
        self.sample: SampleStore = build_store(base / "store", root_key, acme_key, versions=(), names=names)
        self.options = {"store": base / "store", "trusted_key": root_key.public_key, "clock": clock,
                        "synchronous": "NORMAL", "download_retry": NO_WAIT, **options}
        self.o = SystemOverlord(self.state_dir, self.root, **self.options)

    @property
    def sm(self) -> SnapManager:
        return self.o.snap_manager

    def publish(self, name: str, version: str, *, channels: tuple[str, ...] = ("stable",), **kw: Any) -> str:
        """publish packs a small snap and adds it to the store, released to channels; it returns its revision."""
        build = self.base / "build"
        build.mkdir(exist_ok=True)
        snap = make_snap(build, name, version, **kw)
        return self.sample.snap_store.publish(snap, key=self.sample.publisher_key, developer_id="acme",
                                         snap_id=snap_id(name), channels=channels).revision

    def run(self, make: Callable[[SnapManager], Change], timeout: float = 60) -> str:
        """run makes a change with make(snap_manager) under the lock, settles, and returns its id."""
        with self.o.state:
            cid = make(self.sm).id
        self.o.settle(timeout)
        return cid

    def status(self, cid: str) -> Status:
        with self.o.state:
            chg = self.o.state.change(cid)
            assert chg is not None
            return chg.status

    def tasks(self, cid: str) -> list[tuple[str, Status]]:
        with self.o.state:
            chg = self.o.state.change(cid)
            assert chg is not None
            return [(t.kind, t.status) for t in chg.tasks()]

    def err(self, cid: str) -> str:
        with self.o.state:
            chg = self.o.state.change(cid)
            assert chg is not None
            e = chg.err()
            return str(e) if e else ""

    def snaps_state(self) -> Any:
        with self.o.state:
            return json.loads(json.dumps(self.o.state.get("snaps", {})))

    def snapshot(self) -> tuple[dict[str, tuple[Any, ...]], Any]:
        return tree(self.root), self.snaps_state()

    def restart(self, **options: Any) -> None:
        self.o.stop()
        self.o = SystemOverlord(self.state_dir, self.root, **{**self.options, **options})

    def stop(self) -> None:
        self.o.stop()


def snap_id(name: str) -> str:
    return snap_id_for(name)
