# SPDX-License-Identifier: GPL-3.0-or-later
"""SnapManager: the snap manager, which registers its task kinds and hands its verbs on.

The constructor registers every task kind the manager owns, grouped by
lifecycle, do and undo side by side. What it keeps (SnapState, SnapSetup)
is in model.py; the public verbs (install, remove, refresh, revert, enable,
disable) are in snapstate.py and the handlers in handlers.py; backend/
does the file work. Imports point down: this module imports the others,
none of them imports it but for type annotations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import tenacity

from engine import Change, State, Task, TaskRunner

from ..errors import SnapNotInstalledError
from ..snap import DEFAULT_LIMITS, Limits
from ..snapstore import SnapStore, is_transient, open_snap_store
from . import snapstate
from .autorefresh import AutoRefresh, system_setting
from .backend import Backend
from .drift import DriftWatch
from .handlers import Handlers
from .model import CheckedFile, CheckSnap, ServiceRunner, SnapState, all_snap_states, check_snap_file, get_snap_state

if TYPE_CHECKING:
    from ..assertstate import AssertManager

log = logging.getLogger("managers.snapstate")

#: SNAPS_KEY is the state key holding every snap's SnapState, by name.
SNAPS_KEY = "snaps"
#: DEFAULT_RETAIN is how many revisions of a snap are kept (snapd's default on classic systems).
DEFAULT_RETAIN = 2
#: HOOK_KINDS are task kinds in the snap manager's graphs that the interface manager (and, for run-hook,
#: the hook manager) owns; until one registers them, the snap manager runs them as no-ops.
HOOK_KINDS = ("setup-profiles", "remove-profiles", "auto-connect", "auto-disconnect", "run-hook")

def default_download_retry() -> tenacity.Retrying:
    """default_download_retry is the policy for transient I/O errors while downloading: 5 attempts."""
    return tenacity.Retrying(retry=tenacity.retry_if_exception(is_transient),
                             wait=tenacity.wait_exponential(multiplier=0.5, max=30),
                             stop=tenacity.stop_after_attempt(5))


class SnapManager:
    """SnapManager installs, refreshes, reverts, enables, disables and removes snaps under a root."""

    def __init__(self, state: State, runner: TaskRunner, *, root: str | Path,
                 store: SnapStore | str | Path | None = None, assert_manager: AssertManager | None = None,
                 retain: int = DEFAULT_RETAIN,
                 limits: Limits = DEFAULT_LIMITS, download_retry: tenacity.Retrying | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if retain < 2:
            raise ValueError(f"cannot keep {retain} revisions of a snap: keep at least 2 (one to revert to)")
        self.state = state
        self.runner = runner
        self.backend = Backend(root, limits)
        #: snap_store is where snaps come from (None: only local files can be installed).
        self.snap_store = open_snap_store(store) if isinstance(store, (str, Path)) else store
        self.assert_manager = assert_manager
        self.retain = retain
        #: check_snap_fns run when a revision is mounted or prepared (add_check_snap adds one).
        self.check_snap_fns: list[CheckSnap] = []
        #: affected_by_kind maps a task kind of another manager to the snaps its tasks touch (conflict checks).
        self.affected_by_kind: dict[str, Callable[[Task], list[str]]] = {}
        #: The runner of the services (None: services are only recorded); the service manager sets itself.
        self.service_runner: ServiceRunner | None = None
        h = self.handlers = Handlers(self)
        #: clock is the time the manager decides by (the State's clock under test).
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.auto_refresh = AutoRefresh(self, self.clock)
        self.drift = DriftWatch(self)
        #: can_auto_refresh_checks are asked before an auto-refresh (seeding adds one: not before it is done).
        self.can_auto_refresh_checks: list[Callable[[], bool]] = []
        #: seeded_checks are called with a verb's name before it makes a change; one raises TooEarlyError
        #: while the system waits for seeding (FirstBoot adds it when a seed is configured).
        self.seeded_checks: list[Callable[[str], None]] = []

        # Getting the snap: from the store, or from a local file or revision.
        runner.add_handler("prerequisites", h.do_prerequisites)
        runner.add_handler("prepare-snap", h.do_prepare_snap)
        runner.add_handler("download-snap", h.do_download_snap, h.undo_download_snap,
                           retry=download_retry or default_download_retry())
        runner.add_handler("validate-snap", h.do_validate_snap)
        runner.add_handler("mount-snap", h.do_mount_snap, h.undo_mount_snap)
        # Switching revisions.
        runner.add_handler("stop-snap-services", h.do_stop_snap_services, h.undo_stop_snap_services)
        runner.add_handler("unlink-current-snap", h.do_unlink_snap, h.undo_unlink_snap)
        runner.add_handler("copy-snap-data", h.do_copy_snap_data, h.undo_copy_snap_data)
        runner.add_cleanup("copy-snap-data", h.cleanup_copy_snap_data)
        runner.add_handler("link-snap", h.do_link_snap, h.undo_link_snap)
        runner.add_handler("start-snap-services", h.do_start_snap_services, h.undo_start_snap_services)
        runner.add_handler("cleanup", h.do_cleanup)
        runner.add_handler("switch-snap-channel", h.do_switch_channel, h.undo_switch_channel)
        # Auto-refresh: the check that adds a lane per snap with an update to its change.
        runner.add_handler("check-refresh", self.auto_refresh.do_check_refresh)
        # Keeping the root as the state says: drift repair and clean-up (drift.py).
        runner.add_handler("repair-snap", self.drift.do_repair_snap)
        runner.add_handler("remove-files", self.drift.do_remove_files)
        # Removing: destructive steps last, with no undo.
        runner.add_handler("unlink-snap", h.do_unlink_snap, h.undo_unlink_snap)
        runner.add_handler("clear-snap", h.do_clear_snap)
        runner.add_handler("discard-snap", h.do_discard_snap)
        # Hook points of the interface manager: no-ops until it registers them.
        known = set(runner.known_task_kinds())
        for kind in HOOK_KINDS:
            if kind not in known:
                runner.add_handler(kind, h.do_nothing, h.do_nothing)

    # -- the manager protocol ----------------------------------------------------------

    def start_up(self) -> None:
        """start_up creates the directories under the root that every snap shares."""
        self.backend.setup_root()

    def ensure(self) -> None:
        """ensure starts an auto-refresh change when the refresh timer says one is due, a repair change when
        the root drifted from the state, a clean-up change for old downloads (docs/managers.md)."""
        self.auto_refresh.ensure()
        self.drift.ensure()

    def can_auto_refresh(self) -> bool:
        """can_auto_refresh says whether every check allows an auto-refresh now (lock held)."""
        return all(check() for check in self.can_auto_refresh_checks)

    # -- extension points ------------------------------------------------------------------

    def add_check_snap(self, fn: CheckSnap) -> None:
        """add_check_snap adds a check run when a revision is mounted or prepared (it may raise to refuse it)."""
        self.check_snap_fns.append(fn)

    def retained(self) -> int:
        """retained is how many revisions of a snap are kept: the system setting refresh.retain, else retain.

        Read with the state lock held (`overlord set system refresh.retain=3`; checked there, 2 to 20).
        """
        value = system_setting(self.state, "refresh.retain", None)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 2 else self.retain

    def add_affected_snaps(self, kind: str, fn: Callable[[Task], list[str]]) -> None:
        """add_affected_snaps tells conflict checks which snaps a task of another manager touches."""
        self.affected_by_kind[kind] = fn

    # -- reading state ------------------------------------------------------------------------

    def snaps(self) -> list[SnapState]:
        """snaps returns every installed snap, by name (lock held)."""
        return list(all_snap_states(self.state).values())

    def info_or_none(self, name: str) -> SnapState | None:
        """info_or_none returns an installed snap, or None (lock held)."""
        return get_snap_state(self.state, name)

    def info(self, name: str) -> SnapState:
        """info returns an installed snap; SnapNotInstalledError otherwise (lock held)."""
        snapst = get_snap_state(self.state, name)
        if snapst is None:
            raise SnapNotInstalledError(f"snap {name!r} is not installed")
        return snapst

    # -- verbs (snapstate.py): each needs the state lock and returns the new change -------------

    def check_seeded(self, verb: str) -> None:
        """check_seeded raises TooEarlyError while the system waits for its seeding (lock held)."""
        for check in self.seeded_checks:
            check(verb)

    def install(self, names: str | Sequence[str], *, channel: str | None = None,
                revision: str | None = None) -> Change:
        """install installs snaps from the store, one lane per snap (lock held).

        Each tracks channel (default latest/stable) and gets the revision it
        offers, or the given revision (one snap only).
        """
        self.check_seeded("install")
        return snapstate.install(self, _names(names), channel=channel, revision=revision)

    def check_file(self, path: str | Path) -> CheckedFile:
        """check_file reads and checks a local snap file whole, without the lock (call it before taking it).

        What it returns is given to install_path (checked=), which then only
        records the change: the slow part of a local install is done
        while other requests are served.
        """
        return check_snap_file(Path(path), self.backend.limits)

    def install_path(self, path: str | Path, *, dangerous: bool = False, remove_path: bool = False,
                     filename: str | None = None, checked: CheckedFile | None = None) -> Change:
        """install_path installs (or refreshes to) a local snap file (lock held).

        Without dangerous, the file needs a snap-revision (and its chain) in the
        assertion database; with it, it gets the next local revision (x1, x2...).
        filename is the file's name as the change summary shows it (default: path's).
        checked is what check_file said of the file (read before the lock was taken);
        without it the file is read and checked here, under the lock.
        """
        self.check_seeded("install")
        return snapstate.install_path(self, Path(path), dangerous=dangerous, remove_path=remove_path,
                                      filename=filename, checked=checked)

    def refresh(self, names: str | Sequence[str] | None = None, *, channel: str | None = None,
                revision: str | None = None) -> Change:
        """refresh moves snaps (all store snaps by default) to a newer revision of their channel (lock held).

        With channel (one snap), the snap tracks that channel from then on; with
        revision (one snap), it goes to that revision, newer or older.
        """
        self.check_seeded("refresh")
        return snapstate.refresh(self, None if names is None else _names(names), channel=channel,
                                 revision=revision)

    def switch(self, name: str, channel: str) -> Change:
        """switch makes a snap track another channel without refreshing it (lock held)."""
        self.check_seeded("switch")
        return snapstate.switch(self, name, channel)

    def remove(self, names: str | Sequence[str], *, revision: str | None = None) -> Change:
        """remove removes snaps (or one inactive revision of one snap) (lock held)."""
        self.check_seeded("remove")
        return snapstate.remove(self, _names(names), revision=revision)

    def revert(self, name: str, *, revision: str | None = None) -> Change:
        """revert goes back to the previous revision in the sequence (or the given one) (lock held)."""
        self.check_seeded("revert")
        return snapstate.revert(self, name, revision=revision)

    def enable(self, name: str) -> Change:
        """enable makes a disabled snap usable again (lock held)."""
        self.check_seeded("enable")
        return snapstate.enable(self, name)

    def disable(self, name: str) -> Change:
        """disable makes a snap unusable without removing it (lock held)."""
        self.check_seeded("disable")
        return snapstate.disable(self, name)


def _names(names: str | Sequence[str]) -> list[str]:
    out = [names] if isinstance(names, str) else list(names)
    if not out:
        raise ValueError("cannot act on no snaps: give at least one name")
    return list(dict.fromkeys(out))
