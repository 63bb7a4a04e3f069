# SPDX-License-Identifier: GPL-3.0-or-later
"""snapstate: the SnapManager, which installs, refreshes and removes snaps under a system root.

model.py holds what the manager keeps (its per-snap state and the snap
setup its tasks share) and imports nothing else of the package; snapmgr.py
the manager; snapstate.py the verbs that build changes (tasksets.py their
task graphs, conflict.py their conflict check); handlers.py the do/undo
handlers (autorefresh.py and drift.py those of the manager's own changes);
backend/ the only code that touches the root.
"""

from __future__ import annotations

from .conflict import affected_snaps, busy_snaps, check_conflicts, snap_key
from .model import (
    SNAPS_KEY,
    CheckedFile,
    ServiceRunner,
    SnapManagerView,
    SnapSetup,
    SnapState,
    all_snap_states,
    check_snap_file,
    get_snap_state,
    set_snap_state,
    task_snap_setup,
)
from .snapmgr import DEFAULT_RETAIN, HOOK_KINDS, SnapManager, default_download_retry
from .snapstate import (
    install_path_task_set,
    install_task_sets,
    new_change,
    refresh_task_sets,
    remove_task_set,
    revert_task_set,
)
from .tasksets import install_tasks

__all__ = [
    "DEFAULT_RETAIN",
    "HOOK_KINDS",
    "SNAPS_KEY",
    "CheckedFile",
    "ServiceRunner",
    "SnapManager",
    "SnapManagerView",
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
