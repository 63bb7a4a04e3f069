# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap manager's verbs: each checks for conflicts and builds a change of task sets.

Every verb here needs the state lock; none does the work itself (the
handlers do, when the change runs). The task graphs follow snapd's
overlord/snapstate (see docs/managers.md for the pictures).

The store is read before the lock is taken: store_lookup (called without
the lock; it takes it only for a moment to read which snaps and channels
it must ask about) returns StoreAnswers, which install and refresh are
given (found=) and use instead of the store. Under the lock they decide
again from the state as it is then (the snap installed meanwhile, a
conflict, another channel tracked): an answer they need but were not given
raises StaleLookupError, and SnapManager.with_store_answers looks up again.
Without found= they read the store themselves, under the lock: for
embedders with a local store, never for the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine import Change, TaskSet

from ..errors import (
    AssertionVerifyError,
    NoUpdateAvailableError,
    SnapAlreadyInstalledError,
    SnapNotFoundError,
    SnapNotInstalledError,
    SnapOperationError,
)
from ..snap.naming import reserved_snap_name
from ..snapstore import DEFAULT_CHANNEL, SnapStore, StoreSnap, short_channel
from .conflict import check_conflicts, snap_key
from .lookup import StoreAnswers, full_channel, need_store
from .model import (
    CheckedFile,
    SnapManagerView,
    SnapSetup,
    SnapState,
    all_snap_states,
    check_snap_file,
    current_setup,
    get_snap_state,
    task_snap_setup,
)
from .tasksets import TaskChain, install_tasks, remove_revision_tasks

log = logging.getLogger("managers.snapstate")


# -- changes ------------------------------------------------------------------------------------


def new_change(sm: SnapManagerView, kind: str, summary: str, names: Sequence[str],
               task_sets: Sequence[TaskSet]) -> Change:
    """new_change makes a change of task sets, each in a lane of its own, recording the snaps' names.

    It asks for an ensure pass at once, so a running overlord loop starts the change.
    """
    st = sm.state
    into = sm.into_change
    if into is not None:  # a queued request's turn came: its change takes the task sets
        chg = into
        chg.affect(*[snap_key(n) for n in names])
    else:
        chg = st.new_change(kind, summary, key=sm.request_key, affects=[snap_key(n) for n in names])
        if not chg.is_new:
            # Another host served the same request first (its key): its change stands; the task sets built
            # here stay in no change, and prune deletes them.
            return chg
    chg.set("snap-names", list(names))
    for ts in task_sets:
        ts.join_lane(st.new_lane())
        chg.add_all(ts)
    st.ensure_before(0)
    return chg


def change_summary(verb: str, names: Sequence[str]) -> str:
    """change_summary is the summary of a verb's change on names, as snapd words it ('Install "hello" snap')."""
    if len(names) == 1:
        return f'{verb} "{names[0]}" snap'
    return f"{verb} snaps " + ", ".join(f'"{n}"' for n in names)


def _installed(sm: SnapManagerView, verb: str, name: str) -> SnapState:
    """_installed is the state of a snap a verb works on, once no change is in progress for it.

    The conflict comes first (as in snapd): a snap whose install is still
    running is busy, not "not installed".
    """
    check_conflicts(sm, [name])
    snapst = get_snap_state(sm.state, name)
    if snapst is None:
        raise SnapNotInstalledError(f"cannot {verb} snap {name!r}: it is not installed")
    return snapst


# -- the verbs ----------------------------------------------------------------------------------


def revision_number(revision: str) -> int:
    """revision_number orders store revisions ("12" -> 12); a local revision (x1) counts as 0."""
    return int(revision) if revision.isdigit() else 0


def install_task_sets(sm: SnapManagerView, names: Sequence[str], *, channel: str | None = None,
                      revision: str | None = None, found: StoreAnswers | None = None) -> list[TaskSet]:
    """install_task_sets builds one task set per snap installed from the store.

    Each gets the revision its channel offers (default latest/stable), or the
    given revision (one snap only), and tracks that channel. found: the
    store's answers, looked up without the lock (store_lookup).
    """
    st = sm.state
    full = full_channel(channel)
    if revision is not None and len(names) != 1:
        raise SnapOperationError("cannot install several snaps at one revision: give one name with a revision")
    for name in names:
        reserved = reserved_snap_name(name)
        if reserved:
            raise SnapOperationError(f"cannot install snap {name!r}: the name is reserved: {reserved}")
        snapst = get_snap_state(st, name)
        if snapst is not None:
            raise SnapAlreadyInstalledError(f"cannot install snap {name!r}: it is installed already "
                                            f"(revision {snapst.current}); refresh it instead")
    check_conflicts(sm, names)
    store: SnapStore | StoreAnswers = found if found is not None else need_store(sm)
    sets = []
    for name in names:
        ss = store.snap(name, revision) if revision is not None else store.snap(name, channel=full)
        setup = SnapSetup(name, revision=ss.revision, snap_id=ss.snap_id, sha3_384=ss.sha3_384, size=ss.size,
                          channel=full or DEFAULT_CHANNEL)
        sets.append(install_tasks(sm, setup, None))
    return sets


def install(sm: SnapManagerView, names: Sequence[str], *, channel: str | None = None,
            revision: str | None = None, found: StoreAnswers | None = None) -> Change:
    """install makes an "install" change of snaps from the store."""
    return new_change(sm, "install", change_summary("Install", names), names,
                      install_task_sets(sm, names, channel=channel, revision=revision, found=found))


def install_path_task_set(sm: SnapManagerView, path: Path, *, dangerous: bool = False, remove_path: bool = False,
                          checked: CheckedFile | None = None) -> tuple[SnapSetup, TaskSet]:
    """install_path_task_set builds the task set installing a local snap file (see SnapManager.install_path).

    checked is the file as check_snap_file read it (before the lock was taken); without it the file is
    read and checked here, under the lock.
    """
    st = sm.state
    if checked is None:
        checked = check_snap_file(path, sm.backend.limits)
    info, digest, size = checked.info, checked.sha3_384, checked.size
    name = info.name
    snapst = get_snap_state(st, name)
    setup = SnapSetup(name, sha3_384=digest, size=size, source="file", path=str(path.absolute()),
                      dangerous=dangerous, remove_path=remove_path)
    if dangerous:
        setup.revision = f"x{(snapst.local_revision() if snapst else 0) + 1}"
    else:
        am = sm.assert_manager
        rev_a = am.get("snap-revision", (digest,)) if am is not None else None
        if rev_a is None:
            raise AssertionVerifyError(f"cannot install {path}: no snap-revision assertion for its sha3-384 "
                                       f"{digest}; add its assertions first, or install it as dangerous")
        setup.revision, setup.snap_id = rev_a.header("snap-revision"), rev_a.header("snap-id")
        assert am is not None
        decl = am.get("snap-declaration", ("16", setup.snap_id))
        if decl is None:
            raise AssertionVerifyError(f"cannot install {path}: no snap-declaration for its snap id {setup.snap_id}")
        if decl.header("snap-name") != name:
            raise AssertionVerifyError(f"cannot install {path}: its snap.yaml names it {name!r}, but "
                                       f"snap-declaration {setup.snap_id} names it {decl.header('snap-name')!r}")
        setup.publisher_id = decl.header("publisher-id")
    if snapst is not None and snapst.current == setup.revision:
        raise SnapAlreadyInstalledError(f"cannot install {path}: revision {setup.revision} of snap {name!r} "
                                        "is installed already")
    check_conflicts(sm, [name])
    if snapst is not None and snapst.index(setup.revision) >= 0:
        setup.info = snapst.revision_info(setup.revision).to_dict()
    return setup, install_tasks(sm, setup, snapst)


def install_path(sm: SnapManagerView, path: Path, *, dangerous: bool = False, remove_path: bool = False,
                 filename: str | None = None, checked: CheckedFile | None = None) -> Change:
    """install_path makes an "install" (or, for an installed snap, "refresh") change from a local file.

    filename is the name the summary shows (an upload's name as the client gave it; path's by default).
    """
    was = {n for n in all_snap_states(sm.state)}
    setup, ts = install_path_task_set(sm, path, dangerous=dangerous, remove_path=remove_path, checked=checked)
    kind = "refresh" if setup.name in was else "install"
    summary = f'{kind.capitalize()} "{setup.name}" snap from file "{Path(filename or path.name).name}"'
    return new_change(sm, kind, summary, [setup.name], [ts])


def switch_task_set(sm: SnapManagerView, snapst: SnapState, channel: str) -> TaskSet:
    """switch_task_set is one switch-snap-channel task: the snap tracks channel from then on."""
    setup = current_setup(snapst)
    setup.channel = channel
    t = sm.state.new_task("switch-snap-channel",
                          f'Switch snap "{snapst.name}" from channel "{short_channel(snapst.tracking)}" to '
                          f'"{short_channel(channel)}"')
    t.set("snap-setup", setup.to_dict())
    return TaskSet(t)


def refresh_task_sets(sm: SnapManagerView, names: Sequence[str] | None, *, channel: str | None = None,
                      revision: str | None = None, skip: Iterable[str] = (),
                      found: StoreAnswers | None = None) -> tuple[list[str], list[TaskSet]]:
    """refresh_task_sets builds a task set per snap with an update; it returns their names too.

    An update is the revision the snap's channel offers (the given channel,
    which it tracks from then on, or the one it tracks) when that is newer
    than the current revision: refresh never goes back (revert does, or an
    explicit revision). A snap whose channel changes without a newer revision
    gets a switch-snap-channel task alone. skip names snaps left alone (held)
    when no names are given; found gives the store's answers looked up
    beforehand (store_lookup), so that the store is not read with the lock
    held. Refreshing everything, a snap found has no answer for (installed,
    or switched to another channel, since) waits for the next refresh; a
    named one raises StaleLookupError.
    """
    st = sm.state
    states = all_snap_states(st)
    explicit = names is not None
    full = full_channel(channel)
    if (full is not None or revision is not None) and (names is None or len(names) != 1):
        raise SnapOperationError("cannot refresh to a channel or a revision without naming one snap")
    if names is None:
        skipped = set(skip)
        names = [n for n, s in states.items() if s.info.snap_id and s.active and n not in skipped]
    for name in names:
        if name not in states:
            raise SnapNotInstalledError(f"cannot refresh snap {name!r}: it is not installed")
        if explicit and not states[name].active:
            raise SnapOperationError(f"cannot refresh snap {name!r}: it is disabled (enable it first)")
    store: SnapStore | StoreAnswers = found if found is not None else need_store(sm)
    todo: list[tuple[str, SnapSetup | None]] = []
    why = ""
    for name in names:
        snapst = states[name]
        if not snapst.info.snap_id:
            if explicit:
                raise NoUpdateAvailableError(f"snap {name!r} has no updates available: it was installed from a "
                                             "local file, not from the store")
            continue
        target = full or snapst.tracking
        switch = full is not None and full != snapst.tracking
        if found is not None and not explicit and not found.has(name, revision, channel=target):
            log.info("not refreshing snap %r now: it changed while the store was read", name)
            continue
        try:
            ss = store.snap(name, revision) if revision is not None else store.snap(name, channel=target)
        except SnapNotFoundError:
            if explicit:
                raise
            log.info("not refreshing snap %r: the store %s does not have it in %s", name, store.location, target)
            continue  # refresh of everything: snaps this store does not know are left alone, as snapd does
        if ss.revision == snapst.current or (revision is None and
                                             revision_number(ss.revision) < revision_number(snapst.current)):
            if revision_number(ss.revision) < revision_number(snapst.current):
                why = (f"channel {short_channel(target)!r} offers revision {ss.revision}, older than the current "
                       f"{snapst.current} (refresh never goes back: revert, or ask for that revision)")
                log.warning("not refreshing snap %r: %s", name, why)
            if switch:
                todo.append((name, None))
            continue
        setup = SnapSetup(name, revision=ss.revision, snap_id=ss.snap_id, sha3_384=ss.sha3_384, size=ss.size,
                          channel=full or "")
        if snapst.index(ss.revision) >= 0:
            setup.source = "local"
            setup.info = snapst.revision_info(ss.revision).to_dict()
        todo.append((name, setup))
    if not todo:
        if explicit and len(names) == 1:
            raise NoUpdateAvailableError(f"snap {names[0]!r} has no updates available" + (f": {why}" if why else ""))
        raise NoUpdateAvailableError("no snaps have updates available")
    check_conflicts(sm, [n for n, _ in todo])
    return [n for n, _ in todo], [install_tasks(sm, setup, states[n]) if setup is not None
                                  else switch_task_set(sm, states[n], full or "") for n, setup in todo]


def available_updates(sm: SnapManagerView,
                      states: Iterable[SnapState] | None = None) -> list[tuple[SnapState, StoreSnap]]:
    """available_updates lists the store snaps whose tracked channel offers a newer revision.

    What `refresh --list` shows; held snaps are listed too (a refresh naming them refreshes them). Without
    states it reads them from the state (lock held); given them, it reads only the store (no lock needed).
    """
    store = need_store(sm)
    out = []
    for snapst in (states if states is not None else all_snap_states(sm.state).values()):
        if not snapst.info.snap_id or not snapst.active:
            continue
        try:
            ss = store.snap(snapst.name, channel=snapst.tracking)
        except SnapNotFoundError:
            continue
        if revision_number(ss.revision) > revision_number(snapst.current):
            out.append((snapst, ss))
    return out


def refresh(sm: SnapManagerView, names: Sequence[str] | None, *, channel: str | None = None,
            revision: str | None = None, found: StoreAnswers | None = None) -> Change:
    """refresh makes a "refresh" change for the snaps that have an update (a "switch-snap-channel" change when
    the only news is the channel). Without names, snaps whose refresh is held are left alone, as in snapd; a
    held snap named is refreshed."""
    held = sm.auto_refresh.held_snaps(sm.state, sm.clock()) if names is None else {}
    updated, sets = refresh_task_sets(sm, names, channel=channel, revision=revision, skip=held, found=found)
    if all(ts.tasks()[0].kind == "switch-snap-channel" for ts in sets):
        return _switch_change(sm, updated[0], sets)
    return new_change(sm, "refresh", change_summary("Refresh", updated), updated, sets)


def _switch_change(sm: SnapManagerView, name: str, sets: list[TaskSet]) -> Change:
    setup = task_snap_setup(sets[0].tasks()[0])
    return new_change(sm, "switch-snap-channel",
                      f'Switch "{name}" snap to channel "{short_channel(setup.channel)}"', [name], sets)


def switch(sm: SnapManagerView, name: str, channel: str) -> Change:
    """switch makes a "switch-snap-channel" change: the snap tracks channel, its revision stays."""
    snapst = _installed(sm, "switch", name)
    full = full_channel(channel)
    assert full is not None
    if not snapst.info.snap_id:
        raise SnapOperationError(f"cannot switch snap {name!r}: it was installed from a local file, it has no "
                                 "channel")
    check_conflicts(sm, [name])
    return _switch_change(sm, name, [switch_task_set(sm, snapst, full)])


def remove_task_set(sm: SnapManagerView, name: str, revision: str | None = None) -> TaskSet:
    """remove_task_set builds the removal of a snap (or of one inactive revision of it)."""
    st = sm.state
    snapst = _installed(sm, "remove", name)
    if revision is not None:
        if snapst.index(revision) < 0:
            raise SnapNotInstalledError(f"cannot remove revision {revision} of snap {name!r}: it is not installed")
        if len(snapst.sequence) > 1:
            if revision == snapst.current:
                raise SnapOperationError(f"cannot remove revision {revision} of snap {name!r}: it is the current "
                                         "revision (revert first?)")
            return remove_revision_tasks(sm, snapst, revision, last=False)
    setup = current_setup(snapst)
    if snapst.active:
        chain = TaskChain(sm, st.new_task("stop-snap-services", f'Stop snap "{name}" services'), setup)
        chain.first.set("stop-reason", "remove")
        chain.add_hook("remove", ignore_error=True)
    else:
        chain = TaskChain(sm, st.new_task("run-hook", f'Run remove hook of "{name}" snap if present'), setup)
        chain.first.set("hook-setup", {"snap": name, "hook": "remove", "optional": True, "ignore-error": True})
    chain.add("auto-disconnect", f'Disconnect interfaces of snap "{name}"')
    if snapst.active:
        chain.add("unlink-snap", f'Make snap "{name}" unavailable to the system')
    chain.add("remove-profiles", f'Remove security profile for snap "{name}" ({snapst.current})')
    order = [r for r in reversed(snapst.revisions) if r != snapst.current] + [snapst.current]
    for i, rev in enumerate(order):
        chain.add_set(remove_revision_tasks(sm, snapst, rev, last=i == len(order) - 1))
    return chain.task_set()


def remove(sm: SnapManagerView, names: Sequence[str], *, revision: str | None = None) -> Change:
    """remove makes a "remove" change: each snap (or one revision of one snap) in its lane."""
    if revision is not None and len(names) != 1:
        raise ValueError("cannot remove one revision of several snaps: give one name with a revision")
    sets = [remove_task_set(sm, name, revision) for name in names]
    snapst = get_snap_state(sm.state, names[0])
    # Removing the only revision removes the snap (remove_task_set builds just that): titled as such.
    whole = revision is None or (snapst is not None and len(snapst.sequence) == 1)
    summary = change_summary("Remove", names) if whole else f'Remove revision {revision} of "{names[0]}" snap'
    return new_change(sm, "remove", summary, names, sets)


def revert_task_set(sm: SnapManagerView, name: str, revision: str | None = None) -> TaskSet:
    """revert_task_set builds the switch back to the previous (or the given) revision."""
    snapst = _installed(sm, "revert", name)
    if not snapst.active:
        raise SnapOperationError(f"cannot revert snap {name!r}: it is disabled (enable it first)")
    if revision is None:
        prev = snapst.previous()
        if prev is None:
            raise SnapOperationError(f"cannot revert snap {name!r}: no revision to revert to")
        revision = prev.revision
    if revision == snapst.current:
        raise SnapOperationError(f"cannot revert snap {name!r}: it is on revision {revision} already")
    if snapst.index(revision) < 0:
        raise SnapNotInstalledError(f"cannot revert snap {name!r}: it has no revision {revision}")
    info = snapst.revision_info(revision)
    setup = SnapSetup(name, revision=revision, snap_id=info.snap_id, publisher_id=info.publisher_id,
                      source="local", revert=True, info=info.to_dict())
    return install_tasks(sm, setup, snapst)


def revert(sm: SnapManagerView, name: str, *, revision: str | None = None) -> Change:
    """revert makes a "revert" change."""
    ts = revert_task_set(sm, name, revision)
    return new_change(sm, "revert", change_summary("Revert", [name]), [name], [ts])


def enable(sm: SnapManagerView, name: str) -> Change:
    """enable makes an "enable" change: prepare-snap, setup-profiles, link-snap, start-snap-services."""
    snapst = _installed(sm, "enable", name)
    if snapst.active:
        raise SnapOperationError(f"cannot enable snap {name!r}: it is enabled already")
    label = f'"{name}" ({snapst.current})'
    chain = TaskChain(sm, sm.state.new_task("prepare-snap", f"Prepare snap {label}"), current_setup(snapst))
    chain.add("setup-profiles", f"Setup snap {label} security profiles")
    chain.add("link-snap", f"Make snap {label} available to the system")
    chain.add("start-snap-services", f"Start snap {label} services")
    return new_change(sm, "enable", change_summary("Enable", [name]), [name], [chain.task_set()])


def disable(sm: SnapManagerView, name: str) -> Change:
    """disable makes a "disable" change: stop-snap-services, unlink-snap, remove-profiles."""
    snapst = _installed(sm, "disable", name)
    if not snapst.active:
        raise SnapOperationError(f"cannot disable snap {name!r}: it is disabled already")
    label = f'"{name}" ({snapst.current})'
    chain = TaskChain(sm, sm.state.new_task("stop-snap-services", f"Stop snap {label} services"), current_setup(snapst))
    chain.first.set("stop-reason", "disable")
    chain.add("unlink-snap", f"Make snap {label} unavailable to the system")
    chain.add("remove-profiles", f"Remove security profile for snap {label}")
    return new_change(sm, "disable", change_summary("Disable", [name]), [name], [chain.task_set()])
