# SPDX-License-Identifier: GPL-3.0-or-later
"""RecordCache: the records of changes and tasks a State has loaded, and how they are loaded.

Rows are read through the Store only when asked for, so history does not
weigh on opening or on ensure passes; the edges and lanes of a change's
cached tasks load in one query. The UnitOfWork owns one RecordCache and
hands its lookups on as its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._records import LOG_KEEP, ChangeRec, TaskRec, status_of
from .errors import DatabaseCorruptError, NotFoundError
from .status import Status

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("engine.state")

#: How many cached task records may stay after a commit before ready ones go.
CACHE_LIMIT = 4096
#: COUNT_LIMIT: a task waiting for more tasks than this has its blockers count recounted by the store (a
#: fan-in's count in Python at every outcome would cost more than the statement).
COUNT_LIMIT = 64
_DONE = Status.DONE  # (a name: Enum's class attribute lookup costs some 80 ns, at every count)
#: At most this many tasks have their edges and lanes loaded by one query.
_GRAPH_BATCH = 512


class RecordCache:
    """RecordCache maps ids to the records loaded from one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tasks: dict[int, TaskRec] = {}
        self.changes: dict[int, ChangeRec] = {}
        self._evict_above = CACHE_LIMIT
        # (Shared stores) by change, the statuses of the others counted up to a few (empty: exact): _held_counts.
        self._approx: dict[int, frozenset[Status]] = {}
        # (Shared stores) by change, the tasks added to it while its task ids were not loaded: add_task_id.
        self._added: dict[int, list[int]] = {}

    def clear(self) -> None:
        """clear forgets every record (they reload on demand)."""
        self.tasks.clear()
        self.changes.clear()
        self._approx.clear()
        self._added.clear()

    def drop_changes(self, ids: list[int]) -> None:
        """drop_changes forgets changes and their tasks (deleted: prune)."""
        gone = set(ids)
        for tid in [tid for tid, rec in self.tasks.items() if rec.change_id in gone]:
            del self.tasks[tid]
        for cid in ids:
            self.changes.pop(cid, None)
            self._added.pop(cid, None)

    def drop_tasks(self, ids: list[int]) -> None:
        """drop_tasks forgets tasks (deleted: prune)."""
        for tid in ids:
            self.tasks.pop(tid, None)

    def trec(self, tid: int) -> TaskRec:
        """trec is the record of a task, loaded if needed (NotFoundError if there is none)."""
        rec = self.tasks.get(tid)
        if rec is None:
            rows = self.store.task_rows([tid])
            if not rows:
                raise NotFoundError(f"cannot find task {tid}: it was pruned or never committed")
            rec = self.tasks[tid] = TaskRec.from_row(rows[0])
            if self.store.shared:
                self._recount([rec])
        return rec

    def trecs(self, ids: Sequence[int]) -> list[TaskRec]:
        """trecs are the records of tasks, loaded in one query if needed."""
        missing = [tid for tid in ids if tid not in self.tasks]
        if missing:
            self.merge_task_rows(self.store.task_rows(missing))
        try:
            return [self.tasks[tid] for tid in ids]
        except KeyError as e:
            raise NotFoundError(f"cannot find task {e.args[0]}: it was pruned or never committed") from None

    def merge_task_rows(self, rows: list[tuple[Any, ...]]) -> list[TaskRec]:
        """merge_task_rows caches the records of rows read elsewhere (a cached record wins)."""
        out = []
        cache = self.tasks
        fresh = []
        for row in rows:
            rec = cache.get(row[0])
            if rec is None:
                rec = cache[row[0]] = TaskRec.from_row(row)
                fresh.append(rec)
            out.append(rec)
        if fresh and self.store.shared:
            self._recount(fresh)
        return out

    def rows_of(self, ids: list[int]) -> list[tuple[Any, ...]]:
        """rows_of is the rows of tasks ids for merge_task_rows: (id,) for a cached one, the others read at once."""
        cache = self.tasks
        missing = [i for i in ids if i not in cache]
        if not missing:
            return [(i,) for i in ids]
        read = {row[0]: row for row in self.store.task_rows(missing)}
        return [read.get(i, (i,)) for i in ids if i in cache or i in read]

    def readable(self, what: str, ids: list[int]) -> list[int]:
        """readable loads the changes (what="change") or tasks of ids; it returns the ids that could be read.

        A row that cannot be read (edited by hand) is left out and logged:
        the runner reports it, and listing everything must not fail for it.
        """
        cache: dict[int, Any] = self.changes if what == "change" else self.tasks
        missing = [i for i in ids if i not in cache]
        if missing:
            rows = self.store.change_rows(missing) if what == "change" else self.store.task_rows(missing)
            parse = ChangeRec.from_row if what == "change" else TaskRec.from_row
            for row in rows:
                try:
                    cache[row[0]] = parse(row)
                except DatabaseCorruptError as e:
                    log.error("leaving out %s %s: %s", what, row[0], e)
            if what == "task" and self.store.shared:
                self._recount([cache[i] for i in missing if i in cache])
        return [i for i in ids if i in cache]

    def crec(self, cid: int) -> ChangeRec:
        """crec is the record of a change, loaded if needed (NotFoundError if there is none)."""
        rec = self.changes.get(cid)
        if rec is None:
            row = self.store.change_row(cid)
            if row is None:
                raise NotFoundError(f"cannot find change {cid}: it was pruned or never committed")
            rec = self.changes[cid] = ChangeRec.from_row(row)
        return rec

    def counts(self, rec: ChangeRec) -> dict[Status, int]:
        """counts are a change's tasks by status, loaded once (DatabaseCorruptError names an unknown one)."""
        if rec.counts is None:
            if self.store.shared and rec.ready_time is None:
                self._held_counts(rec)
            else:  # (a ready change's tasks are all ready: counted all, by the plain count's small plan)
                self._set_counts(rec, *self.store.status_counts(rec.id))
                if self.store.shared:
                    self._approx[rec.id] = frozenset()  # (exact: a task read later is one of them, as counted)
        assert rec.counts is not None
        return rec.counts

    def _held_counts(self, rec: ChangeRec) -> None:
        """_held_counts: on a shared store, the tasks held here count by their records, the others as the store
        says (Store.counts_besides: while one of them is unready, each unready status they have counted up to a
        few, and their ready ones not counted); a task read later moves from the others to the held (_recount)."""
        tasks = self.tasks
        if rec.task_ids is not None:  # (not every record cached: a pass over 1,000 changes held 12,000)
            held = [t for t in (tasks.get(tid) for tid in rec.task_ids) if t is not None and t.change_id == rec.id]
        else:
            held = [t for t in tasks.values() if t.change_id == rec.id]
        self._set_counts(rec, *self.store.counts_besides(rec.id, [t.id for t in held]))
        counts = rec.counts
        assert counts is not None
        self._approx[rec.id] = frozenset(counts) if any(not s.ready for s in counts) else frozenset()
        for t in held:
            counts[t.status] = counts.get(t.status, 0) + 1
            rec.unclean += not t.clean

    def _recount(self, recs: list[TaskRec]) -> None:
        """_recount moves tasks just read from the others to the held ones in their changes' counts (_held_counts).

        Exact counts of the others stay as they are (the task was one of
        them, by the same status); otherwise the counts are asked again (the
        store most often answers from what it read ahead).
        """
        changes, approx = self.changes, self._approx
        for t in recs:
            crec = changes.get(t.change_id) if t.change_id is not None else None
            if crec is not None and crec.counts is not None and approx.get(crec.id) != frozenset():
                crec.counts = None

    def count_again(self, recs: list[ChangeRec]) -> None:
        """count_again counts the tasks of several changes afresh, in one query.

        A change with a task whose status is unknown keeps no counts: asking
        for them (counts) raises the DatabaseCorruptError that names it.
        """
        found = self.store.status_counts_of([rec.id for rec in recs]) if recs else {}
        for rec in recs:
            rec.counts = None
            self._approx.pop(rec.id, None)
            try:
                self._set_counts(rec, *found.get(rec.id, ({}, 0)))
            except DatabaseCorruptError:
                rec.counts = None

    def _set_counts(self, rec: ChangeRec, counts: dict[str, int], unclean: int) -> None:
        parsed = {}
        for value, n in counts.items():
            try:
                parsed[status_of(value, "")] = n
            except DatabaseCorruptError:
                ids = self.store.task_ids_with_status(rec.id, value)
                raise DatabaseCorruptError(
                    f"cannot load change {rec.id}: task {', '.join(map(str, ids))} has unknown "
                    f"status {value!r} in the database") from None
        rec.counts, rec.unclean = parsed, unclean

    def task_ids(self, rec: ChangeRec) -> list[int]:
        """task_ids are the ids of a change's tasks, loaded once."""
        if rec.task_ids is None:
            ids = self.store.task_ids_of_change(rec.id)
            added = self._added.pop(rec.id, None)
            if added:
                known = set(ids)
                ids += [tid for tid in added if tid not in known]  # (those not written yet)
            rec.task_ids = ids
        return rec.task_ids

    def add_task_id(self, rec: ChangeRec, tid: int) -> None:
        """add_task_id notes a task added to a change. On a shared store, ids not loaded stay so (a chain that adds
        its next step as it runs read every task id of its change at every step): task_ids adds them when loaded."""
        if rec.task_ids is None and self.store.shared:
            self._added.setdefault(rec.id, []).append(tid)
        else:
            self.task_ids(rec).append(tid)

    def change_trecs(self, rec: ChangeRec) -> list[TaskRec]:
        """change_trecs are the records of a change's tasks (all its rows at once for a big change)."""
        ids = self.task_ids(rec)
        if len(ids) > 64 and sum(1 for tid in ids if tid not in self.tasks) > len(ids) // 2:
            self.merge_task_rows(self.store.tasks_of_change(rec.id))
        return self.trecs(ids)

    def check_task_rows(self, rec: ChangeRec) -> None:
        """check_task_rows raises DatabaseCorruptError if a task of the change cannot be read.

        The rows are parsed and dropped, not cached: checking a big change
        costs no memory beyond what its tasks use as they run.
        """
        # Their data must be JSON too: a write of the row would fail its CHECK.
        # Parsed and dropped: an untouched bag is written back as it was read.
        rec.data.check(f"change {rec.id}")
        ids, cache = rec.task_ids, self.tasks
        if ids is not None and not self.store.shared and all(tid in cache for tid in ids):
            # Every task is cached (a change made or read by this State): the cached record is what the loop
            # below would check for each row, so the rows need not be read (W1: 10,000 rows at its first claim).
            for tid in ids:
                cache[tid].data.check(f"task {tid}")
            return
        for row in self.store.each_task_of_change(rec.id):
            (cache.get(row[0]) or TaskRec.from_row(row)).data.check(f"task {row[0]}")

    def load_graph(self, recs: list[TaskRec]) -> None:
        """load_graph loads the edges and lanes of many tasks at once."""
        need_edges = [r.id for r in recs if r.wait_ids is None or r.halt_ids is None]
        if need_edges:
            waits: dict[int, list[int]] = {tid: [] for tid in need_edges}
            halts: dict[int, list[int]] = {tid: [] for tid in need_edges}
            for tid, wid in self.store.edges_touching(need_edges):
                if tid in waits:
                    waits[tid].append(wid)
                if wid in halts:
                    halts[wid].append(tid)
            for tid in need_edges:
                rec = self.tasks[tid]
                if rec.wait_ids is None:
                    rec.wait_ids = waits[tid]
                if rec.halt_ids is None:
                    rec.halt_ids = halts[tid]
        need_lanes = [r.id for r in recs if r.lanes is None]
        if need_lanes:
            lanes: dict[int, list[int]] = {tid: [] for tid in need_lanes}
            for tid, lane in self.store.lanes(need_lanes):
                lanes[tid].append(lane)
            for tid in need_lanes:
                self.tasks[tid].lanes = sorted(lanes[tid])

    def wait_ids(self, rec: TaskRec) -> Sequence[int]:
        """wait_ids are the tasks rec waits for."""
        if rec.wait_ids is None:
            self.load_graph(self._siblings(rec))
        assert rec.wait_ids is not None
        return rec.wait_ids

    def halt_ids(self, rec: TaskRec) -> Sequence[int]:
        """halt_ids are the tasks that wait for rec."""
        if rec.halt_ids is None:
            self.load_graph(self._siblings(rec))
        assert rec.halt_ids is not None
        return rec.halt_ids

    def blockers_of_halted(self, flipped: Iterable[int]) -> dict[int, int] | None:
        """blockers_of_halted counts, for every task that waits for one of flipped, its wait tasks not Done.

        From the cache alone (no query): None when a record it needs is not
        cached or its edges are not loaded, or a task waits for more than
        COUNT_LIMIT (then the store counts them, in SQL). Only a single
        writer's cache, not suspect of an outside write, is exact.
        """
        tasks = self.tasks
        counts: dict[int, int] = {}
        for tid in flipped:
            rec = tasks.get(tid)
            if rec is None or rec.halt_ids is None:
                return None
            for hid in rec.halt_ids:
                if hid in counts:
                    continue
                halted = tasks.get(hid)
                if halted is None or halted.wait_ids is None or len(halted.wait_ids) > COUNT_LIMIT:
                    return None
                n = 0
                for wid in halted.wait_ids:
                    wait = tasks.get(wid)
                    if wait is None:
                        return None
                    if wait.status is not _DONE:
                        n += 1
                counts[hid] = n
        return counts

    def lanes(self, rec: TaskRec) -> Sequence[int]:
        """lanes are the lanes of rec ([] for none)."""
        if rec.lanes is None:
            self.load_graph(self._siblings(rec))
        assert rec.lanes is not None
        return rec.lanes

    def own_wait_ids(self, rec: TaskRec) -> list[int]:
        """own_wait_ids are the tasks rec waits for, as a list of its own to add to."""
        ids = self.wait_ids(rec)
        if not isinstance(ids, list):
            ids = rec.wait_ids = list(ids)
        return ids

    def own_halt_ids(self, rec: TaskRec) -> list[int]:
        """own_halt_ids are the tasks that wait for rec, as a list of its own to add to."""
        ids = self.halt_ids(rec)
        if not isinstance(ids, list):
            ids = rec.halt_ids = list(ids)
        return ids

    def own_lanes(self, rec: TaskRec) -> list[int]:
        """own_lanes are the lanes of rec, as a list of its own to change."""
        lanes = self.lanes(rec)
        if not isinstance(lanes, list):
            lanes = rec.lanes = list(lanes)
        return lanes

    def own_log_lines(self, rec: TaskRec) -> list[tuple[str, str, str]]:
        """own_log_lines are the last log lines of rec, as a list of its own to change."""
        lines = self.log_lines(rec)
        if not isinstance(lines, list):
            lines = rec.log = list(lines)
        return lines

    def _siblings(self, rec: TaskRec) -> list[TaskRec]:
        """_siblings is rec and the cached tasks of its change whose graph is not loaded yet.

        Whoever asks for the edges or lanes of one task of a change usually
        asks for those of the others next (a view of the change, an abort):
        one query for all of them instead of one per task.
        """
        crec = self.changes.get(rec.change_id) if rec.change_id is not None else None
        if crec is None or crec.task_ids is None or len(crec.task_ids) <= 1:
            return [rec]
        cache = self.tasks
        batch = [rec]
        for tid in crec.task_ids:
            other = cache.get(tid)
            if other is not None and other is not rec and (
                    other.wait_ids is None or other.halt_ids is None or other.lanes is None):
                batch.append(other)
                if len(batch) >= _GRAPH_BATCH:
                    break
        return batch

    def log_lines(self, rec: TaskRec) -> Sequence[tuple[str, str, str]]:
        """log_lines are the last log lines of rec, oldest first."""
        if rec.log is None:
            rec.log = self.store.log_lines(rec.id, LOG_KEEP)
        return rec.log

    def evict(self) -> None:
        """evict drops ready history from the cache once it grew past its limit; unready records stay."""
        if len(self.tasks) <= self._evict_above:
            return
        # Keep what is unready: the runner works on it. History reloads on demand.
        for tid in [tid for tid, rec in self.tasks.items() if rec.status.ready or rec.change_id is None]:
            del self.tasks[tid]
        for cid in [cid for cid, rec in self.changes.items() if rec.ready_time is not None]:
            del self.changes[cid]
        # Scan again only once the cache has doubled: what is left is live.
        self._evict_above = max(CACHE_LIMIT, 2 * len(self.tasks))
