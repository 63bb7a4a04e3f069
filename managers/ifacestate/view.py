# SPDX-License-Identifier: GPL-3.0-or-later
"""InterfaceManagerView: what the interface manager's verbs and handlers use of it (ifacemgr.InterfaceManager is it).

They take the manager as this protocol, so they import nothing of it, not
even for a type: ifacemgr.py imports them, never the other way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from engine import State

from ..snap import PlugInfo, SnapInfo
from ..snapstate import SnapManager
from .backend import ProfileBackend
from .repo import ConnRef, ConnState, Repository


class InterfaceManagerView(Protocol):
    """InterfaceManagerView is the interface manager as its verbs and handlers see it."""

    @property
    def state(self) -> State:
        """state is the State the manager works on."""

    @property
    def backend(self) -> ProfileBackend:
        """backend writes the security profiles."""

    @property
    def snap_manager(self) -> SnapManager:
        """snap_manager is the manager of the snaps whose plugs and slots are connected."""

    def repository(self, overrides: Mapping[str, SnapInfo] | None = None,
                   conns: Mapping[ConnRef, ConnState] | None = None) -> Repository:
        """repository is the system's plugs, slots and connections now (lock held)."""

    def publisher(self, info: SnapInfo) -> str:
        """publisher is the publisher of a snap per its snap-declaration ("" without one)."""

    def check_denied(self, plug: PlugInfo) -> None:
        """check_denied refuses a plug that asks for what no snap is granted."""
