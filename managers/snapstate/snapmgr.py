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

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from engine import Change, ChangeConflictError, DatabaseCorruptError, State, Task, TaskRunner, Tomb

from ..errors import ManagerError, SnapNotInstalledError
from ..snap import DEFAULT_LIMITS, Limits
from ..snapstore import SnapStore, is_transient, open_snap_store
from . import snapstate
from .autorefresh import AutoRefresh, system_setting
from .backend import Backend
from .conflict import busy_snaps, snap_key
from .drift import DriftWatch
from .handlers import Handlers
from .lookup import StaleLookupError, StoreAnswers, store_lookup
from .model import (
    CheckedFile,
    CheckSnap,
    ServiceRunner,
    SnapState,
    all_snap_states,
    check_snap_file,
    get_snap_state,
    mark_done,
)

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
#: LOOKUP_ATTEMPTS is how often with_store_answers reads the store again when the snaps changed meanwhile.
LOOKUP_ATTEMPTS = 3
#: STORE_VERBS are the verbs that read the store (the others decide from the state alone).
STORE_VERBS = ("install", "refresh")
T = TypeVar("T")

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
        #: The idempotency key of the verb being served (None: none); see _request.
        self.request_key: str | None = None
        #: The change of a queued request whose turn came (None: a verb makes its own change); see _queued.
        self.into_change: Change | None = None
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
        # A verb asked with on_conflict="queue": it runs once the changes in progress on its snaps are done.
        runner.add_handler(QUEUED_KIND, self.do_queued_request)
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
        """start_up creates the directories under the root that every snap shares, and declares what the
        unready changes of a state written before changes declared their snaps affect (conflict checks find
        changes by those keys)."""
        self.backend.setup_root()
        st = self.state
        with st:
            for chg in st.changes():
                try:
                    names = chg.get("snap-names", None)
                except DatabaseCorruptError as e:  # a row edited by hand: the API reports it; not a reason to stop
                    log.warning("%s", " ".join(str(e).split()))
                    continue
                if names and isinstance(names, list) and not chg.is_ready() and not chg.affects():
                    chg.affect(*[snap_key(n) for n in names if isinstance(n, str) and n])

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

    # An idempotency key (Idempotency-Key of the REST API): a verb called again with the key of a change it made
    # returns that change, before any check (the snap may be installed by now); see docs/managers.md.

    def _keyed(self, key: str | None, verb: str) -> Change | None:
        """_keyed is the change a verb's idempotency key names already, or None (ChangeConflictError when
        the key names a change another verb made)."""
        chg = self.state.change_by_key(key) if key is not None else None
        if chg is not None and chg.kind not in _VERB_KINDS[verb]:
            raise ChangeConflictError(chg.id, f"cannot {verb} with key {key!r}: it names change {chg.id} "
                                              f"({chg.kind})", change_kind=chg.kind, subject=key)
        return chg

    def _queued(self, verb: str, names: list[str], key: str | None, on_conflict: str, **args: Any) -> Change | None:
        """_queued is, with on_conflict "queue" while unready changes affect names, a change that waits for them
        (engine: new_change(on_conflict="queue")) and then runs the verb: its one task, run-queued-request,
        builds the verb's task sets into it then, with the checks made then. None: do it now."""
        if on_conflict not in ("refuse", "queue"):
            raise ManagerError(f"cannot {verb}: on_conflict must be 'refuse' or 'queue', not {on_conflict!r}")
        if on_conflict == "refuse" or not busy_snaps(self, names):
            return None
        st = self.state
        chg = st.new_change(_VERB_KINDS[verb][0], snapstate.change_summary(verb.capitalize(), names), key=key,
                            affects=[snap_key(n) for n in names], on_conflict="queue")
        if not chg.is_new:
            return chg
        quoted = ", ".join(f'"{n}"' for n in names)
        t = st.new_task(QUEUED_KIND, f"{verb.capitalize()} {quoted} once the changes in progress on "
                                     f"{'it' if len(names) == 1 else 'them'} are done")
        t.set("request", {"verb": verb, "names": names, "args": {k: v for k, v in args.items() if v is not None}})
        chg.add_task(t)
        chg.set("snap-names", names)
        st.ensure_before(0)
        return chg

    def do_queued_request(self, task: Task, tomb: Tomb) -> None:
        """do_queued_request runs a queued verb now that its turn came: its task sets join this task's change
        (the verb's checks apply now: a snap installed meanwhile makes an install fail, say). The store is
        read before the lock is taken (with_store_answers)."""
        st = task.state
        with st:
            request = task.get("request")
        verb, names, args = request["verb"], list(request["names"]), dict(request.get("args", {}))

        def act(found: StoreAnswers | None) -> None:
            self.into_change = task.change()
            try:
                if verb == "install":
                    snapstate.install(self, names, found=found, **args)
                elif verb == "refresh":
                    snapstate.refresh(self, names, found=found, **args)
                elif verb == "remove":
                    snapstate.remove(self, names, **args)
                else:
                    getattr(snapstate, verb)(self, names[0], **args)
            finally:
                self.into_change = None
            task.logf("Started the %s of %s", verb, ", ".join(names))
            mark_done(task)

        self.with_store_answers(verb, names, act, channel=args.get("channel"), revision=args.get("revision"))

    def with_store_answers(self, verb: str, names: Sequence[str] | None, act: Callable[[StoreAnswers | None], T], *,
                           channel: str | None = None, revision: str | None = None, key: str | None = None,
                           on_conflict: str = "refuse") -> T:
        """with_store_answers reads what verb needs of the store WITHOUT the state lock, then calls act(found)
        with the lock held and returns what it returns; call it without the lock.

        The lock is held only to decide and record: a slow (or hostile) store
        holds no other request. act passes found to install or refresh (found=),
        which decide again from the state as it is then; when they needed an
        answer that was not looked up (the snap changed meanwhile) the store is
        read again, LOOKUP_ATTEMPTS times at most. Verbs that do not read the
        store get None. Nothing is read when key names a change already or a
        queued request will wait for the changes in progress (it reads the
        store when its turn comes).
        """
        st = self.state
        for attempt in range(1, LOOKUP_ATTEMPTS + 1):
            found: StoreAnswers | None = None
            if verb in STORE_VERBS and self.snap_store is not None:
                with st:
                    answered = key is not None and st.change_by_key(key) is not None
                    queued = on_conflict == "queue" and bool(names) and bool(busy_snaps(self, names or []))
                    held = self.auto_refresh.held_snaps(st, self.clock()) if names is None else {}
                if answered or queued:
                    found = StoreAnswers(self.snap_store.location)
                else:
                    found = store_lookup(self, verb, names, channel=channel, revision=revision, skip=held)
            with st:
                try:
                    return act(found)
                except StaleLookupError:
                    if attempt == LOOKUP_ATTEMPTS:
                        raise
                    log.info("the snaps of a %s changed while the store was read: reading it again", verb)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _request(self, key: str | None) -> Iterator[None]:
        """_request makes the change a verb builds take key (snapstate.new_change reads it)."""
        self.request_key = key
        try:
            yield
        finally:
            self.request_key = None

    def check_seeded(self, verb: str) -> None:
        """check_seeded raises TooEarlyError while the system waits for its seeding (lock held)."""
        for check in self.seeded_checks:
            check(verb)

    def install(self, names: str | Sequence[str], *, channel: str | None = None,
                revision: str | None = None, key: str | None = None, on_conflict: str = "refuse",
                found: StoreAnswers | None = None) -> Change:
        """install installs snaps from the store, one lane per snap (lock held).

        Each tracks channel (default latest/stable) and gets the revision it
        offers, or the given revision (one snap only). found: the store's
        answers, read without the lock (with_store_answers); without it the
        store is read here, with the lock held.
        """
        keyed = self._keyed(key, "install")
        if keyed is not None:
            return keyed
        self.check_seeded("install")
        queued = self._queued("install", _names(names), key, on_conflict, channel=channel, revision=revision)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.install(self, _names(names), channel=channel, revision=revision, found=found)

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
                revision: str | None = None, key: str | None = None, on_conflict: str = "refuse",
                found: StoreAnswers | None = None) -> Change:
        """refresh moves snaps (all store snaps by default) to a newer revision of their channel (lock held).

        With channel (one snap), the snap tracks that channel from then on; with
        revision (one snap), it goes to that revision, newer or older. found:
        as for install.
        """
        keyed = self._keyed(key, "refresh")
        if keyed is not None:
            return keyed
        self.check_seeded("refresh")
        queued = self._queued("refresh", _names(names) if names is not None else [], key, on_conflict, channel=channel,
                              revision=revision) if names is not None else None
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.refresh(self, None if names is None else _names(names), channel=channel,
                                     revision=revision, found=found)

    def switch(self, name: str, channel: str, *, key: str | None = None, on_conflict: str = "refuse") -> Change:
        """switch makes a snap track another channel without refreshing it (lock held)."""
        found = self._keyed(key, "switch")
        if found is not None:
            return found
        self.check_seeded("switch")
        queued = self._queued("switch", [name], key, on_conflict, channel=channel)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.switch(self, name, channel)

    def remove(self, names: str | Sequence[str], *, revision: str | None = None, key: str | None = None,
               on_conflict: str = "refuse") -> Change:
        """remove removes snaps (or one inactive revision of one snap) (lock held)."""
        found = self._keyed(key, "remove")
        if found is not None:
            return found
        self.check_seeded("remove")
        queued = self._queued("remove", _names(names), key, on_conflict, revision=revision)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.remove(self, _names(names), revision=revision)

    def revert(self, name: str, *, revision: str | None = None, key: str | None = None,
               on_conflict: str = "refuse") -> Change:
        """revert goes back to the previous revision in the sequence (or the given one) (lock held)."""
        found = self._keyed(key, "revert")
        if found is not None:
            return found
        self.check_seeded("revert")
        queued = self._queued("revert", [name], key, on_conflict, revision=revision)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.revert(self, name, revision=revision)

    def enable(self, name: str, *, key: str | None = None, on_conflict: str = "refuse") -> Change:
        """enable makes a disabled snap usable again (lock held)."""
        found = self._keyed(key, "enable")
        if found is not None:
            return found
        self.check_seeded("enable")
        queued = self._queued("enable", [name], key, on_conflict)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.enable(self, name)

    def disable(self, name: str, *, key: str | None = None, on_conflict: str = "refuse") -> Change:
        """disable makes a snap unusable without removing it (lock held)."""
        found = self._keyed(key, "disable")
        if found is not None:
            return found
        self.check_seeded("disable")
        queued = self._queued("disable", [name], key, on_conflict)
        if queued is not None:
            return queued
        with self._request(key):
            return snapstate.disable(self, name)


#: The task kind of a queued verb (SnapManager._queued).
QUEUED_KIND = "run-queued-request"
#: The kinds of change each verb makes (an idempotency key of another kind is a conflict).
_VERB_KINDS = {
    "install": ("install", "refresh"), "refresh": ("refresh", "switch-snap-channel"),
    "switch": ("switch-snap-channel",), "remove": ("remove",), "revert": ("revert",), "enable": ("enable",),
    "disable": ("disable",),
}


def _names(names: str | Sequence[str]) -> list[str]:
    out = [names] if isinstance(names, str) else list(names)
    if not out:
        raise ValueError("cannot act on no snaps: give at least one name")
    return list(dict.fromkeys(out))
