# SPDX-License-Identifier: GPL-3.0-or-later
"""Conflicts: the key a change working on a snap affects, which snaps a task touches, which snaps unready
changes work on, and the check every verb makes before it builds a change."""

from __future__ import annotations

from collections.abc import Iterable

from engine import Change, ChangeConflictError, Task

from ..snap import valid_snap_name
from .model import SnapManagerView, task_snap_setup


def snap_key(name: str) -> str:
    """snap_key is the key a change that works on snap name affects (engine: new_change(affects=...))."""
    return f"snap:{name}"


def affected_snaps(sm: SnapManagerView, task: Task) -> list[str]:
    """affected_snaps lists the snaps a task touches (snap tasks, and kinds other managers registered)."""
    if task.has("snap-setup") or task.has("snap-setup-task"):
        return [task_snap_setup(task).name]
    fn = sm.affected_by_kind.get(task.kind)
    return fn(task) if fn is not None else []


def busy_snaps(sm: SnapManagerView, names: Iterable[str], *, ignore_change: str | None = None) -> dict[str, Change]:
    """busy_snaps maps those of names an unready change affects to the oldest such change.

    One indexed query (engine: State.affecting), no walk over tasks: every change that works on snaps
    declares them (snapstate.new_change, and Change.affect for what a change adds later).
    """
    # A name that is no snap name is in no change (nor any key the engine takes: a 5,000-character name was its
    # ValueError out of every verb); the verb refuses it in its own words.
    wanted = {snap_key(n): n for n in names if valid_snap_name(n)}
    out: dict[str, Change] = {}
    if not wanted:
        return out
    for chg in sm.state.affecting(list(wanted), ignore=ignore_change):
        for key in chg.affects():
            name = wanted.get(key)
            if name is not None and name not in out:
                out[name] = chg
    return out


def check_conflicts(sm: SnapManagerView, names: Iterable[str], *, ignore_change: str | None = None) -> None:
    """check_conflicts raises ChangeConflictError when an unready change affects one of names.

    While a queued request runs (SnapManager's on_conflict="queue"), there is nothing to check: the
    engine started it once no older unready change affected its snaps, and newer ones wait for it.
    """
    if sm.into_change is not None:
        return
    names = list(names)
    busy = busy_snaps(sm, names, ignore_change=ignore_change)
    for name in names:
        chg = busy.get(name)
        if chg is not None:
            raise ChangeConflictError(chg.id, f"cannot start a change for snap {name!r}: change "
                                              f"{chg.id} ({chg.kind}) is in progress for it",
                                      change_kind=chg.kind, subject=name)
