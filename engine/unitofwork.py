# SPDX-License-Identifier: GPL-3.0-or-later
"""UnitOfWork: the State's cache of records and what it writes at commit.

Records (engine._records) are loaded on demand; every change to one is noted
in a Pending set; the outermost unlock flushes them into one BEGIN IMMEDIATE
transaction and commits. The State (engine.state) adds the lock and the
public API on top; Change, Task and the TaskRunner use the methods here.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from . import _time
from ._records import LOG_KEEP, ChangeRec, Pending, TaskRec, status_of
from .assertion import AssertionBook
from .errors import DatabaseCorruptError, DatabaseError, DatabaseFullError, EngineError, NotFoundError, keeps_work
from .status import Status
from .warning import WarningBook

if TYPE_CHECKING:
    from .change import Change
    from .state import State
    from .store import Store
    from .task import Task

log = logging.getLogger("engine.state")

#: How many cached task records may stay after a commit before ready ones go.
CACHE_LIMIT = 4096
#: At most this many tasks have their edges and lanes loaded by one query.
_GRAPH_BATCH = 512

TaskHook = Callable[["Task", Status, Status], Any]
ChangeHook = Callable[["Change", Status, Status], Any]

# The order in which task statuses decide the status of their change.
STATUS_ORDER = (
    Status.ABORT, Status.UNDOING, Status.UNDO, Status.DOING, Status.DO, Status.WAIT,
    Status.ERROR, Status.UNDONE, Status.DONE, Status.HOLD,
)
_READY = (Status.DONE, Status.UNDONE, Status.HOLD, Status.ERROR)
# What a claim moves tasks to: such a move makes nothing else runnable.
_CLAIMED = (Status.DOING, Status.UNDOING, Status.WAIT)


class UnitOfWork:
    """UnitOfWork caches records and writes what changed, in one transaction per commit."""

    def __init__(self, store: Store, target: str, clock: _time.Clock) -> None:
        self._store = store
        self._target = target
        self._clock = clock
        self._relaxed = False
        self._last = store.sequences()
        self._tasks: dict[int, TaskRec] = {}
        self._evict_above = CACHE_LIMIT
        self._changes: dict[int, ChangeRec] = {}
        self._values: dict[str, str | None] = {}
        self._cache: dict[Any, Any] = {}
        self._warnings = WarningBook(self)
        self._assertions = AssertionBook(cast("State", self))
        # What must be written; see Pending.
        self._new_changes: Pending[int] = Pending()
        self._dirty_changes: Pending[int] = Pending()
        self._touched: Pending[int] = Pending()
        self._new_tasks: Pending[int] = Pending()
        self._dirty_tasks: Pending[int] = Pending()
        self._new_edges: Pending[tuple[int, int]] = Pending()
        self._new_lanes: Pending[tuple[int, int]] = Pending()
        self._new_log: Pending[tuple[int, int, str, str, str]] = Pending()
        self._dirty_values: Pending[str] = Pending()
        self._dirty_seqs: Pending[str] = Pending()
        # Tasks that became Done or stopped being Done: their halt tasks'
        # blockers counts change.
        self._done_flips: Pending[int] = Pending()
        self._blockers_suspect = True  # checked by the runner's first pass
        # Whether the unit of work made tasks runnable (the overlord wakes its
        # loop after such a commit), and the changes whose tasks got new
        # edges (the runner looks there for dependency cycles; None: look
        # everywhere, as after opening or a write by another connection).
        self._runnable = False
        self._woken = False
        self._work_hook: Callable[[], None] | None = None
        self._new_waits: set[int] | None = None
        # Changes with tasks in Wait: the Wait rule may follow edges into other
        # changes, so their status is recomputed whenever any task moves.
        self._waiting: set[int] | None = None
        self._log_seq = itertools.count()
        # Bumped whenever the cache is dropped (a rollback, a write by another
        # connection): what was learnt from the rows may have changed.
        self._generation = 0
        self._became_ready: list[int] = []
        self._task_hooks: dict[int, TaskHook] = {}
        self._change_hooks: dict[int, ChangeHook] = {}

    def _pending(self) -> bool:
        return any((self._new_changes, self._dirty_changes, self._touched, self._new_tasks, self._dirty_tasks,
                    self._new_edges, self._new_lanes, self._new_log, self._dirty_values, self._dirty_seqs,
                    self._done_flips, self._warnings.pending, self._assertions.pending, self._store.in_write))

    def _all_pending(self) -> tuple[Pending[Any], ...]:
        return (self._new_changes, self._dirty_changes, self._touched, self._new_tasks, self._dirty_tasks,
                self._new_edges, self._new_lanes, self._new_log, self._dirty_values, self._dirty_seqs,
                self._done_flips, *self._warnings.pendings(), *self._assertions.pendings())

    def _forget(self) -> None:
        self._generation += 1
        self._waiting = None
        self._tasks.clear()
        self._changes.clear()
        self._values.clear()
        self._warnings.forget()
        self._assertions.forget()

    def _rollback(self) -> None:
        """_rollback abandons the unit of work; records reload from the database."""
        self._relaxed = False
        self._store.rollback()
        for pending in self._all_pending():
            pending.clear()
        self._became_ready.clear()
        self._runnable = False
        self._forget()
        self._sync_sequences()

    def _sync_sequences(self) -> None:
        # Ids only grow: ids handed out in an abandoned unit of work stay used.
        stored = self._store.sequences()
        self._last = {k: max(v, self._last.get(k, 0)) for k, v in stored.items()}

    def _flush(self) -> None:
        """_flush writes what changed into the open write transaction."""
        if not self._pending():
            return
        store = self._store
        store.begin_write(relaxed=self._relaxed)
        if self._new_changes:
            recs = [self._changes[cid] for cid in self._new_changes.take() if cid in self._changes]
            store.insert_changes([rec.row(self._write_status(rec)) for rec in recs])
        if self._new_tasks:
            store.insert_tasks([self._tasks[tid].row() for tid in self._new_tasks.take() if tid in self._tasks])
        if self._dirty_tasks:
            rows = [self._tasks[tid].row() for tid in self._dirty_tasks.take() if tid in self._tasks]
            store.update_tasks([r[1:] + r[:1] for r in rows])
        recount: set[int] = set()
        if self._new_edges:
            edges = self._new_edges.take()
            store.insert_edges(edges)
            recount.update(tid for tid, _ in edges)
            self._note_waits(tid for tid, _ in edges)
        if self._done_flips:
            recount.update(store.halted_by(self._done_flips.take()))
        if recount:
            store.recount_blockers(sorted(recount))
        if self._new_lanes:
            store.insert_lanes(self._new_lanes.take())
        if self._new_log:
            lines = self._new_log.take()
            trim = sorted({tid for tid, *_ in lines})
            store.insert_log([(tid, t, lv, msg) for tid, _seq, t, lv, msg in lines], trim, LOG_KEEP)
        if self._dirty_changes:
            recs = [self._changes[cid] for cid in self._dirty_changes.take() if cid in self._changes]
            rows = [rec.row(self._write_status(rec)) for rec in recs]
            store.update_changes([r[1:] + r[:1] for r in rows])
        if self._touched:
            rows2: list[tuple[str, int]] = []
            for cid in self._touched.take():
                rec = self._changes.get(cid)
                try:
                    if rec is None and self._waiting is not None and cid in self._waiting:
                        rec = self._crec(cid)
                    status = self._change_status(rec) if rec is not None and rec.db_status is not None else None
                except (DatabaseCorruptError, NotFoundError) as e:
                    log.error("cannot store the status of change %s: %s", cid, e)
                    continue  # one damaged change must not keep the others from committing
                if rec is not None and status is not None:
                    if self._waiting is not None and not self._counts(rec).get(Status.WAIT):
                        self._waiting.discard(cid)
                    if status is not rec.db_status:
                        rows2.append((status.value, cid))
                        rec.db_status = status
            store.update_change_statuses(rows2)
        if self._dirty_values:
            store.save_state_values({k: self._values.get(k) for k in self._dirty_values.take()})
        self._warnings.flush(store)
        self._assertions.flush(store)
        if self._dirty_seqs:
            store.save_sequences({name: self._last[name] for name in self._dirty_seqs.take()})

    def _write_status(self, rec: ChangeRec) -> Status:
        rec.db_status = self._change_status(rec)
        return rec.db_status

    def _relax_commit(self) -> None:
        """_relax_commit lets this unit of work commit without its own sync.

        Only for writes the engine derives again after a crash (claiming
        tasks): it becomes durable with the next synced commit, and a power
        cut can only lose it together with every commit after it.
        """
        self._relaxed = True

    def _commit(self) -> list[int]:
        """_commit flushes and commits; it returns the changes that became ready.

        A commit refused because another process holds the write lock, or
        because the disk is full, keeps the unit of work in memory for the
        next commit: nothing is lost. Any other failure (a constraint, an
        encoding error, a driver error) rolls the unit back, reloads the
        records from the database and raises once: the next unit of work
        starts clean, so one bad unit never wedges the State.
        """
        if not self._pending():
            self._relaxed = False
            return []
        try:
            self._flush()
            self._store.commit()
        except BaseException as e:
            self._relaxed = False
            if not keeps_work(e):
                self._rollback()
                if isinstance(e, EngineError) or not isinstance(e, Exception):
                    raise
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                raise DatabaseError(f"cannot commit to state database {self._target}: {reason}; "
                                    "the unit of work was rolled back") from e
            # Keep everything in memory for the next commit: nothing is lost.
            self._store.rollback()
            for cid in itertools.chain(self._touched.done, self._dirty_changes.done):
                rec = self._changes.get(cid)
                if rec is not None and rec.db_status is not None:
                    rec.db_status = Status.DEFAULT  # unknown: rewrite it
            for pending in self._all_pending():
                pending.failed()
            for cid in self._new_changes.todo:
                if cid in self._changes:
                    self._changes[cid].db_status = None
            if isinstance(e, DatabaseFullError) and not e.kept:
                raise DatabaseFullError(f"{e}; the changes are kept in memory and written by the next "
                                        "commit once there is space", kept=True) from e
            raise
        self._relaxed = False
        for pending in self._all_pending():
            pending.committed()
        if self._runnable:
            self._runnable = False
            if self._work_hook is not None:
                self._woken = True
        ready, self._became_ready = self._became_ready, []
        if len(self._tasks) > self._evict_above:
            self._evict()
        return ready

    def _evict(self) -> None:
        # Keep what is unready: the runner works on it. History reloads on demand.
        for tid in [tid for tid, rec in self._tasks.items() if rec.status.ready or rec.change_id is None]:
            del self._tasks[tid]
        for cid in [cid for cid, rec in self._changes.items() if rec.ready_time is not None]:
            del self._changes[cid]
        # Scan again only once the cache has doubled: what is left is live.
        self._evict_above = max(CACHE_LIMIT, 2 * len(self._tasks))

    # -- loading records ---------------------------------------------------------

    def _trec(self, tid: int) -> TaskRec:
        rec = self._tasks.get(tid)
        if rec is None:
            rows = self._store.task_rows([tid])
            if not rows:
                raise NotFoundError(f"cannot find task {tid}: it was pruned or never committed")
            rec = self._tasks[tid] = TaskRec.from_row(rows[0])
        return rec

    def _trecs(self, ids: list[int]) -> list[TaskRec]:
        missing = [tid for tid in ids if tid not in self._tasks]
        if missing:
            self._merge_task_rows(self._store.task_rows(missing))
        try:
            return [self._tasks[tid] for tid in ids]
        except KeyError as e:
            raise NotFoundError(f"cannot find task {e.args[0]}: it was pruned or never committed") from None

    def _merge_task_rows(self, rows: list[tuple[Any, ...]]) -> list[TaskRec]:
        out = []
        cache = self._tasks
        for row in rows:
            rec = cache.get(row[0])
            if rec is None:
                rec = cache[row[0]] = TaskRec.from_row(row)
            out.append(rec)
        return out

    def _crec(self, cid: int) -> ChangeRec:
        rec = self._changes.get(cid)
        if rec is None:
            row = self._store.change_row(cid)
            if row is None:
                raise NotFoundError(f"cannot find change {cid}: it was pruned or never committed")
            rec = self._changes[cid] = ChangeRec.from_row(row)
        return rec

    def _counts(self, rec: ChangeRec) -> dict[Status, int]:
        if rec.counts is None:
            counts, rec.unclean = self._store.status_counts(rec.id)
            parsed = {}
            for value, n in counts.items():
                try:
                    parsed[status_of(value, "")] = n
                except DatabaseCorruptError:
                    ids = self._store.query("SELECT id FROM tasks WHERE change_id = ? AND status = ?", (rec.id, value))
                    raise DatabaseCorruptError(
                        f"cannot load change {rec.id}: task {', '.join(str(r[0]) for r in ids)} has unknown "
                        f"status {value!r} in the database") from None
            rec.counts = parsed
        return rec.counts

    def _task_ids(self, rec: ChangeRec) -> list[int]:
        if rec.task_ids is None:
            rec.task_ids = self._store.task_ids_of_change(rec.id)
        return rec.task_ids

    def _change_trecs(self, rec: ChangeRec) -> list[TaskRec]:
        ids = self._task_ids(rec)
        if len(ids) > 64 and sum(1 for tid in ids if tid not in self._tasks) > len(ids) // 2:
            self._merge_task_rows(self._store.tasks_of_change(rec.id))
        return self._trecs(ids)

    def _check_task_rows(self, rec: ChangeRec) -> None:
        """_check_task_rows raises DatabaseCorruptError if a task of the change cannot be read.

        The rows are parsed and dropped, not cached: checking a big change
        costs no memory beyond what its tasks use as they run.
        """
        # Their data must be JSON too: a write of the row would fail its CHECK.
        # Parsed and dropped: an untouched bag is written back as it was read.
        rec.data.check(f"change {rec.id}")
        for row in self._store.each_task_of_change(rec.id):
            (self._tasks.get(row[0]) or TaskRec.from_row(row)).data.check(f"task {row[0]}")

    def _load_graph(self, recs: list[TaskRec]) -> None:
        """_load_graph loads the edges and lanes of many tasks at once."""
        need_edges = [r.id for r in recs if r.wait_ids is None or r.halt_ids is None]
        if need_edges:
            waits: dict[int, list[int]] = {tid: [] for tid in need_edges}
            halts: dict[int, list[int]] = {tid: [] for tid in need_edges}
            for tid, wid in self._store.edges_touching(need_edges):
                if tid in waits:
                    waits[tid].append(wid)
                if wid in halts:
                    halts[wid].append(tid)
            for tid in need_edges:
                rec = self._tasks[tid]
                if rec.wait_ids is None:
                    rec.wait_ids = waits[tid]
                if rec.halt_ids is None:
                    rec.halt_ids = halts[tid]
        need_lanes = [r.id for r in recs if r.lanes is None]
        if need_lanes:
            lanes: dict[int, list[int]] = {tid: [] for tid in need_lanes}
            for tid, lane in self._store.lanes(need_lanes):
                lanes[tid].append(lane)
            for tid in need_lanes:
                self._tasks[tid].lanes = sorted(lanes[tid])

    def _wait_ids(self, rec: TaskRec) -> list[int]:
        if rec.wait_ids is None:
            self._load_graph(self._siblings(rec))
        assert rec.wait_ids is not None
        return rec.wait_ids

    def _halt_ids(self, rec: TaskRec) -> list[int]:
        if rec.halt_ids is None:
            self._load_graph(self._siblings(rec))
        assert rec.halt_ids is not None
        return rec.halt_ids

    def _lanes(self, rec: TaskRec) -> list[int]:
        if rec.lanes is None:
            self._load_graph(self._siblings(rec))
        assert rec.lanes is not None
        return rec.lanes

    def _siblings(self, rec: TaskRec) -> list[TaskRec]:
        """_siblings is rec and the cached tasks of its change whose graph is not loaded yet.

        Whoever asks for the edges or lanes of one task of a change usually
        asks for those of the others next (a view of the change, an abort):
        one query for all of them instead of one per task.
        """
        crec = self._changes.get(rec.change_id) if rec.change_id is not None else None
        if crec is None or crec.task_ids is None or len(crec.task_ids) <= 1:
            return [rec]
        cache = self._tasks
        batch = [rec]
        for tid in crec.task_ids:
            other = cache.get(tid)
            if other is not None and other is not rec and (
                    other.wait_ids is None or other.halt_ids is None or other.lanes is None):
                batch.append(other)
                if len(batch) >= _GRAPH_BATCH:
                    break
        return batch

    def _log_lines(self, rec: TaskRec) -> list[tuple[str, str, str]]:
        if rec.log is None:
            rec.log = self._store.log_lines(rec.id, LOG_KEEP)
        return rec.log

    def _task_handle(self, rec: TaskRec) -> Task:
        if rec.handle is None:
            from .task import Task

            rec.handle = Task(cast("State", self), rec.id)
        return rec.handle

    def _change_handle(self, rec: ChangeRec) -> Change:
        if rec.handle is None:
            from .change import Change

            rec.handle = Change(cast("State", self), rec.id)
        return rec.handle

    def _check_blockers(self) -> None:
        """_check_blockers repairs blockers counts after the database changed behind our back."""
        if not self._blockers_suspect:
            return
        self._flush()
        stale = self._store.stale_blockers()
        if stale:
            log.info("recounting what %d tasks wait for in %s", len(stale), self._target)
            self._store.begin_write()
            self._store.recount_blockers(stale)
        self._blockers_suspect = False

    def _has_unclean_ready(self) -> bool:
        """_has_unclean_ready says whether a ready change still has tasks to clean (lock held)."""
        self._flush()
        return bool(self._store.unclean_changes(limit=1))

    # -- changing records -----------------------------------------------------

    def _now(self) -> datetime:
        return _time.utc(self._clock(), "the state clock's time")

    def _dirty_task(self, rec: TaskRec) -> None:
        if rec.id not in self._new_tasks.todo:
            self._dirty_tasks.add(rec.id)

    def _dirty_change(self, rec: ChangeRec) -> None:
        if rec.id not in self._new_changes.todo:
            self._dirty_changes.add(rec.id)

    def _set_task_status(self, rec: TaskRec, new: Status) -> None:
        """_set_task_status moves a task to new, keeping the aggregates of the changes it affects."""
        old = rec.status
        if old is new:
            return
        crec = self._crec(rec.change_id) if rec.change_id is not None else None
        # The Wait rule follows edges across changes: a change with waiting
        # tasks may move when any task moves.
        waiting = self._waiting_changes()
        affected = [crec] if crec is not None else []
        affected += self._loadable(cid for cid in waiting if crec is None or cid != crec.id)
        hooks = self._change_hooks
        if hooks:
            for c in affected:
                if c.observed is None:
                    c.observed = self._change_status(c)
        if crec is not None:
            counts = self._counts(crec)
            counts[old] = counts.get(old, 0) - 1
            counts[new] = counts.get(new, 0) + 1
        rec.status = new
        if (old is Status.DONE) != (new is Status.DONE):
            self._done_flips.add(rec.id)
        if new not in _CLAIMED:
            self._runnable = True  # something may run now: the overlord's loop wakes after the commit
        if new.ready and not old.ready:
            rec.ready_time = self._now()
            rec.ready_text = _time.to_text(rec.ready_time)
        self._dirty_task(rec)
        log.debug("task %s (%s) of change %s: %s -> %s", rec.id, rec.kind, rec.change_id, old.value, new.value)
        if crec is not None:
            if new is Status.WAIT:
                waiting.add(crec.id)
            if new.ready and not old.ready and crec.ready_time is None and self._unready(crec) == 0:
                self._mark_ready(crec)
        for c in affected:
            self._touched.add(c.id)
            if hooks:
                self._notify_change(c)
            else:
                c.observed = None
        if self._task_hooks:
            self._fire(self._task_hooks, self._task_handle(rec), old, new)

    def _loadable(self, ids: Iterable[int]) -> list[ChangeRec]:
        """_loadable loads the changes of ids that can be loaded (the runner reports the others)."""
        recs = []
        for cid in ids:
            try:
                recs.append(self._crec(cid))
            except (DatabaseCorruptError, NotFoundError) as e:
                log.debug("skipping change %s: %s", cid, e)
        return recs

    def _note_waits(self, tids: Iterable[int]) -> None:
        """_note_waits records the changes of tasks that got new edges, for the runner's cycle check."""
        if self._new_waits is None:
            return
        for tid in tids:
            rec = self._tasks.get(tid)
            if rec is not None and rec.change_id is not None:
                self._new_waits.add(rec.change_id)

    def _take_new_waits(self) -> set[int] | None:
        """_take_new_waits returns the changes to check for cycles (None: all) and starts afresh."""
        waits, self._new_waits = self._new_waits, set()
        return waits

    def _waiting_changes(self) -> set[int]:
        if self._waiting is None:
            self._waiting = set(self._store.changes_with_waiting_tasks())
        return self._waiting

    def _unready(self, crec: ChangeRec) -> int:
        counts = self._counts(crec)
        return sum(counts.values()) - sum(counts.get(s, 0) for s in _READY)

    def _mark_ready(self, crec: ChangeRec) -> None:
        if crec.ready_time is None:
            crec.ready_time = self._now()
            self._dirty_change(crec)
            self._became_ready.append(crec.id)
            self._counts(crec)  # loads the unclean count too
            if crec.unclean <= 0 and not crec.clean:
                crec.clean = True  # nothing to clean (no tasks, as snapd's IsClean: every task is clean)

    def _notify_change(self, crec: ChangeRec) -> None:
        new = self._change_status(crec)
        old = crec.observed
        if new is not old:
            crec.observed = new
            if old is not None:
                self._fire(self._change_hooks, self._change_handle(crec), old, new)

    def _fire(self, hooks: dict[int, Any], obj: Any, old: Status, new: Status) -> None:
        for hid, fn in list(hooks.items()):
            if fn(obj, old, new) is True:
                hooks.pop(hid, None)

    def _change_status(self, crec: ChangeRec) -> Status:
        """_change_status computes a change's status from its tasks (snapd's rules)."""
        if crec.explicit is not None:
            return crec.explicit
        counts = self._counts(crec)
        if not any(counts.values()):
            return Status.HOLD
        if counts.get(Status.WAIT, 0) > 0:
            from .change import is_change_waiting

            if is_change_waiting(self, crec):
                return Status.WAIT
        for status in STATUS_ORDER:
            if counts.get(status, 0) > 0:
                return status
        raise RuntimeError(f"internal error: cannot compute the status of change {crec.id} from {counts}")

    def _add_log(self, rec: TaskRec, level: str, message: str) -> None:
        lines = self._log_lines(rec)
        when = self._now()
        line = (_time.to_text(when), level, message)
        lines.append(line)
        del lines[:-LOG_KEEP]
        self._new_log.add((rec.id, next(self._log_seq), *line))
        log.debug("task %s: %s %s", rec.id, level, message)

    def _next_id(self, name: str) -> int:
        self._last[name] = self._last.get(name, 0) + 1
        self._dirty_seqs.add(name)
        return self._last[name]
