# SPDX-License-Identifier: GPL-3.0-or-later
"""The interface manager's verbs: connect and disconnect, each a change of tasks.

Every function here needs the state lock; none does the work itself. A
connect change is ``connect`` then ``setup-profiles`` of each snap on either
end (one lane); a disconnect change one ``disconnect`` per connection, then
``setup-profiles`` of each snap concerned. A snap with an unready change
(install, refresh, remove, another connect...) refuses both with
engine.ChangeConflictError.
"""

from __future__ import annotations

import itertools

from engine import Change, Status, Task, TaskSet

from ..errors import InterfaceError, NotConnectedError, SnapNotInstalledError, SnapOperationError
from ..snapstate import SnapSetup, check_conflicts, get_snap_state, new_change
from .interfaces import SYSTEM_SNAP, BadAttribute
from .repo import ConnRef, Ref, Repository, get_conns, interface
from .view import InterfaceManagerView


def _usable(im: InterfaceManagerView, snap: str, what: str) -> None:
    if snap == SYSTEM_SNAP:
        return
    snapst = get_snap_state(im.state, snap)
    if snapst is None:
        raise SnapNotInstalledError(f"{what}: snap {snap!r} is not installed")
    if not snapst.active:
        raise SnapOperationError(f"{what}: snap {snap!r} is disabled (enable it first)")


def resolve_connect(im: InterfaceManagerView, repo: Repository, plug: Ref, slot_snap: str, slot: str) -> ConnRef:
    """resolve_connect finds the connection meant: the system when slot_snap is empty, the only fitting slot
    when slot is empty; it checks that plug and slot exist and fit."""
    what = f"cannot connect {plug}"
    if plug.snap == SYSTEM_SNAP:
        raise InterfaceError(f"{what}: the system has no plugs")
    _usable(im, plug.snap, what)
    p = repo.plug(plug)
    if p is None:
        raise InterfaceError(f"{what}: snap {plug.snap!r} has no plug named {plug.name!r}")
    slot_snap = slot_snap or SYSTEM_SNAP
    _usable(im, slot_snap, what)
    if not slot:
        iface = interface(p.interface)
        fits = sorted(name for name, s in repo.infos[slot_snap].slots.items()
                      if s.interface == p.interface and iface.compatible(p.info, s) is None)
        if not fits:
            raise InterfaceError(f"{what}: snap {slot_snap!r} has no {p.interface} slot that fits it")
        if len(fits) > 1:
            raise InterfaceError(f"{what}: snap {slot_snap!r} has several {p.interface} slots ({', '.join(fits)}): "
                                 "name one")
        slot = fits[0]
    s = repo.slot(Ref(slot_snap, slot))
    if s is None:
        raise InterfaceError(f"{what}: snap {slot_snap!r} has no slot named {slot!r}")
    if s.interface != p.interface:
        raise InterfaceError(f"{what} ({p.interface}) to {s.ref} ({s.interface}): they are not of one interface")
    reason = interface(p.interface).compatible(p.info, s.info)
    if reason is None:
        try:
            im.check_denied(p.info)
        except BadAttribute as e:
            reason = str(e)
    if reason is not None:
        raise InterfaceError(f"{what} to {s.ref}: {reason}")
    return ConnRef(plug, s.ref)


def setup_profiles_task(im: InterfaceManagerView, snap: str) -> Task:
    """setup_profiles_task is a setup-profiles task for an installed snap as it is (its current revision)."""
    snapst = im.snap_manager.info(snap)
    info = snapst.info
    setup = SnapSetup(snap, revision=snapst.current, snap_id=info.snap_id, publisher_id=info.publisher_id,
                      source="local", info=info.to_dict())
    t = im.state.new_task("setup-profiles", f'Setup snap "{snap}" ({snapst.current}) security profiles')
    t.set("snap-setup", setup.to_dict())
    return t


def _change(im: InterfaceManagerView, kind: str, summary: str, first: list[Task], snaps: list[str]) -> Change:
    """_change chains first, then setup-profiles of each active snap of snaps, in one lane."""
    tasks = list(first)
    for snap in snaps:
        snapst = get_snap_state(im.state, snap)
        if snapst is not None and snapst.active:
            tasks.append(setup_profiles_task(im, snap))
    for prev, t in itertools.pairwise(tasks):
        t.wait_for(prev)
    return new_change(im.snap_manager, kind, summary, snaps, [TaskSet(*tasks)])


def _check_conflicts_first(im: InterfaceManagerView, *snaps: str) -> None:
    """_check_conflicts_first refuses a change in progress on a named snap before any other check (as in
    snapd): a snap whose install is still running is busy, not "not installed"."""
    check_conflicts(im.snap_manager, sorted({s for s in snaps if s and s != SYSTEM_SNAP}))


def connect(im: InterfaceManagerView, plug: Ref, slot_snap: str, slot: str) -> Change:
    """connect makes a "connect" change: connect, then setup-profiles of each snap concerned."""
    st = im.state
    _check_conflicts_first(im, plug.snap, slot_snap)
    ref = resolve_connect(im, im.repository(), plug, slot_snap, slot)
    summary = f"Connect {ref.plug} to {ref.slot}"
    existing = get_conns(st).get(ref)
    t = st.new_task("connect", summary)
    t.set("conn", ref.id)
    if existing is not None and not existing.undesired:
        # Connected already: a change that is Done at once, like snapd's (its one task did nothing).
        t.logf("%s is connected already: nothing to do", ref.id.replace(" ", " to "))
        chg = new_change(im.snap_manager, "connect", summary, ref.snaps, [TaskSet(t)])
        t.set_status(Status.DONE)
        return chg
    return _change(im, "connect", summary, [t], ref.snaps)


def resolve_disconnect(im: InterfaceManagerView, repo: Repository, plug: Ref, slot_snap: str, slot: str, *,
                       forget: bool = False) -> list[ConnRef]:
    """resolve_disconnect finds the connections meant: one (plug and slot given) or all of a plug or slot.

    With forget, connections state remembers but are not in effect (undesired
    ones, or those of a plug a refresh removed) count too.
    """
    conns = get_conns(im.state)
    if slot:
        ref = ConnRef(Ref(plug.snap or SYSTEM_SNAP, plug.name), Ref(slot_snap or SYSTEM_SNAP, slot))
        known = ref in conns if forget else ref in dict(repo.established())
        if not known:
            raise NotConnectedError(f"cannot disconnect {ref.plug} from {ref.slot}: they are not connected")
        return [ref]
    end = Ref(plug.snap or SYSTEM_SNAP, plug.name)
    if end.snap != SYSTEM_SNAP and get_snap_state(im.state, end.snap) is None:
        raise SnapNotInstalledError(f"cannot disconnect {end}: snap {end.snap!r} is not installed")
    refs = sorted(c for c in conns if end in (c.plug, c.slot)) if forget else repo.connected(end)
    if not refs:
        if repo.plug(end) is None and repo.slot(end) is None:
            raise InterfaceError(f"cannot disconnect {end}: snap {end.snap!r} has no plug or slot named "
                                 f"{end.name!r}")
        raise NotConnectedError(f"cannot disconnect {end}: it has no connections")
    return refs


def disconnect(im: InterfaceManagerView, plug: Ref, slot_snap: str, slot: str, *, forget: bool = False) -> Change:
    """disconnect makes a "disconnect" change: a disconnect per connection, then setup-profiles."""
    st = im.state
    _check_conflicts_first(im, plug.snap, slot_snap)
    refs = resolve_disconnect(im, im.repository(), plug, slot_snap, slot, forget=forget)
    snaps = sorted({s for r in refs for s in r.snaps})
    check_conflicts(im.snap_manager, snaps)
    verb = "Forget" if forget else "Disconnect"
    tasks = []
    for ref in refs:
        t = st.new_task("disconnect", f"{verb} {ref.plug} from {ref.slot}")
        t.set("conn", ref.id)
        if forget:
            t.set("forget", True)
        tasks.append(t)
    end = Ref(plug.snap or SYSTEM_SNAP, plug.name)
    summary = tasks[0].summary if len(refs) == 1 else f"{verb} the {len(refs)} connections of {end}"
    return _change(im, "disconnect", summary, tasks, snaps)
