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

from collections.abc import Mapping
from itertools import compress
from operator import ne
from typing import Any

from ._records import FRESH_ROW, TASK_FIELDS, Pending, TaskRec, fresh_row, new_task_rows
from .status import Status
from .store.base import ChangeSetWrite
from .store.compiled import BLOCKERS_COLUMN

#: The columns of a task row after its id (engine._records.TASK_FIELDS, engine.store.statements.TASK_COLUMNS).
_TASK_COLUMNS = tuple(range(1, len(TASK_FIELDS)))
#: KEEP_INSERTED is how many new task rows a transaction may insert and still keep as TaskRec.stored
#: (about 200 bytes each; a task as new_task made it, in a change, as FRESH_ROW, no row): a change's tasks
#: claimed later are then rewritten in part (task_changes).
KEEP_INSERTED = 1024
#: The ready statuses as a row holds them (its fifth column).
_READY = frozenset(s.value for s in Status if s.ready)


class ChangeSet:
    """ChangeSet notes the records a unit of work changed (new, dirty, deleted) until they are committed."""

    __slots__ = ("_all", "became_ready", "dirty_changes", "dirty_seqs", "dirty_tasks", "dirty_values", "done_flips",
                 "ended", "fresh", "new_changes", "new_edges", "new_lanes", "new_log", "new_tasks", "runnable",
                 "touched", "unblocked", "written")

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
        #: written are the task rows the open transaction wrote (a single writer's), by id: the rows as the
        #: database holds them once it commits (TaskRec.stored; task_changes).
        self.written: dict[int, tuple[Any, ...]] = {}
        #: fresh: the open transaction inserted more than KEEP_INSERTED new tasks (a single writer's; stored).
        self.fresh = False
        self._all = self.pendings()  # (the sets are made once: committed walks them at every commit)

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
        self.written.clear()
        self.fresh = False
        self.runnable = False
        self.unblocked.clear()

    def task_rows(self, w: ChangeSetWrite, tasks: Mapping[int, TaskRec], shared: bool,
                  blockers: dict[int, int] | None = None, *, count: bool = False) -> None:
        """task_rows takes the new and the rewritten tasks as rows of w (a shared store rewrites whole rows).

        blockers (a single writer's): the blockers counts to write, by task, with the task's other columns.
        count (a single writer's cache holding the statuses the database will: no outside write kept apart):
        the new tasks that wait are inserted with their blockers count (counted_tasks; tasks_counted, whole
        rows), not recounted.
        """
        if self.new_tasks.todo:
            recs = [tasks[tid] for tid in self.new_tasks.take() if tid in tasks]
            # A task as new_task made it is inserted with its few set values (insert_new_tasks).
            w.tasks, w.new_tasks = new_task_rows(recs)
            if count and not shared and self.new_edges.todo:
                if w.new_tasks:
                    w.new_tasks, w.counted_tasks = _counted(w.new_tasks, tasks)
                if w.tasks:  # (a new task with values set, say: the next step of a chain a handler adds)
                    w.tasks, w.tasks_counted = _counted(w.tasks, tasks)
            if not shared and len(recs) <= KEEP_INSERTED:
                self._inserted(w, tasks)
            elif not shared:
                self.fresh = True  # a big fan-out: its rows as inserted are rebuilt when compared (stored)
        if self.dirty_tasks.todo:
            rows = [tasks[tid].row() for tid in self.dirty_tasks.take() if tid in tasks]
            if shared:
                w.task_updates = [(*r[1:], r[0]) for r in rows]
            else:
                w.task_changes = self.task_changes(rows, tasks, blockers)
        elif blockers:
            w.task_changes = [((BLOCKERS_COLUMN,), [(n, tid) for tid, n in blockers.items()])]

    def _inserted(self, w: ChangeSetWrite, tasks: Mapping[int, TaskRec]) -> None:
        """_inserted notes the rows w inserts as written: a whole row as is, a task as new_task made it (in a
        change, so its row never changes but for the columns fresh_row() fills in) as FRESH_ROW, without a row."""
        written = self.written
        for row in w.tasks:
            written[row[0]] = row
        for row in w.tasks_counted:
            written[row[0]] = row[:-1]  # (its blockers count last, a column of no record)
        for rows in (w.new_tasks, w.counted_tasks):
            for row in rows:
                written[row[0]] = FRESH_ROW if row[1] is not None else fresh_row(tasks[row[0]])

    def task_changes(self, rows: list[tuple[Any, ...]], tasks: Mapping[int, TaskRec],
                     blockers: dict[int, int] | None = None) -> list[tuple[tuple[int, ...], list[tuple[Any, ...]]]]:
        """task_changes groups rewritten task rows by the columns that differ from the database's (a single writer).

        The cache knows the rows of unready tasks as the database holds them
        (TaskRec.stored: as loaded, rewritten, or inserted by a transaction
        that inserted at most KEEP_INSERTED; a bigger fan-out's, whose
        10,000 rows would cost 2 MiB, as FRESH_ROW, rebuilt when compared;
        not ready ones), or as this
        transaction wrote them (written); any other row is written whole.
        Only what differs is rewritten: every
        UPDATE of an indexed column (the change's, the status) costs SQLite
        the upkeep of its indexes, so a step of a chain rewrites its status,
        times and counts only. Each group is (column indexes, rows of those
        columns' values then the id). A task in blockers gets its count
        written in the same UPDATE (BLOCKERS_COLUMN last); the others of
        blockers, in one of their own.
        """
        written = self.written
        groups: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            tid = row[0]
            old = written.get(tid) or tasks[tid].stored
            if old is FRESH_ROW:
                old = fresh_row(tasks[tid])
            written[tid] = row
            values = row[1:]
            if old is None:
                cols = _TASK_COLUMNS
            else:  # (by map and compress, in C: twice a step of a chain)
                differ = list(map(ne, old[1:], values))
                cols, values = tuple(compress(_TASK_COLUMNS, differ)), tuple(compress(values, differ))
            if blockers and tid in blockers:
                groups.setdefault((*cols, BLOCKERS_COLUMN), []).append((*values, blockers.pop(tid), tid))
            elif cols:
                groups.setdefault(cols, []).append((*values, tid))
        if blockers:
            groups.setdefault((BLOCKERS_COLUMN,), []).extend((n, tid) for tid, n in blockers.items())
        return list(groups.items())

    def committed(self, tasks: Mapping[int, TaskRec]) -> None:
        """committed forgets what the transaction wrote, once committed (Pending.committed of each set)."""
        self.stored(tasks)  # first: it reads new_tasks.done
        for pending in self._all:
            if pending.done:  # (the sets read directly: a commit of a chain's step leaves most of them empty)
                pending.done.clear()

    def stored(self, tasks: Mapping[int, TaskRec]) -> None:
        """stored notes, once the transaction is committed, the rows it wrote as the database's."""
        if self.fresh:
            # The tasks this transaction inserted as new_task made them (and that are so still, so as the
            # database holds them): FRESH_ROW, and no row kept per task (engine._records.fresh_row).
            self.fresh = False
            for tid in self.new_tasks.done:
                rec = tasks.get(tid)
                if rec is not None and rec.stored is None and rec.change_id is not None and rec.is_fresh():
                    rec.stored = FRESH_ROW
        if not self.written:
            return
        for tid, row in self.written.items():
            rec = tasks.get(tid)
            if rec is not None:
                rec.stored = row if row is FRESH_ROW or row[4] not in _READY else None
        self.written.clear()


def _counted(rows: list[tuple[Any, ...]], tasks: Mapping[int, TaskRec]) -> tuple[list[tuple[Any, ...]],
                                                                              list[tuple[Any, ...]]]:
    """_counted splits new_row()s: those of tasks that wait for nothing or for a task not cached, and those of
    the others with their blockers count (the tasks they wait for that are not Done) appended.

    A new task's edges are all new (its wait_ids, complete), and the
    statuses of the cached tasks it waits for are those the flush writes:
    the count is the one recount_blockers would read back.
    """
    plain, counted = [], []
    done = Status.DONE
    for row in rows:
        waits = tasks[row[0]].wait_ids
        if waits:
            n = 0
            for wid in waits:
                wait = tasks.get(wid)
                if wait is None:
                    break
                if wait.status is not done:
                    n += 1
            else:
                counted.append((*row, n))
                continue
        plain.append(row)
    return plain, counted
