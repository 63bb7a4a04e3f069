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
    ServiceRunner,
    SnapManager,
    SnapSetup,
    SnapState,
    all_snap_states,
    default_download_retry,
    get_snap_state,
    set_snap_state,
    task_snap_setup,
)
from .snapstate import (
    CheckedFile,
    affected_snaps,
    busy_snaps,
    check_conflicts,
    check_snap_file,
    install_path_task_set,
    install_task_sets,
    install_tasks,
    new_change,
    refresh_task_sets,
    remove_task_set,
    revert_task_set,
    snap_key,
)

__all__ = [
    "DEFAULT_RETAIN",
    "HOOK_KINDS",
    "SNAPS_KEY",
    "CheckedFile",
    "ServiceRunner",
    "SnapManager",
    "SnapSetup",
    "SnapState",
    "affected_snaps",
    "all_snap_states",
    "busy_snaps",
    "check_conflicts",
    "check_snap_file",
    "default_download_retry",
    "get_snap_state",
    "install_path_task_set",
    "install_task_sets",
    "install_tasks",
    "new_change",
    "refresh_task_sets",
    "remove_task_set",
    "revert_task_set",
    "set_snap_state",
    "snap_key",
    "task_snap_setup",
]
