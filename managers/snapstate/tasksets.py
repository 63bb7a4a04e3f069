# SPDX-License-Identifier: GPL-3.0-or-later
"""The task graphs of the snap manager's verbs: a chain of tasks sharing one snap setup.

The graphs follow snapd's overlord/snapstate (see docs/managers.md for the
pictures); the verbs (snapstate.py) check what is asked and put the task
sets in a change.
"""

from __future__ import annotations

from engine import Task, TaskSet

from ..errors import SnapOperationError
from .model import SnapManagerView, SnapSetup, SnapState


class TaskChain:
    """TaskChain adds tasks one after the other, each naming the task that holds the snap setup."""

    def __init__(self, sm: SnapManagerView, first: Task, setup: SnapSetup) -> None:
        first.set("snap-setup", setup.to_dict())
        self.st = sm.state
        self.first = first
        self.tasks = [first]

    def add(self, kind: str, summary: str) -> Task:
        t = self.st.new_task(kind, summary)
        t.set("snap-setup-task", self.first.id)
        t.wait_for(self.tasks[-1])
        self.tasks.append(t)
        return t

    def add_hook(self, hook: str, *, ignore_error: bool = False) -> Task:
        """add_hook adds a run-hook task of the snap's hook, which may be missing (the hook manager runs it)."""
        name = SnapSetup.from_dict(self.first.get("snap-setup")).name
        t = self.add("run-hook", f'Run {hook} hook of "{name}" snap if present')
        setup: dict[str, object] = {"snap": name, "hook": hook, "optional": True}
        if ignore_error:
            setup["ignore-error"] = True
        t.set("hook-setup", setup)
        return t

    def add_set(self, ts: TaskSet) -> None:
        ts.tasks()[0].wait_for(self.tasks[-1])
        self.tasks.extend(ts.tasks())

    def task_set(self) -> TaskSet:
        return TaskSet(*self.tasks)


def install_tasks(sm: SnapManagerView, setup: SnapSetup, snapst: SnapState | None) -> TaskSet:
    """install_tasks builds the task set that installs, refreshes to or reverts to setup's revision.

    snapd's doInstall: prerequisites, download-snap (or prepare-snap),
    validate-snap, mount-snap, stop-snap-services and unlink-current-snap
    (when installed), copy-snap-data (unless reverting), setup-profiles,
    link-snap, auto-connect, start-snap-services, the removal of revisions
    beyond the retained ones, cleanup.
    """
    st = sm.state
    name, rev = setup.name, setup.revision
    installed = snapst is not None
    if snapst is not None and not snapst.active:
        raise SnapOperationError(f"cannot refresh or revert snap {name!r}: it is disabled (enable it first)")
    local = snapst is not None and snapst.index(rev) >= 0
    label = f'"{name}" ({rev})'
    if setup.revert:
        chain = TaskChain(sm, st.new_task("prepare-snap", f"Prepare snap {label}"), setup)
    else:
        chain = TaskChain(sm, st.new_task("prerequisites", f'Ensure prerequisites for "{name}" are available'), setup)
        if setup.source == "file" and not local:
            chain.add("prepare-snap", f'Prepare snap "{setup.path}" ({rev})')
        elif local:
            chain.add("prepare-snap", f"Prepare snap {label}")
        else:
            chain.add("download-snap", f"Download snap {label} from the store")
        if not local and not setup.dangerous:
            chain.add("validate-snap", f"Fetch and check assertions for snap {label}")
        if not local:
            chain.add("mount-snap", f"Mount snap {label}")
    refreshing = installed and not setup.revert
    if refreshing:
        chain.add_hook("pre-refresh")
    if installed:
        chain.add("stop-snap-services", f'Stop snap "{name}" services').set("stop-reason",
                                                                           "revert" if setup.revert else "refresh")
        chain.add("unlink-current-snap", f'Make current revision for snap "{name}" unavailable')
    if not setup.revert:
        chain.add("copy-snap-data", f'Copy snap "{name}" data')
    chain.add("setup-profiles", f"Setup snap {label} security profiles")
    chain.add("link-snap", f"Make snap {label} available to the system")
    chain.add("auto-connect", f'Automatically connect eligible plugs and slots of snap "{name}"')
    if refreshing:
        chain.add_hook("post-refresh")
    elif not installed:
        chain.add_hook("install")
    chain.add("start-snap-services", f"Start snap {label} services")
    if snapst is not None and not setup.revert:
        for old in revisions_to_drop(sm, snapst, rev, local):
            chain.add_set(remove_revision_tasks(sm, snapst, old, last=False))
    if not setup.revert:
        chain.add("cleanup", f"Clean up snap {label} install")
    chain.add_hook("configure")
    return chain.task_set()


def revisions_to_drop(sm: SnapManagerView, snapst: SnapState, target: str, local: bool) -> list[str]:
    """revisions_to_drop is snapd's rule: those after current, and the oldest beyond what is retained."""
    seq = snapst.revisions
    cur = seq.index(snapst.current)
    after = [r for r in seq[cur + 1:] if r != target]
    before = [r for r in seq[:cur] if r != target]
    keep = sm.retained() - (0 if local else 1)
    return after + before[:max(0, len(before) - keep + 1)]


def remove_revision_tasks(sm: SnapManagerView, snapst: SnapState, revision: str, *, last: bool) -> TaskSet:
    """remove_revision_tasks builds clear-snap and discard-snap for one inactive revision."""
    st = sm.state
    info = snapst.revision_info(revision)
    setup = SnapSetup(snapst.name, revision=revision, snap_id=info.snap_id, publisher_id=info.publisher_id,
                      source="local", info=info.to_dict())
    label = f'"{snapst.name}" ({revision})'
    chain = TaskChain(sm, st.new_task("clear-snap", f"Remove data for snap {label}"), setup)
    chain.add("discard-snap", f"Remove snap {label} from the system")
    for t in chain.tasks:
        t.set("last", last)
    return chain.task_set()
