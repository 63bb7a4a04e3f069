# SPDX-License-Identifier: GPL-3.0-or-later
"""The connection graph: connections in state (one key, one helper), and the Repository of plugs and slots.

State key ``conns`` maps a connection id, ``"<plug snap>:<plug> <slot
snap>:<slot>"`` (snapd's), to ``{"interface", "auto", "undesired"}``:
``auto`` when the policy made it, ``undesired`` when a person disconnected
an automatic connection (kept so that auto-connect does not make it again).
It is read and written only through get_conns and set_conns.

A Repository is a view of the system at one moment (built under the state
lock): the plugs and slots of every installed snap's current revision (a
disabled snap keeps its connections), the system's implicit slots, and the
connections between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine import State

from ..errors import ManagerError
from ..snap import PlugInfo, SnapInfo
from .interfaces import INTERFACES, SYSTEM_SNAP, Interface, system_info

#: CONNS_KEY is the state key holding every connection, by id.
CONNS_KEY = "conns"


@dataclass(frozen=True, order=True)
class Ref:
    """Ref names a plug or a slot: a snap and the plug's or slot's name."""

    snap: str
    name: str

    def __str__(self) -> str:
        return f"{self.snap}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Ref:
        """parse reads "snap:name"."""
        snap, sep, name = text.partition(":")
        if not sep or not snap or not name:
            raise ManagerError(f"internal error: {text!r} is not a snap:name reference")
        return cls(snap, name)


@dataclass(frozen=True, order=True)
class ConnRef:
    """ConnRef names a connection: a plug and a slot."""

    plug: Ref
    slot: Ref

    @property
    def id(self) -> str:
        """id is the connection's key in state: "plug-snap:plug slot-snap:slot"."""
        return f"{self.plug} {self.slot}"

    @property
    def snaps(self) -> list[str]:
        """snaps are the snaps on either end, the system left out."""
        return sorted({s for s in (self.plug.snap, self.slot.snap) if s != SYSTEM_SNAP})

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str) -> ConnRef:
        """parse reads a connection id."""
        plug, sep, slot = text.partition(" ")
        if not sep:
            raise ManagerError(f"internal error: {text!r} is not a connection id")
        return cls(Ref.parse(plug), Ref.parse(slot))


@dataclass(frozen=True)
class ConnState:
    """ConnState is what state keeps about one connection."""

    interface: str
    #: Made by the auto-connect policy, not asked for.
    auto: bool = False
    #: An automatic connection a person disconnected: auto-connect leaves it alone.
    undesired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """to_dict is the JSON form in state."""
        return {"interface": self.interface, "auto": self.auto, "undesired": self.undesired}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConnState:
        """from_dict reads the JSON form."""
        return cls(str(data["interface"]), bool(data.get("auto", False)), bool(data.get("undesired", False)))


# -- the one helper that reads and writes connections ---------------------------------------


def get_conns(st: State) -> dict[ConnRef, ConnState]:
    """get_conns returns every connection in state, established and undesired (lock held)."""
    return {ConnRef.parse(k): ConnState.from_dict(v) for k, v in st.get(CONNS_KEY, {}).items()}


def set_conns(st: State, conns: Mapping[ConnRef, ConnState]) -> None:
    """set_conns stores every connection (lock held); ids are sorted so the JSON reads well."""
    st.set(CONNS_KEY, {ref.id: conns[ref].to_dict() for ref in sorted(conns)} or None)


# -- the view ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """Port is a plug or a slot of a snap in the repository."""

    snap: SnapInfo
    info: PlugInfo

    @property
    def ref(self) -> Ref:
        """ref names it."""
        return Ref(self.snap.name, self.info.name)

    @property
    def interface(self) -> str:
        """interface is its interface's name."""
        return self.info.interface


class Repository:
    """Repository is the plugs, slots and connections of the system at one moment."""

    def __init__(self, infos: Mapping[str, SnapInfo], conns: Mapping[ConnRef, ConnState],
                 active: Iterable[str] | None = None) -> None:
        self.infos = {SYSTEM_SNAP: system_info(), **infos}
        self.conns = dict(conns)
        #: The snaps that are usable now (the system always is): only they are auto-connection candidates.
        self.active = {SYSTEM_SNAP, *(infos if active is None else active)}

    def plug(self, ref: Ref) -> Port | None:
        """plug returns the plug ref names, if its snap is installed and has it."""
        info = self.infos.get(ref.snap)
        p = info.plugs.get(ref.name) if info is not None else None
        return Port(info, p) if info is not None and p is not None else None

    def slot(self, ref: Ref) -> Port | None:
        """slot returns the slot ref names, if its snap is installed (or the system) and has it."""
        info = self.infos.get(ref.snap)
        s = info.slots.get(ref.name) if info is not None else None
        return Port(info, s) if info is not None and s is not None else None

    def plugs(self) -> list[Port]:
        """plugs are every plug, by snap and name."""
        return [Port(i, p) for _, i in sorted(self.infos.items()) for _, p in sorted(i.plugs.items())]

    def slots(self) -> list[Port]:
        """slots are every slot (the system's first), by snap and name."""
        return [Port(i, s) for _, i in sorted(self.infos.items()) for _, s in sorted(i.slots.items())]

    def established(self) -> Iterator[tuple[ConnRef, ConnState]]:
        """established yields the connections in effect: not undesired, both ends present."""
        for ref, cs in sorted(self.conns.items()):
            if not cs.undesired and self.plug(ref.plug) is not None and self.slot(ref.slot) is not None:
                yield ref, cs

    def connected(self, ref: Ref) -> list[ConnRef]:
        """connected lists the established connections of a plug or a slot."""
        return [c for c, _ in self.established() if ref in (c.plug, c.slot)]

    def snap_connections(self, snap: str) -> list[ConnRef]:
        """snap_connections lists the established connections with snap on one end."""
        return [c for c, _ in self.established() if snap in (c.plug.snap, c.slot.snap)]

    def peers(self, snap: str) -> list[str]:
        """peers are the snaps at the other end of snap's established connections (the system left out)."""
        out = {s for c in self.snap_connections(snap) for s in c.snaps}
        out.discard(snap)
        return sorted(out)


def interface(name: str) -> Interface:
    """interface returns a registered interface; ManagerError for an unknown one (a check missed it)."""
    found = INTERFACES.get(name)
    if found is None:
        raise ManagerError(f"internal error: unknown interface {name!r}")
    return found
