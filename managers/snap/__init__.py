# SPDX-License-Identifier: GPL-3.0-or-later
"""snap: the snap format (a library; no state): snap.yaml, snap files, pack.

A snap is a zip archive holding meta/snap.yaml and any files; see
docs/managers.md for the format and the limits.
"""

from __future__ import annotations

from .container import HOOKS_DIR, SNAP_YAML, SnapFile, open_snap, read_info, with_hooks
from .info import HOOKS, AppInfo, HookInfo, PlugInfo, SlotInfo, SnapInfo
from .limits import DEFAULT_LIMITS, Limits
from .naming import valid_revision, valid_snap_name
from .pack import pack

__all__ = [
    "DEFAULT_LIMITS",
    "HOOKS",
    "HOOKS_DIR",
    "SNAP_YAML",
    "AppInfo",
    "HookInfo",
    "Limits",
    "PlugInfo",
    "SlotInfo",
    "SnapFile",
    "SnapInfo",
    "open_snap",
    "pack",
    "read_info",
    "valid_revision",
    "valid_snap_name",
    "with_hooks",
]
