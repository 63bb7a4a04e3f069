# SPDX-License-Identifier: GPL-3.0-or-later
"""managers: the managers of a system built on the engine, one package per manager.

- ``assertstate``: the AssertManager (signed assertions, checked to a trusted root);
- ``snapstate``: the SnapManager (snaps installed under a root directory);
- ``ifacestate``: the InterfaceManager (connections between plugs and slots, security profiles);
- ``firstboot``: FirstBoot (seeding a new system from a seed directory);
- ``asserts``, ``snap``, ``store``: the formats and the store they use (libraries);
- ``SystemOverlord``: an engine.Overlord with these managers, in dependency order.

Each manager registers its task kinds with the TaskRunner in its constructor
(do and undo side by side) and uses only ``from engine import``. See
docs/managers.md.
"""

from __future__ import annotations

from .errors import (
    AlreadySeededError,
    AssertionRevisionError,
    AssertionVerifyError,
    InterfaceError,
    InvalidAssertionError,
    InvalidSeedError,
    InvalidSnapError,
    KeyFileError,
    ManagerError,
    NotConnectedError,
    NoUpdateAvailableError,
    SnapAlreadyInstalledError,
    SnapNotFoundError,
    SnapNotInstalledError,
    SnapOperationError,
    StoreError,
    TooEarlyError,
)
from .system import SystemManagers, SystemOverlord, system_managers

__all__ = [
    "AlreadySeededError",
    "AssertionRevisionError",
    "AssertionVerifyError",
    "InterfaceError",
    "InvalidAssertionError",
    "InvalidSeedError",
    "InvalidSnapError",
    "KeyFileError",
    "ManagerError",
    "NoUpdateAvailableError",
    "NotConnectedError",
    "SnapAlreadyInstalledError",
    "SnapNotFoundError",
    "SnapNotInstalledError",
    "SnapOperationError",
    "StoreError",
    "SystemManagers",
    "SystemOverlord",
    "TooEarlyError",
    "system_managers",
]
