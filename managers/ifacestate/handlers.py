# SPDX-License-Identifier: GPL-3.0-or-later
"""The interface manager's do and undo handlers.

A profile is a function of the state (the snaps' current revisions and the
connections), so the handlers keep one rule: whoever changes what a profile
depends on writes the profiles concerned again, in the do and in the undo.
connect and disconnect change connections in one transaction (their
setup-profiles tasks then write the profiles; their undo writes them
itself); setup-profiles writes the profile of a revision being installed,
recording the old text first so that its undo puts it back (and writes the
profiles of the snaps connected to it again); auto-connect and auto-disconnect record the
connections they add or drop, then write the profiles, then change state
and finish in one transaction. Profiles are only written for snaps that
have one (a disabled snap has none), and rerunning any handler after a
crash ends where one uninterrupted run ends.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from engine import ChangeConflictError, Status, Task, Tomb

from ..errors import InterfaceError
from ..snapstate import check_conflicts, task_snap_setup
from .backend import compute, render
from .interfaces import SYSTEM_SNAP, Side
from .repo import ConnRef, ConnState, Port, Repository, get_conns, interface, set_conns
from .view import InterfaceManagerView

log = logging.getLogger("managers.ifacestate")


HandlerMethod = Callable[["Handlers", Task, Tomb], None]


def _serialized(fn: HandlerMethod) -> HandlerMethod:
    """_serialized runs a handler that writes profiles under the manager's profile lock.

    A handler computes profiles from the state it reads, then writes them:
    two at once could write what an older state said last. Holding this lock
    from the read to the last write (and the commit that follows) orders
    them; it is always taken before the state lock, never inside it.
    """
    @functools.wraps(fn)
    def serialized(self: Handlers, task: Task, tomb: Tomb) -> None:
        with self.profiles_lock:
            fn(self, task, tomb)
    return serialized


def _done(task: Task) -> None:
    """_done marks a running task Done (with the lock, in the block that wrote its result)."""
    if task.status is Status.DOING:
        task.set_status(Status.DONE)


class Handlers:
    """Handlers holds the do/undo functions the InterfaceManager registers."""

    def __init__(self, im: InterfaceManagerView) -> None:
        self.im = im
        self.backend = im.backend
        #: profiles_lock orders the handlers that write profiles (see _serialized); it may be taken again.
        self.profiles_lock = threading.RLock()

    def _write(self, names: Iterable[str], repo: Repository, force: Iterable[str] = ()) -> None:
        """_write writes again the profile of each snap of names that has one (or is in force), from repo."""
        forced = set(force)
        for name in sorted(set(names) | forced):
            if name == SYSTEM_SNAP or name not in repo.infos:
                continue
            if name in forced or self.backend.exists(name):
                self.backend.write(name, render(compute(name, repo, self.backend.layout)))

    # -- connect, disconnect -------------------------------------------------------------

    def do_connect(self, task: Task, tomb: Tomb) -> None:
        """do_connect records the connection in state (the old entry too, for undo)."""
        with task.state:
            ref = ConnRef.parse(task.get("conn"))
            repo = self.im.repository()
            plug, slot = repo.plug(ref.plug), repo.slot(ref.slot)
            if plug is None or slot is None:
                raise InterfaceError(f"cannot connect {ref.plug} to {ref.slot}: the "
                                     f"{'plug' if plug is None else 'slot'} is gone (try again)")
            conns = get_conns(task.state)
            self._record(task, conns.get(ref))
            conns[ref] = ConnState(plug.interface)
            set_conns(task.state, conns)
            _done(task)

    @staticmethod
    def _record(task: Task, old: ConnState | None) -> None:
        """_record keeps the connection's entry as it was before the first do, for undo."""
        if not task.has("old-conn"):
            task.set("old-conn", {"state": old.to_dict() if old is not None else None})

    def _restore(self, task: Task) -> None:
        """_restore puts back the connection entry recorded by do_connect or do_disconnect, then the profiles."""
        with task.state:
            ref = ConnRef.parse(task.get("conn"))
            old = task.get("old-conn", None)
            if old is not None:  # None: the do changed nothing
                conns = get_conns(task.state)
                if old["state"] is None:
                    conns.pop(ref, None)
                else:
                    conns[ref] = ConnState.from_dict(old["state"])
                set_conns(task.state, conns)
            repo = self.im.repository()
        self._write(ref.snaps, repo)

    @_serialized
    def undo_connect(self, task: Task, tomb: Tomb) -> None:
        """undo_connect forgets the connection (or puts back what state had) and writes the profiles again."""
        self._restore(task)

    def do_disconnect(self, task: Task, tomb: Tomb) -> None:
        """do_disconnect drops the connection; an automatic one is remembered as undesired unless forgotten."""
        with task.state:
            ref = ConnRef.parse(task.get("conn"))
            forget = bool(task.get("forget", False))
            conns = get_conns(task.state)
            old = conns.get(ref)
            self._record(task, old)
            if old is not None:
                if old.auto and not forget:
                    conns[ref] = replace(old, undesired=True)
                else:
                    del conns[ref]
            set_conns(task.state, conns)
            _done(task)

    @_serialized
    def undo_disconnect(self, task: Task, tomb: Tomb) -> None:
        """undo_disconnect puts the connection back and writes the profiles again."""
        self._restore(task)

    # -- profiles ------------------------------------------------------------------------------

    @_serialized
    def do_setup_profiles(self, task: Task, tomb: Tomb) -> None:
        """do_setup_profiles writes the profile of the snap's new (or current) revision.

        The snaps connected to it get theirs written again once the revision is
        current: by auto-connect (install, refresh, revert) or by the other
        setup-profiles tasks of a connect or disconnect change.
        """
        with task.state:
            setup = task_snap_setup(task)
            name, info = setup.name, setup.snap_info
            if not task.has("old-profile"):  # committed before anything is written
                task.set("old-profile", {"text": self.backend.read(name)})
            repo = self.im.repository({name: info})
        try:
            self._write([], repo, force=[name])
        except Exception:  # not BaseException: a process going down leaves the rest to the next run
            try:
                self.undo_setup_profiles(task, tomb)
            except Exception:
                log.exception("cannot put back the profiles of snap %r", name)
            raise

    @_serialized
    def undo_setup_profiles(self, task: Task, tomb: Tomb) -> None:
        """undo_setup_profiles puts back the snap's old profile and writes its peers' again, from state."""
        with task.state:
            setup = task_snap_setup(task)
            name = setup.name
            old = task.get("old-profile", None)
            repo = self.im.repository()
            peers = set(repo.peers(name)) | set(self.im.repository({name: setup.snap_info}).peers(name))
        if old is not None:
            self.backend.put_back(name, old["text"])
        self._write(peers - {name}, repo)

    @_serialized
    def do_remove_profiles(self, task: Task, tomb: Tomb) -> None:
        """do_remove_profiles deletes the snap's profile, recording it first."""
        with task.state:
            name = task_snap_setup(task).name
            if not task.has("old-profile"):
                task.set("old-profile", {"text": self.backend.read(name)})
        self.backend.remove(name)

    @_serialized
    def undo_remove_profiles(self, task: Task, tomb: Tomb) -> None:
        """undo_remove_profiles puts the profile back."""
        with task.state:
            name = task_snap_setup(task).name
            old = task.get("old-profile", None)
        if old is not None:
            self.backend.put_back(name, old["text"])

    # -- auto-connect, auto-disconnect ------------------------------------------------------------

    @_serialized
    def do_auto_connect(self, task: Task, tomb: Tomb) -> None:
        """do_auto_connect connects what the policy allows: the snap's plugs and the plugs its slots fit."""
        with task.state:
            st = task.state
            name = task_snap_setup(task).name
            made = task.get("auto-connections", None)
            if made is None:  # decided once, committed before any profile is written
                made = self._candidates(task, name)
                task.set("auto-connections", made or [])
            repo = self.im.repository(conns=self._with(get_conns(st), made))
        self._write(repo.peers(name), repo, force=[name])
        with task.state:
            set_conns(task.state, self._with(get_conns(task.state), made))
            for cid, _ in made:
                task.logf("Connected %s automatically", cid.replace(" ", " to "))
            _done(task)

    @staticmethod
    def _with(conns: dict[ConnRef, ConnState], made: list[list[str]]) -> dict[ConnRef, ConnState]:
        """_with adds the automatic connections made to conns (an entry already there stays)."""
        for cid, iface in made:
            conns.setdefault(ConnRef.parse(cid), ConnState(iface, auto=True))
        return conns

    def _candidates(self, task: Task, name: str) -> list[list[str]]:
        """_candidates lists [connection id, interface] of what auto-connect makes for snap name."""
        im = self.im
        repo = im.repository()
        conns = get_conns(task.state)
        taken = {c.plug for c in conns}  # connected, or disconnected by a person: left alone
        publishers: dict[str, str] = {}
        chg = task.change()

        def side(p: Port) -> Side:
            if p.snap.name not in publishers:
                publishers[p.snap.name] = im.publisher(p.snap)
            return Side(p.snap, p.info, publishers[p.snap.name])

        def fitting(plug: Port) -> list[Port]:
            iface = interface(plug.interface)
            return [s for s in repo.slots() if s.interface == plug.interface and s.snap.name != plug.snap.name
                    and s.snap.name in repo.active and iface.compatible(plug.info, s.info) is None
                    and iface.auto_connect(side(plug), side(s))]

        found: dict[ConnRef, str] = {}
        for plug in repo.plugs():
            if plug.ref in taken or plug.snap.name not in repo.active:
                continue
            mine = plug.snap.name == name
            if not mine and not any(s.snap.name == name for s in repo.slots() if s.interface == plug.interface):
                continue
            fits = fitting(plug)
            if mine and len(fits) > 1:
                task.logf("Not connecting %s automatically: %d slots fit (%s)", plug.ref, len(fits),
                          ", ".join(str(s.ref) for s in fits))
            if len(fits) == 1 and (mine or fits[0].snap.name == name):
                found[ConnRef(plug.ref, fits[0].ref)] = plug.interface
        out = []
        for ref, iface in sorted(found.items()):
            others = [s for s in ref.snaps if s != name]
            try:
                check_conflicts(im.snap_manager, others, ignore_change=chg.id if chg is not None else None)
            except ChangeConflictError as e:
                task.logf("Not connecting %s automatically: %s", ref.id.replace(" ", " to "), e)
                continue
            out.append([ref.id, iface])
        return out

    @_serialized
    def undo_auto_connect(self, task: Task, tomb: Tomb) -> None:
        """undo_auto_connect drops the connections it made and writes the profiles again."""
        with task.state:
            name = task_snap_setup(task).name
            made = [ConnRef.parse(cid) for cid, _ in task.get("auto-connections", [])]
            conns = get_conns(task.state)
            for ref in made:
                cs = conns.get(ref)
                if cs is not None and cs.auto and not cs.undesired:
                    del conns[ref]
            set_conns(task.state, conns)
            repo = self.im.repository()
        self._write({*repo.peers(name), *(s for r in made for s in r.snaps)}, repo, force=[])

    @_serialized
    def do_auto_disconnect(self, task: Task, tomb: Tomb) -> None:
        """do_auto_disconnect drops every connection of a snap being removed (recorded for undo)."""
        with task.state:
            name = task_snap_setup(task).name
            removed = task.get("removed-conns", None)
            if removed is None:
                removed = {r.id: cs.to_dict() for r, cs in get_conns(task.state).items()
                           if name in (r.plug.snap, r.slot.snap)}
                task.set("removed-conns", removed)
            conns = {r: cs for r, cs in get_conns(task.state).items() if r.id not in removed}
            repo = self.im.repository(conns=conns)
        peers = {s for cid in removed for s in ConnRef.parse(cid).snaps}
        self._write(peers | {name}, repo)
        with task.state:
            set_conns(task.state, {r: cs for r, cs in get_conns(task.state).items() if r.id not in removed})
            for cid in sorted(removed):
                task.logf("Disconnected %s", cid.replace(" ", " from "))
            _done(task)

    @_serialized
    def undo_auto_disconnect(self, task: Task, tomb: Tomb) -> None:
        """undo_auto_disconnect puts the connections back and writes the profiles again."""
        with task.state:
            name = task_snap_setup(task).name
            removed: dict[str, Any] = task.get("removed-conns", {})
            conns = get_conns(task.state)
            for cid, data in removed.items():
                conns[ConnRef.parse(cid)] = ConnState.from_dict(data)
            set_conns(task.state, conns)
            repo = self.im.repository()
        self._write({name, *(s for cid in removed for s in ConnRef.parse(cid).snaps)}, repo)
