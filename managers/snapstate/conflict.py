# SPDX-License-Identifier: GPL-3.0-or-later
"""Conflicts: which snaps a task touches, and the check every verb makes before it builds a change."""

from __future__ import annotations

from collections.abc import Iterable

from engine import ChangeConflictError, Task

from .model import SnapManagerView, task_snap_setup


def affected_snaps(sm: SnapManagerView, task: Task) -> list[str]:
    """affected_snaps lists the snaps a task touches (snap tasks, and kinds other managers registered)."""
    if task.has("snap-setup") or task.has("snap-setup-task"):
        return [task_snap_setup(task).name]
    fn = sm.affected_by_kind.get(task.kind)
    return fn(task) if fn is not None else []


def check_conflicts(sm: SnapManagerView, names: Iterable[str], *, ignore_change: str | None = None) -> None:
    """check_conflicts raises ChangeConflictError when an unready change touches one of names."""
    wanted = set(names)
    for chg in sm.state.changes():
        if chg.is_ready() or chg.id == ignore_change:
            continue
        for task in chg.tasks():
            for name in affected_snaps(sm, task):
                if name in wanted:
                    raise ChangeConflictError(chg.id, f"cannot start a change for snap {name!r}: change "
                                                      f"{chg.id} ({chg.kind}) is in progress for it",
                                              change_kind=chg.kind, subject=name)
