# SPDX-License-Identifier: GPL-3.0-or-later
"""snapstate: the SnapManager, which installs, refreshes and removes snaps under a system root.

snapmgr.py holds the manager, its per-snap state and the snap setup its
tasks share; snapstate.py the verbs that build changes; handlers.py the
do/undo handlers; backend/ the only code that touches the root.
"""

from __future__ import annotations

from .snapmgr import (
    DEFAULT_RETAIN,
    HOOK_KINDS,
    SNAPS_KEY,
    SnapManager,
    SnapSetup,
    SnapState,
    all_snap_states,
    default_download_retry,
    get_snap_state,
    set_snap_state,
    task_snap_setup,
)
from .snapstate import check_conflicts, install_tasks, new_change

__all__ = [
    "DEFAULT_RETAIN",
    "HOOK_KINDS",
    "SNAPS_KEY",
    "SnapManager",
    "SnapSetup",
    "SnapState",
    "all_snap_states",
    "check_conflicts",
    "default_download_retry",
    "get_snap_state",
    "install_tasks",
    "new_change",
    "set_snap_state",
    "task_snap_setup",
]
