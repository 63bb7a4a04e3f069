# SPDX-License-Identifier: GPL-3.0-or-later
"""managers: the managers of a system built on the engine, one package per manager.

- ``assertstate``: the AssertManager (signed assertions, checked to a trusted root);
- ``snapstate``: the SnapManager (snaps installed under a root directory);
- ``asserts``, ``snap``, ``store``: the formats and the store they use (libraries);
- ``SystemOverlord``: an engine.Overlord with these managers, in dependency order.

Each manager registers its task kinds with the TaskRunner in its constructor
(do and undo side by side) and uses only ``from engine import``. See
docs/managers.md.
"""

from __future__ import annotations

from .errors import (
    AssertionVerifyError,
    InvalidAssertionError,
    InvalidSnapError,
    KeyFileError,
    ManagerError,
    NoUpdateAvailableError,
    SnapAlreadyInstalledError,
    SnapNotFoundError,
    SnapNotInstalledError,
    SnapOperationError,
    StoreError,
)
from .system import SystemOverlord

__all__ = [
    "AssertionVerifyError",
    "InvalidAssertionError",
    "InvalidSnapError",
    "KeyFileError",
    "ManagerError",
    "NoUpdateAvailableError",
    "SnapAlreadyInstalledError",
    "SnapNotFoundError",
    "SnapNotInstalledError",
    "SnapOperationError",
    "StoreError",
    "SystemOverlord",
]
