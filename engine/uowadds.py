# SPDX-License-Identifier: GPL-3.0-or-later
"""RecordAdds: what Change, Task and the State add to a unit of work (a part of engine.unitofwork.UnitOfWork).

The UnitOfWork inherits these members; they are kept in their own module
(one concern: noting new records, edges, lanes, values and what the commit
wakes, for the flush to write).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._records import ChangeRec, TaskRec
    from .cache import RecordCache
    from .changeset import ChangeSet
    from .store import Store


class RecordAdds:
    """RecordAdds notes, in the change set, the records, edges, lanes and values added to a unit of work."""

    records: RecordCache
    changeset: ChangeSet
    store: Store
    values: dict[str, str | None]

    if TYPE_CHECKING:
        def note_waits(self, tids: Iterable[int]) -> None: ...

    def touch(self, cid: int) -> None:
        """touch notes that a change's status must be computed and stored again at commit."""
        self.changeset.touched.add(cid)

    def end_lease(self, tid: int) -> None:
        """end_lease ends the runner's lease on a task at commit: its outcome is recorded (shared stores)."""
        if self.store.shared:
            self.changeset.ended.add(tid)

    def handed_on(self) -> None:
        """handed_on says that what the tasks done in this unit made runnable was claimed in it (no pass needed)."""
        self.changeset.unblocked.clear()

    def note_runnable(self) -> None:
        """note_runnable notes that the unit of work may have made tasks runnable (the overlord wakes)."""
        self.changeset.runnable = True

    def add_change(self, rec: ChangeRec) -> None:
        """add_change caches a new change, written at commit."""
        self.records.changes[rec.id] = rec
        self.changeset.new_changes.add(rec.id)

    def add_task(self, rec: TaskRec) -> None:
        """add_task caches a new task, written at commit."""
        self.records.tasks[rec.id] = rec
        self.changeset.new_tasks.add(rec.id)

    def add_edge(self, rec: TaskRec, wait: TaskRec) -> None:
        """add_edge makes rec wait for wait."""
        # (The lists read directly when they are the records' own already: every edge of a chain's submit.)
        waits = rec.wait_ids
        if type(waits) is not list:
            waits = self.records.own_wait_ids(rec)
        halts = wait.halt_ids
        if type(halts) is not list:
            halts = self.records.own_halt_ids(wait)
        waits.append(wait.id)
        halts.append(rec.id)
        cs = self.changeset
        cs.new_edges.todo[(rec.id, wait.id)] = None  # (Pending.add, inline)
        cid, wid = rec.change_id, wait.change_id
        if cid is not None:
            cs.touched.add(cid)
        if wid is not None and wid != cid:
            cs.touched.add(wid)

    def add_lane(self, rec: TaskRec, lane: int) -> None:
        """add_lane puts a task in a lane."""
        lanes = self.records.own_lanes(rec)
        if lane not in lanes:
            lanes.append(lane)
            lanes.sort()
            self.changeset.new_lanes.add((rec.id, lane))

    def value(self, key: str) -> str | None:
        """value is the JSON text of a state key, or None."""
        if key in self.values:
            return self.values[key]
        text = self.values[key] = self.store.state_value(key)
        return text

    def set_value(self, key: str, text: str | None) -> None:
        """set_value stores the JSON text of a state key (None deletes it) at commit."""
        self.values[key] = text
        self.changeset.dirty_values.add(key)
