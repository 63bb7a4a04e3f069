# SPDX-License-Identifier: GPL-3.0-or-later
"""FlushRows: what a unit of work's flush writes, as the rows of one store write (a part of engine.unitofwork).

The UnitOfWork inherits these members; they are kept in their own module
(one concern: turning the change set into an engine.store.base.ChangeSetWrite,
the changes' statuses settled once the tasks they read are written, and the
blockers counts a single writer's cache knows written as values).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._records import LOG_KEEP, ChangeRec
from .errors import DatabaseCorruptError, NotFoundError
from .notice import CHANGE_UPDATE
from .status import Status
from .store.base import ChangeSetWrite

if TYPE_CHECKING:
    from .cache import RecordCache
    from .changeset import ChangeSet
    from .notice import NoticeBook
    from .store import Store

log = logging.getLogger("engine.state")


class FlushRows:
    """FlushRows takes what a unit of work changed as the rows of one write."""

    records: RecordCache
    changeset: ChangeSet
    store: Store
    notices: NoticeBook
    values: dict[str, str | None]
    blockers_suspect: bool
    cache_stale: bool
    waiting_known: set[int] | None
    _last: dict[str, int]

    if TYPE_CHECKING:
        def note_waits(self, tids: Iterable[int]) -> None: ...

        def change_status(self, crec: ChangeRec) -> Status: ...

    def cache_exact(self) -> bool:
        """cache_exact says whether the cache's records and edges are the database's (with this unit's writes).

        A single writer's, unless another connection wrote while this unit
        kept writes (the cache then kept) or the blockers counts are still to
        be checked after one (blockers_suspect).
        """
        return not (self.store.shared or self.blockers_suspect or self.cache_stale)

    def _rows(self, statuses: bool) -> ChangeSetWrite:
        """_rows takes what the change set holds as the rows of one write (what _settle computes, later)."""
        cs, tasks = self.changeset, self.records.tasks
        w = ChangeSetWrite(settle=self._settle if statuses and not self.store.shared else self._sequences)
        if cs.new_changes.todo:
            changes = self.records.changes
            w.changes = [changes[cid].row(self._write_status(changes[cid]))
                         for cid in cs.new_changes.take() if cid in changes]
        blockers = self._blockers_known()
        if cs.new_tasks.todo or cs.dirty_tasks.todo or blockers:
            cs.task_rows(w, tasks, self.store.shared, blockers, count=not self.cache_stale)
        if cs.new_edges.todo:
            w.edges = cs.new_edges.take()
            # (inserted with their counts: engine.changeset)
            counted = {row[0] for rows in (w.counted_tasks, w.tasks_counted) for row in rows}
            w.recount = sorted({tid for tid, _ in w.edges if tid not in counted})
            self.note_waits(tid for tid, _ in w.edges)
        # (What waits for the flipped tasks is found by the store: PostgreSQL, in the recount's statement.)
        if cs.done_flips.todo:
            flips = cs.done_flips.take()
            if blockers is None:
                w.halted_by = flips
        w.lanes = cs.new_lanes.take() if cs.new_lanes.todo else w.lanes
        w.ended = cs.ended.take() if cs.ended.todo else w.ended
        if cs.new_log.todo:
            lines = cs.new_log.take()
            w.log = [(tid, t, lv, msg) for tid, _seq, t, lv, msg in lines]
            w.log_trim, w.log_keep = sorted({tid for tid, *_ in lines}), LOG_KEEP
        w.values = {k: self.values.get(k) for k in cs.dirty_values.take()} if cs.dirty_values.todo else w.values
        return w

    def _blockers_known(self) -> dict[int, int] | None:
        """_blockers_known counts what the tasks halted by this flush's Done flips wait for, from the cache.

        A single writer's cache, not suspect of an outside write, knows the
        edges and statuses the store's recount would read: the counts are
        written as values with the rows (no recount statement). None: the
        store recounts (a shared store, new edges, a record not cached).
        """
        cs = self.changeset
        if not cs.done_flips.todo or cs.new_edges.todo or not self.cache_exact():
            return None
        return self.records.blockers_of_halted(cs.done_flips.todo)

    def _settle(self, w: ChangeSetWrite) -> None:
        """_settle computes the rows and statuses of the changes, once the tasks and edges they read are written.

        (Shared stores settle them at commit, under their row locks: engine.shared.)
        """
        cs, changes = self.changeset, self.records.changes
        if cs.dirty_changes.todo:
            w.change_updates = [(*r[1:], r[0]) for r in (changes[cid].row(self._write_status(changes[cid]))
                                                          for cid in cs.dirty_changes.take() if cid in changes)]
        if cs.touched.todo:
            w.statuses = statuses = []  # (status, change id)
            for cid in cs.touched.take():
                rec = changes.get(cid)
                try:
                    if rec is None and self.waiting_known is not None and cid in self.waiting_known:
                        rec = self.records.crec(cid)
                    status = self.change_status(rec) if rec is not None and rec.db_status is not None else None
                except (DatabaseCorruptError, NotFoundError) as e:
                    log.error("cannot store the status of change %s: %s", cid, e)
                    continue  # one damaged change must not keep the others from committing
                if rec is not None and status is not None:
                    if self.waiting_known is not None and not self.records.counts(rec).get(Status.WAIT):
                        self.waiting_known.discard(cid)
                    if status is not rec.db_status:
                        statuses.append((status.value, cid))
                        rec.db_status = status
                        self.change_updated(rec)
        self._sequences(w)

    def _sequences(self, w: ChangeSetWrite) -> None:
        """_sequences takes the last ids handed out, once the statuses' change-update notices took theirs."""
        if self.changeset.dirty_seqs.todo:
            w.sequences = {name: self._last[name] for name in self.changeset.dirty_seqs.take()}

    def _write_status(self, rec: ChangeRec) -> Status:
        old, rec.db_status = rec.db_status, self.change_status(rec)
        if rec.db_status is not old:
            self.change_updated(rec, new=old is None)
        return rec.db_status

    def change_updated(self, rec: ChangeRec, new: bool = False) -> None:
        """change_updated records a change-update notice: the change spawned or its status moved (snapd)."""
        self.notices.add(CHANGE_UPDATE, str(rec.id), {"kind": rec.kind}, new=new)
