# SPDX-License-Identifier: GPL-3.0-or-later
"""ifacestate: the InterfaceManager, which connects plugs to slots and keeps every snap's security profile.

interfaces.py holds the registry of interfaces and their rules; repo.py the
connections in state and the Repository view of plugs and slots;
ifacemgr.py the manager; ifacestate.py the verbs (connect, disconnect);
handlers.py the do/undo handlers; backend.py the profiles on disk.
"""

from __future__ import annotations

from .backend import PROFILES_DIR, ProfileBackend, compute, render
from .ifacemgr import Connection, Connections, InterfaceInfo, InterfaceManager, PortView
from .ifacestate import resolve_connect, resolve_disconnect, setup_profiles_task
from .interfaces import (
    INTERFACES,
    SYSTEM_FILES_DENIED,
    SYSTEM_FILES_READ,
    SYSTEM_FILES_WRITE,
    SYSTEM_SNAP,
    BadAttribute,
    Interface,
    Layout,
    Mount,
    Rules,
    Side,
    content_tag,
)
from .repo import CONNS_KEY, ConnRef, ConnState, Port, Ref, Repository, get_conns, set_conns

__all__ = [
    "CONNS_KEY",
    "INTERFACES",
    "PROFILES_DIR",
    "SYSTEM_FILES_DENIED",
    "SYSTEM_FILES_READ",
    "SYSTEM_FILES_WRITE",
    "SYSTEM_SNAP",
    "BadAttribute",
    "ConnRef",
    "ConnState",
    "Connection",
    "Connections",
    "Interface",
    "InterfaceInfo",
    "InterfaceManager",
    "Layout",
    "Mount",
    "Port",
    "PortView",
    "ProfileBackend",
    "Ref",
    "Repository",
    "Rules",
    "Side",
    "compute",
    "content_tag",
    "get_conns",
    "render",
    "resolve_connect",
    "resolve_disconnect",
    "set_conns",
    "setup_profiles_task",
]
