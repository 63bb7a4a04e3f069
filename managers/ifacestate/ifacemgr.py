# SPDX-License-Identifier: GPL-3.0-or-later
"""InterfaceManager: connections between plugs and slots, and the security profiles they give snaps.

The constructor registers every task kind the manager owns, do and undo
side by side: connect and disconnect (its own changes), and setup-profiles,
remove-profiles, auto-connect and auto-disconnect (the hook points of the
snap manager's task graphs). It checks the plugs and slots of each snap
revision the snap manager mounts. The verbs are in ifacestate.py, the
handlers in handlers.py; backend.py writes the profiles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import Change, State, Task, TaskRunner

from ..errors import InterfaceError
from ..snap import PlugInfo, SnapInfo
from ..snapstate import SnapManager, SnapState, all_snap_states
from . import ifacestate
from .backend import ProfileBackend, compute, render
from .handlers import Handlers
from .ifacestate import setup_profiles_task
from .interfaces import INTERFACES, SYSTEM_SNAP, BadAttribute, check_denied
from .repo import ConnRef, ConnState, Port, Ref, Repository, get_conns

if TYPE_CHECKING:
    from ..assertstate import AssertManager

log = logging.getLogger("managers.ifacestate")


@dataclass(frozen=True)
class Connection:
    """Connection is an established or undesired connection, as shown to people."""

    ref: ConnRef
    interface: str
    #: Asked for by a person (not made by the auto-connect policy).
    manual: bool
    undesired: bool = False
    plug_attrs: Mapping[str, Any] = field(default_factory=dict)
    slot_attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PortView:
    """PortView is a plug or a slot with the other ends of its established connections."""

    port: Port
    connections: list[Ref]


@dataclass(frozen=True)
class Connections:
    """Connections is what `connections` shows: connections, and the plugs and slots they concern."""

    established: list[Connection]
    undesired: list[Connection]
    plugs: list[PortView]
    slots: list[PortView]


@dataclass(frozen=True)
class InterfaceInfo:
    """InterfaceInfo is an interface with the plugs and slots of that interface."""

    name: str
    summary: str
    plugs: list[Port]
    slots: list[Port]


class InterfaceManager:
    """InterfaceManager connects plugs to slots, auto-connects per policy, and keeps every snap's profile."""

    def __init__(self, state: State, runner: TaskRunner, snap_manager: SnapManager, *,
                 assert_manager: AssertManager | None = None, denied_paths: Sequence[str] = ()) -> None:
        """denied_paths are system paths (as plugs name them) never granted besides SYSTEM_FILES_DENIED."""
        self.state = state
        self.denied_paths = tuple(denied_paths)
        self.runner = runner
        self.snap_manager = snap_manager
        self.assert_manager = assert_manager
        self.backend = ProfileBackend(snap_manager.backend.root)
        h = self.handlers = Handlers(self)

        # Connections people ask for.
        runner.add_handler("connect", h.do_connect, h.undo_connect)
        runner.add_handler("disconnect", h.do_disconnect, h.undo_disconnect)
        # The hook points of the snap manager's graphs: install, refresh, revert, enable...
        runner.add_handler("setup-profiles", h.do_setup_profiles, h.undo_setup_profiles)
        runner.add_handler("auto-connect", h.do_auto_connect, h.undo_auto_connect)
        # ... and remove, disable.
        runner.add_handler("auto-disconnect", h.do_auto_disconnect, h.undo_auto_disconnect)
        runner.add_handler("remove-profiles", h.do_remove_profiles, h.undo_remove_profiles)

        snap_manager.add_check_snap(self.check_snap)
        for kind in ("connect", "disconnect"):
            snap_manager.add_affected_snaps(kind, _conn_snaps)
        snap_manager.drift.add_check(self._profile_drift, self._profile_repair)
        self._drift_repo: tuple[int, Repository] | None = None

    def _profile_drift(self, snapst: SnapState, full: bool) -> list[str]:
        """_profile_drift says whether an active snap's profile is missing (a stat), or (full) not what the state
        makes of it (lock held)."""
        path = self.backend.path(snapst.name)
        if not os.path.isfile(path):
            return [f"its security profile {path.relative_to(self.backend.root)} is missing"]
        if full:
            passes = self.snap_manager.drift.passes
            if self._drift_repo is None or self._drift_repo[0] != passes:
                self._drift_repo = (passes, self.repository())  # once per full pass, not per snap
            repo = self._drift_repo[1]
            if snapst.name in repo.infos and \
                    self.backend.read(snapst.name) != render(compute(snapst.name, repo, self.backend.layout)):
                return [f"its security profile {path.relative_to(self.backend.root)} was edited"]
        return []

    def _profile_repair(self, snapst: SnapState) -> list[Task]:
        """_profile_repair is a setup-profiles task when the profile drifted (lock held)."""
        return [setup_profiles_task(self, snapst.name)] if self._profile_drift(snapst, True) else []

    # -- the manager protocol ----------------------------------------------------------

    def start_up(self) -> None:
        """start_up creates the profiles directory."""
        self.backend.setup()

    def ensure(self) -> None:
        """ensure has nothing periodic to do."""

    # -- checks --------------------------------------------------------------------------

    def check_snap(self, info: SnapInfo, current: SnapInfo | None) -> None:
        """check_snap refuses a snap whose plugs or slots are wrong, naming the snap, the plug and the attribute.

        The snap manager runs it when it mounts a revision; the seed runs it
        on every snap of the seed before anything is installed.
        """
        what = f"cannot install snap {info.name!r}"
        if info.name == SYSTEM_SNAP:
            raise InterfaceError(f"{what}: the name is reserved for the system's own slots")
        known = ", ".join(sorted(INTERFACES))
        for kind, ports in (("plug", info.plugs), ("slot", info.slots)):
            for name, port in sorted(ports.items()):
                iface = INTERFACES.get(port.interface)
                label = f"{kind} {name!r}" + (f" ({port.interface})" if port.interface != name else "")
                if iface is None:
                    raise InterfaceError(f"{what}: {label}: unknown interface {port.interface!r} "
                                         f"(known: {known})")
                if kind == "slot" and iface.implicit:
                    raise InterfaceError(f"{what}: {label}: only the system offers {port.interface} slots")
                try:
                    if kind == "plug":
                        self.check_denied(port)
                        iface.check_plug(port)
                    else:
                        iface.check_slot(port)
                except BadAttribute as e:
                    raise InterfaceError(f"{what}: {label}: {e}") from None

    def check_denied(self, plug: PlugInfo) -> None:
        """check_denied raises BadAttribute when a system-files plug names one of the denied_paths."""
        if plug.interface != "system-files" or not self.denied_paths:
            return
        for attr in ("read", "write"):
            value = plug.attrs.get(attr)
            for path in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                if isinstance(path, str):
                    check_denied(path, attr, self.denied_paths)

    # -- reading state (lock held) --------------------------------------------------------

    def repository(self, overrides: Mapping[str, SnapInfo] | None = None,
                   conns: Mapping[ConnRef, ConnState] | None = None) -> Repository:
        """repository is the system's plugs, slots and connections now (lock held).

        overrides replaces (or adds) snaps' infos: a revision being installed;
        conns replaces the connections in state.
        """
        states = all_snap_states(self.state)
        infos = {name: s.info for name, s in states.items()}
        active = {name for name, s in states.items() if s.active}
        for name, info in (overrides or {}).items():
            infos[name] = info
            active.add(name)
        return Repository(infos, get_conns(self.state) if conns is None else conns, active)

    def publisher(self, info: SnapInfo) -> str:
        """publisher is the publisher of a snap per its snap-declaration ("" without one)."""
        if not info.snap_id or self.assert_manager is None:
            return ""
        decl = self.assert_manager.get("snap-declaration", ("16", info.snap_id))
        return decl.header("publisher-id") if decl is not None else ""

    def connections(self, snap: str | None = None, interface: str | None = None, *,
                    all: bool = False) -> Connections:
        """connections lists established connections (and, with all, undesired ones and unconnected ports).

        snap keeps what has that snap on one end; interface what is of that
        interface (lock held).
        """
        repo = self.repository()

        def wanted(iface: str, *snaps: str) -> bool:
            return (interface is None or iface == interface) and (snap is None or snap in snaps)

        established, undesired = [], []
        by_port: dict[Ref, list[Ref]] = {}
        for ref, cs in sorted(repo.conns.items()):
            plug, slot = repo.plug(ref.plug), repo.slot(ref.slot)
            if plug is None or slot is None or not wanted(cs.interface, ref.plug.snap, ref.slot.snap):
                continue
            conn = Connection(ref, cs.interface, not cs.auto or cs.undesired, cs.undesired,
                              dict(plug.info.attrs), dict(slot.info.attrs))
            if cs.undesired:
                undesired.append(conn)
            else:
                established.append(conn)
                by_port.setdefault(ref.plug, []).append(ref.slot)
                by_port.setdefault(ref.slot, []).append(ref.plug)

        def views(ports: Iterable[Port]) -> list[PortView]:
            out = []
            for p in ports:
                linked = sorted(by_port.get(p.ref, []))
                if (linked or all) and wanted(p.interface, p.ref.snap, *(r.snap for r in linked)):
                    out.append(PortView(p, linked))
            return out

        return Connections(established, undesired if all else [], views(repo.plugs()), views(repo.slots()))

    def interfaces(self, names: Iterable[str] | None = None, *, connected: bool = False) -> list[InterfaceInfo]:
        """interfaces lists the known interfaces (those named), each with its plugs and slots (lock held).

        connected keeps the interfaces with at least one established connection.
        """
        repo = self.repository()
        linked = {cs.interface for _, cs in repo.established()}
        wanted = set(names) if names is not None else None
        out = []
        for name, iface in sorted(INTERFACES.items()):
            if (wanted is not None and name not in wanted) or (connected and name not in linked):
                continue
            out.append(InterfaceInfo(name, iface.summary, [p for p in repo.plugs() if p.interface == name],
                                     [s for s in repo.slots() if s.interface == name]))
        return out

    def profile(self, snap: str) -> str | None:
        """profile returns the text of snap's security profile, or None when it has none."""
        return self.backend.read(snap)

    # -- verbs (ifacestate.py): each needs the state lock and returns the new change ---------

    def connect(self, plug_snap: str, plug: str, slot_snap: str = "", slot: str = "") -> Change:
        """connect connects a plug to a slot (lock held): a "connect" change.

        An empty slot_snap means the system; an empty slot the only slot of
        slot_snap that fits the plug. Connecting what is connected already
        gives a change that is Done at once (like snapd).
        """
        self.snap_manager.check_seeded("connect")
        return ifacestate.connect(self, Ref(plug_snap, plug), slot_snap, slot)

    def disconnect(self, plug_snap: str, plug: str, slot_snap: str = "", slot: str = "", *,
                   forget: bool = False) -> Change:
        """disconnect disconnects a plug from a slot (lock held): a "disconnect" change.

        Without a slot, plug_snap:plug names a plug or a slot, and all its
        connections go. forget also drops what state remembers of an
        automatic connection a person disconnected, so that auto-connect may
        make it again. Nothing to disconnect raises NotConnectedError.
        """
        self.snap_manager.check_seeded("disconnect")
        return ifacestate.disconnect(self, Ref(plug_snap, plug), slot_snap, slot, forget=forget)


def _conn_snaps(task: Task) -> list[str]:
    """_conn_snaps tells conflict checks which snaps a connect or disconnect task touches."""
    ref = task.get("conn", None)
    return ConnRef.parse(ref).snaps if isinstance(ref, str) else []
