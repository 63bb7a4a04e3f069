# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap manager's do and undo handlers.

Each runs without the state lock and takes it to read and write; the file
work goes through the backend. Every handler is idempotent (run again
after a kill at any point, it converges), and a do handler that fails puts
back what it changed itself: a task in Error is not undone, so its own
half-done work must not stay. A handler whose work ends in a state write
sets its task Done in that same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import Retry, Task, Tomb

from ..assertstate import fetch_chain
from ..errors import AssertionVerifyError, ManagerError, StoreError
from ..snap import SnapInfo
from .model import (
    SnapManagerView,
    SnapSetup,
    SnapState,
    get_snap_state,
    mark_done,
    set_snap_state,
    set_task_snap_setup,
    task_snap_setup,
)

log = logging.getLogger("managers.snapstate")

#: CONFIG_KEY is the state key of the snaps' configuration (managers.configstate owns it).
CONFIG_KEY = "config"
#: DISK_MARGIN is the space prerequisites wants free beyond a snap's size (snapd's 5 MiB).
DISK_MARGIN = 5 * 1024 * 1024


class Handlers:
    """Handlers holds the do/undo functions the SnapManager registers."""

    def __init__(self, sm: SnapManagerView) -> None:
        self.sm = sm
        self.backend = sm.backend

    # -- helpers ---------------------------------------------------------------------------

    def _read(self, task: Task) -> tuple[SnapSetup, SnapState | None]:
        with task.state:
            setup = task_snap_setup(task)
            return setup, get_snap_state(task.state, setup.name)

    @staticmethod
    def _cleaning(undo: Callable[[], Any], work: Callable[[], Any]) -> Any:
        """_cleaning runs work; if it raises, undo puts back what it did, then the error goes on."""
        try:
            return work()
        except Exception:  # not BaseException: a process going down leaves the rest to the next run
            try:
                undo()
            except Exception:
                log.exception("cannot put back what a failed task did")
            raise

    def do_nothing(self, task: Task, tomb: Tomb) -> None:
        """do_nothing runs the interface manager's task kinds until one registers them."""
        with task.state:
            log.debug("task %s (%s): no interface manager, nothing to do", task.id, task.kind)

    # -- getting the snap ------------------------------------------------------------------

    def do_prerequisites(self, task: Task, tomb: Tomb) -> None:
        """do_prerequisites checks that the root has room for the snap (size plus a margin)."""
        setup, _ = self._read(task)
        if setup.source not in ("store", "file"):
            return
        most = self.backend.limits.max_file
        if setup.size > most:  # what the store says, before a byte is downloaded (no snap can be that large)
            raise ManagerError(f"cannot install snap {setup.name!r}: its file is {setup.size} bytes, more than "
                               f"a snap file may be ({most}, Limits.max_file)")
        free = self.backend.free_space()
        need = setup.size + DISK_MARGIN
        if free < need:
            raise ManagerError(f"cannot install snap {setup.name!r}: {self.backend.root} has {free} bytes free, "
                               f"{need} are needed")

    def do_prepare_snap(self, task: Task, tomb: Tomb) -> None:
        """do_prepare_snap checks that what the change starts from is there: a file or an installed revision."""
        setup, _ = self._read(task)
        if setup.source == "file":
            try:
                ok = Path(setup.path).is_file()
            except OSError:
                ok = False
            if not ok:
                raise ManagerError(f"cannot install snap {setup.name!r} from {setup.path}: the file is gone")
        elif not self.backend.revision_dir(setup.name, setup.revision).is_dir():
            raise ManagerError(f"cannot use revision {setup.revision} of snap {setup.name!r}: "
                               f"{self.backend.revision_dir(setup.name, setup.revision)} is missing")

    def do_download_snap(self, task: Task, tomb: Tomb) -> None:
        """do_download_snap copies the snap file from the store, resuming, with progress."""
        setup, _ = self._read(task)
        store = self.sm.snap_store
        if store is None:
            raise StoreError(f"cannot download snap {setup.name!r}: no store is configured")
        ss = store.snap(setup.name, setup.revision)
        if (ss.sha3_384, ss.size) != (setup.sha3_384, setup.size):
            raise StoreError(f"cannot download snap {setup.name!r} (revision {setup.revision}): the store "
                             "changed that revision's file since the change was made")
        step = max(setup.size // 20, 1024 * 1024)
        shown = [-step]

        def progress(done: int, total: int) -> None:
            if tomb.is_dying():
                raise Retry(reason="download interrupted")
            if done - shown[0] >= step or done == total:
                shown[0] = done
                with task.state:
                    task.set_progress(f"Download snap {setup.name!r}", done, total)

        self.backend.fetch_blob(setup.name, setup.revision, lambda: store.open(ss), setup.sha3_384, setup.size,
                                progress)

    def undo_download_snap(self, task: Task, tomb: Tomb) -> None:
        """undo_download_snap deletes the downloaded file."""
        setup, _ = self._read(task)
        self.backend.remove_blob(setup.name, setup.revision)

    def do_validate_snap(self, task: Task, tomb: Tomb) -> None:
        """do_validate_snap fetches the snap's assertions (from the store) and checks the file against them."""
        setup, _ = self._read(task)
        am = self.sm.assert_manager
        if am is None:
            raise AssertionVerifyError(f"cannot check snap {setup.name!r}: there is no assertion database")
        found = []
        if setup.source == "store":
            store = self.sm.snap_store
            if store is None:
                raise StoreError(f"cannot fetch the assertions of snap {setup.name!r}: no store is configured")
            found = fetch_chain(store.assertion, "snap-revision", (setup.sha3_384,), am.trusted)
        with task.state:
            am.add_many(found, keep_newer=True)
            what = f"cannot install snap {setup.name!r} (revision {setup.revision})"
            rev = am.get("snap-revision", (setup.sha3_384,))
            if rev is None:
                raise AssertionVerifyError(f"{what}: no snap-revision assertion for its sha3-384 {setup.sha3_384}")
            ref = f"snap-revision {setup.sha3_384[:12]}..."
            if int(rev.header("snap-size")) != setup.size:
                raise AssertionVerifyError(f"{what}: {ref} says {rev.header('snap-size')} bytes, the file has "
                                           f"{setup.size}")
            if setup.snap_id and rev.header("snap-id") != setup.snap_id:
                raise AssertionVerifyError(f"{what}: {ref} is for snap id {rev.header('snap-id')}, the store "
                                           f"says {setup.snap_id}")
            if rev.header("snap-revision") != setup.revision:
                raise AssertionVerifyError(f"{what}: {ref} says it is revision {rev.header('snap-revision')}")
            decl = am.get("snap-declaration", ("16", rev.header("snap-id")))
            if decl is None:
                raise AssertionVerifyError(f"{what}: no snap-declaration for snap id {rev.header('snap-id')}")
            if decl.header("snap-name") != setup.name:
                raise AssertionVerifyError(f"{what}: snap-declaration {rev.header('snap-id')} is for the snap "
                                           f"named {decl.header('snap-name')!r}")
            setup.snap_id = rev.header("snap-id")
            setup.publisher_id = decl.header("publisher-id")
            set_task_snap_setup(task, setup)
            mark_done(task)

    def do_mount_snap(self, task: Task, tomb: Tomb) -> None:
        """do_mount_snap puts the snap file in place (a local one is copied) and extracts it."""
        setup, snapst = self._read(task)
        b = self.backend

        def work() -> SnapInfo:
            if setup.source == "file":
                path = setup.path

                def opener() -> Any:
                    return open(path, "rb")

                b.fetch_blob(setup.name, setup.revision, opener, setup.sha3_384, setup.size)
            info = b.mount(setup.name, setup.revision).with_side(
                revision=setup.revision, snap_id=setup.snap_id, publisher_id=setup.publisher_id,
                sha3_384=setup.sha3_384, size=setup.size)
            for check in self.sm.check_snap_fns:
                check(info, snapst.info if snapst is not None else None)
            return info

        info = self._cleaning(lambda: self._unmount(setup), work)
        with task.state:
            setup.info = info.to_dict()
            set_task_snap_setup(task, setup)
            mark_done(task)

    def _unmount(self, setup: SnapSetup) -> None:
        self.backend.unmount(setup.name, setup.revision)
        if setup.source == "file":
            self.backend.remove_blob(setup.name, setup.revision)

    def undo_mount_snap(self, task: Task, tomb: Tomb) -> None:
        """undo_mount_snap deletes the extracted revision (and a copied local file)."""
        setup, _ = self._read(task)
        self._unmount(setup)

    # -- services ------------------------------------------------------------------------------

    def do_stop_snap_services(self, task: Task, tomb: Tomb) -> None:
        """do_stop_snap_services stops the snap's active services, remembering which were active."""
        with task.state:
            setup = task_snap_setup(task)
            stopped = task.get("stopped-services", None)
            if stopped is None:
                stopped = self.backend.active_services(setup.name)
                task.set("stopped-services", stopped)  # committed before anything stops
        self._cleaning(lambda: self._restart(task, stopped), lambda: self._stop_services(setup.name, stopped))

    def _start_services(self, info: SnapInfo, apps: list[str]) -> None:
        """_start_services records services active, then has the service runner (if any) start them."""
        self.backend.start_services(info, apps)
        runner = self.sm.service_runner
        if runner is not None and apps:
            runner.start_services(info, apps)

    def _stop_services(self, name: str, apps: list[str]) -> None:
        """_stop_services records services inactive, then has the service runner (if any) stop them."""
        self.backend.stop_services(name, apps)
        runner = self.sm.service_runner
        if runner is not None and apps:
            runner.stop_services(name, apps)

    def _restart(self, task: Task, apps: list[str]) -> None:
        with task.state:
            snapst = get_snap_state(task.state, task_snap_setup(task).name)
        if snapst is not None and apps and self.backend.linked_revision(snapst.name) == snapst.current:
            self._start_services(snapst.info, apps)

    def undo_stop_snap_services(self, task: Task, tomb: Tomb) -> None:
        """undo_stop_snap_services starts again the services it stopped."""
        with task.state:
            stopped = task.get("stopped-services", [])
        self._restart(task, stopped)

    def do_start_snap_services(self, task: Task, tomb: Tomb) -> None:
        """do_start_snap_services starts the services of the snap's current revision."""
        with task.state:
            snapst = get_snap_state(task.state, task_snap_setup(task).name)
            if snapst is None:
                raise ManagerError(f"internal error: task {task.id}: the snap is not installed")
            info = snapst.info
            # The runner leaves out the services disabled by hand or by install-mode; a rerun after a crash
            # decides the same (what it wrote, if anything, is committed with this block).
            runner = self.sm.service_runner
            apps = runner.startable(info) if runner is not None else [a.name for a in info.services]
        self._cleaning(lambda: self._stop_services(info.name, apps), lambda: self._start_services(info, apps))
        with task.state:
            task.set("started-services", apps)
            mark_done(task)

    def undo_start_snap_services(self, task: Task, tomb: Tomb) -> None:
        """undo_start_snap_services stops the services it started."""
        with task.state:
            name = task_snap_setup(task).name
            apps = task.get("started-services", None)
        if apps is None:
            apps = list(self.backend.services(name))
        self._stop_services(name, apps)

    # -- switching revisions ---------------------------------------------------------------------

    def do_unlink_snap(self, task: Task, tomb: Tomb) -> None:
        """do_unlink_snap makes the current revision unavailable (unlink-current-snap, unlink-snap)."""
        setup, snapst = self._read(task)
        if snapst is None:
            raise ManagerError(f"internal error: task {task.id}: snap {setup.name!r} is not installed")
        info = snapst.info
        self._cleaning(lambda: self.backend.link(info), lambda: self.backend.unlink(setup.name))
        self._set_active(task, setup.name, False)

    def undo_unlink_snap(self, task: Task, tomb: Tomb) -> None:
        """undo_unlink_snap links the current revision again."""
        setup, snapst = self._read(task)
        if snapst is None:
            return
        self.backend.link(snapst.info)
        self._set_active(task, setup.name, True)

    def _set_active(self, task: Task, name: str, active: bool) -> None:
        with task.state:
            snapst = get_snap_state(task.state, name)
            if snapst is not None:
                snapst.active = active
                set_snap_state(task.state, name, snapst)
            mark_done(task)

    def do_copy_snap_data(self, task: Task, tomb: Tomb) -> None:
        """do_copy_snap_data copies the current revision's data for the new one (or makes it empty)."""
        with task.state:
            setup = task_snap_setup(task)
            snapst = get_snap_state(task.state, setup.name)
            had = task.get("had-data", None)
            if had is None:  # decided once, before anything is touched
                had = self.backend.data_dir(setup.name, setup.revision).exists()
                task.set("had-data", had)
        old = snapst.current if snapst is not None else None
        self._cleaning(lambda: self.backend.undo_copy_data(setup.name, setup.revision, last=snapst is None),
                       lambda: self.backend.copy_data(setup.name, old, setup.revision, had_data=had))

    def undo_copy_snap_data(self, task: Task, tomb: Tomb) -> None:
        """undo_copy_snap_data deletes the new revision's data (and common/ for a snap no longer installed)."""
        setup, snapst = self._read(task)
        self.backend.undo_copy_data(setup.name, setup.revision, last=snapst is None)

    def cleanup_copy_snap_data(self, task: Task, tomb: Tomb) -> None:
        """cleanup_copy_snap_data deletes the data copy_data set aside, once the change is ready."""
        setup, _ = self._read(task)
        self.backend.cleanup_copy_data(setup.name, setup.revision)

    def do_link_snap(self, task: Task, tomb: Tomb) -> None:
        """do_link_snap makes the new revision current: files first, then the sequence in state."""
        setup, _ = self._read(task)
        info = setup.snap_info
        self._cleaning(lambda: self.backend.unlink(setup.name), lambda: self.backend.link(info))
        with task.state:
            st = task.state
            # What the snap's state was before this task, recorded once ({"snap": None}: not installed).
            recorded = task.get("old-snap-state", None)
            if recorded is None:
                current = get_snap_state(st, setup.name)
                recorded = {"snap": current.to_dict() if current is not None else None}
                task.set("old-snap-state", recorded)
            old = recorded["snap"]
            snapst = SnapState.from_dict(setup.name, old) if old is not None else SnapState(setup.name)
            i = snapst.index(info.revision)
            if i < 0:
                snapst.sequence.append(info)
            elif not setup.revert:
                del snapst.sequence[i]  # a revision installed again moves to the end (snapd)
                snapst.sequence.append(info)
            snapst.current = info.revision
            snapst.active = True
            if setup.channel:
                snapst.channel = setup.channel
            set_snap_state(st, setup.name, snapst)
            mark_done(task)

    def undo_link_snap(self, task: Task, tomb: Tomb) -> None:
        """undo_link_snap unlinks the new revision and puts the snap's state back as it was."""
        with task.state:
            setup = task_snap_setup(task)
            recorded = task.get("old-snap-state", None)
        self.backend.unlink(setup.name)
        with task.state:
            if recorded is not None:  # None: the do never got to change the state
                old = recorded["snap"]
                restored = SnapState.from_dict(setup.name, old) if old is not None else None
                now = get_snap_state(task.state, setup.name)
                if restored is not None and now is not None:
                    # Revisions that later steps of the change discarded (the ones beyond those retained)
                    # do not come back: their files are gone, and undo does not bring files back (snapd).
                    restored.sequence = [i for i in restored.sequence
                                         if i.revision == restored.current or now.index(i.revision) >= 0]
                set_snap_state(task.state, setup.name, restored)
            mark_done(task)

    def do_cleanup(self, task: Task, tomb: Tomb) -> None:
        """do_cleanup deletes what the install no longer needs: a partial download, an uploaded file."""
        setup, _ = self._read(task)
        self.backend.remove_file(self.backend.partial_blob(setup.name, setup.revision))
        if setup.source == "file" and setup.remove_path:
            self.backend.remove_file(setup.path)

    def do_switch_channel(self, task: Task, tomb: Tomb) -> None:
        """do_switch_channel makes the snap track the setup's channel, remembering the one it tracked."""
        with task.state:
            setup = task_snap_setup(task)
            snapst = get_snap_state(task.state, setup.name)
            if snapst is None:
                raise ManagerError(f"cannot switch snap {setup.name!r}: it is not installed")
            if not task.has("old-channel"):
                task.set("old-channel", snapst.channel)
            snapst.channel = setup.channel
            set_snap_state(task.state, setup.name, snapst)
            mark_done(task)

    def undo_switch_channel(self, task: Task, tomb: Tomb) -> None:
        """undo_switch_channel puts back the channel the snap tracked."""
        with task.state:
            setup = task_snap_setup(task)
            snapst = get_snap_state(task.state, setup.name)
            if snapst is not None and task.has("old-channel"):
                snapst.channel = str(task.get("old-channel"))
                set_snap_state(task.state, setup.name, snapst)
            mark_done(task)

    # -- removing ----------------------------------------------------------------------------------

    def do_clear_snap(self, task: Task, tomb: Tomb) -> None:
        """do_clear_snap deletes a revision's data (and common/ with the last revision)."""
        with task.state:
            setup = task_snap_setup(task)
            last = bool(task.get("last", False))
        self.backend.clear_data(setup.name, setup.revision, last=last)

    def do_discard_snap(self, task: Task, tomb: Tomb) -> None:
        """do_discard_snap drops a revision from the sequence, then deletes its files."""
        with task.state:
            st = task.state
            setup = task_snap_setup(task)
            last = bool(task.get("last", False))
            snapst = get_snap_state(st, setup.name)
            if snapst is not None:
                i = snapst.index(setup.revision)
                if i >= 0:
                    if setup.revision == snapst.current and len(snapst.sequence) > 1:
                        raise ManagerError(f"internal error: cannot discard the current revision {setup.revision} "
                                           f"of snap {setup.name!r}")
                    del snapst.sequence[i]
                    set_snap_state(st, setup.name, snapst if snapst.sequence else None)
                    if not snapst.sequence:  # the snap is gone: so is its configuration (snapd)
                        config = st.get(CONFIG_KEY, {})
                        if isinstance(config, dict) and setup.name in config:
                            st.set(CONFIG_KEY, {k: v for k, v in config.items() if k != setup.name} or None)
        self.backend.discard(setup.name, setup.revision, last=last)
