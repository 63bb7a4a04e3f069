# SPDX-License-Identifier: GPL-3.0-or-later
"""ChangeSet: what a unit of work has to write, and what its commit will wake.

The identity map (engine.cache) holds the records; the ChangeSet notes
which of them are new, dirty or deleted since the last commit, each kind in
a Pending set (engine._records): the unit of work's flush takes them as
the rows of one engine.store.base.ChangeSetWrite, which the store's one
verb, write, writes into the write transaction; a commit that fails keeps
them for the next one. Beside them it notes what the commit wakes: whether tasks may have
become runnable, which changes became ready.
"""

from __future__ import annotations

from typing import Any

from ._records import Pending
from .status import Status


class ChangeSet:
    """ChangeSet notes the records a unit of work changed (new, dirty, deleted) until they are committed."""

    __slots__ = ("became_ready", "dirty_changes", "dirty_seqs", "dirty_tasks", "dirty_values", "done_flips", "ended",
                 "new_changes", "new_edges", "new_lanes", "new_log", "new_tasks", "runnable", "touched", "unblocked")

    def __init__(self) -> None:
        self.new_changes: Pending[int] = Pending()
        self.dirty_changes: Pending[int] = Pending()
        #: touched are the changes whose status is to be computed and stored again.
        self.touched: Pending[int] = Pending()
        self.new_tasks: Pending[int] = Pending()
        self.dirty_tasks: Pending[int] = Pending()
        self.new_edges: Pending[tuple[int, int]] = Pending()
        self.new_lanes: Pending[tuple[int, int]] = Pending()
        self.new_log: Pending[tuple[int, int, str, str, str]] = Pending()
        self.dirty_values: Pending[str] = Pending()
        self.dirty_seqs: Pending[str] = Pending()
        #: done_flips are tasks that became Done or stopped being Done: their halt tasks' blockers counts change.
        self.done_flips: Pending[int] = Pending()
        #: ended are tasks that stopped running: their leases end (shared stores).
        self.ended: Pending[int] = Pending()
        #: runnable: the unit may have made tasks runnable (the overlord's loop wakes after the commit).
        self.runnable = False
        #: unblocked: Done and/or Undone, when tasks moved there in this unit: what waits for them
        #: (or what they wait for) may run now. A runner that claimed, in this same unit, what they
        #: made runnable says so (UnitOfWork.handed_on): then the loop need not wake for it.
        self.unblocked: set[Status] = set()
        #: became_ready are the changes that became ready in this unit (their waiters wake after the commit).
        self.became_ready: list[int] = []

    def pending(self) -> bool:
        """pending says whether a record is to be written (the todo dicts directly: it runs often)."""
        return bool(self.dirty_tasks.todo or self.touched.todo or self.new_tasks.todo or self.new_log.todo
                    or self.done_flips.todo or self.new_changes.todo or self.dirty_changes.todo
                    or self.new_edges.todo or self.new_lanes.todo or self.dirty_values.todo
                    or self.dirty_seqs.todo or self.ended.todo)

    def pendings(self) -> tuple[Pending[Any], ...]:
        """pendings are its Pending sets, for what a commit or a rollback does to each."""
        return (self.new_changes, self.dirty_changes, self.touched, self.new_tasks, self.dirty_tasks,
                self.new_edges, self.new_lanes, self.new_log, self.dirty_values, self.dirty_seqs,
                self.done_flips, self.ended)

    def wakes(self) -> bool:
        """wakes says whether the commit is to wake the loops (this host's and, on a shared store, the others)."""
        return self.runnable or bool(self.unblocked)

    def clear(self) -> None:
        """clear forgets everything (a rollback)."""
        for pending in self.pendings():
            pending.clear()
        self.became_ready.clear()
        self.runnable = False
        self.unblocked.clear()
