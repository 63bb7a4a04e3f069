# SPDX-License-Identifier: GPL-3.0-or-later
"""UnitOfWork: the State's cache of records, and what it writes at commit.

Records (engine._records) are loaded on demand through the Store; every
change to one is noted in a Pending set; the State's outermost unlock
flushes them into one write transaction and commits. The State owns one
UnitOfWork (and its lock); the UnitOfWork is the engine's internal
interface to the State: Change, Task, the TaskRunner, prune, warnings and
manager tables use its methods, never the State's private members.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import LOG_KEEP, ChangeRec, Pending, TaskRec
from .cache import RecordCache
from .changeset import ChangeSet
from .errors import DatabaseError, DatabaseFullError, EngineError, keeps_work
from .keys import KeyBook
from .notice import NoticeBook
from .shared import settle_changes
from .status import Status
from .statusrules import computed_status, move_task
from .tables import ManagerTables
from .timings import TimingBook
from .uowadds import RecordAdds
from .uowrows import FlushRows
from .warning import WarningBook

if TYPE_CHECKING:
    import threading

    from .store import Store

log = logging.getLogger("engine.state")
_DONE = Status.DONE  # (a name: Enum's class attribute lookup costs some 80 ns)


#: A status hook: fn(handle, old, new), the handle a Task or a Change (engine.statebooks types them for users).
StatusHook = Callable[[Any, Status, Status], Any]
#: A handle class: Task or Change, made as cls(unit of work, id); the State hands them in (this module sits below).
HandleClass = Callable[[Any, int], Any]


class UnitOfWork(RecordAdds, FlushRows):
    """UnitOfWork caches records and writes what changed, in one transaction per commit."""

    def __init__(self, state: Any, store: Store, clock: _time.Clock, check: Callable[[], None],
                 held: Callable[[], bool], locked_async: Callable[[Callable[[], Any]], Awaitable[Any]], *,
                 task_class: HandleClass, change_class: HandleClass, read_only: bool = False) -> None:
        #: state is the State this unit of work belongs to (what handles hand to users; not named here).
        self.state = state
        self._task_class, self._change_class = task_class, change_class  # engine.task.Task, engine.change.Change
        self.store = store
        self.target = store.target
        self._clock = clock
        #: check raises RuntimeError unless this thread holds the state lock; held says whether it does.
        self.check = check
        self.held = held
        #: locked_async calls fn under the state lock without blocking the event loop (Change.wait_ready_async).
        self.locked_async = locked_async
        self._relaxed = False
        #: read_only: a reader's; it hands out no id, so it says nothing of the sequences.
        self.read_only = read_only
        self._last = store.sequences(quiet=read_only)
        #: records are the loaded rows, by id (the identity map, engine.cache): Change, Task, the runner
        #: and the status rules look records up there.
        self.records = RecordCache(store)
        self.values: dict[str, str | None] = {}
        self.notices = NoticeBook(self)
        self.keys = KeyBook(self)  # idempotency and affected keys (engine.keys)
        self.warnings = WarningBook(self)
        #: notices_woken says that the last commit added or repeated notices (the State wakes its waiters).
        self.notices_woken = False
        #: Per change, the asyncio waiters (loop, event) set when it becomes ready (Change.wait_ready_async).
        self.async_waiters: dict[int, list[tuple[Any, Any]]] = {}
        #: tables: the rows of managers' own tables (engine.tables), written in this unit's transaction.
        self.tables = ManagerTables(self)
        #: timings: task runs and ensure passes, written by whatever commits next (engine.timings).
        self.timings = TimingBook(self)
        # The books' plain Pending sets (made once): a commit forgets what each wrote (Pending.committed).
        self._plain_books = (*self.warnings.pendings(), *self.notices.pendings(), *self.keys.pendings())
        #: changeset notes what must be written (new, dirty, deleted records) and what the commit wakes.
        self.changeset = ChangeSet()
        self.blockers_suspect = True  # checked by the runner's first pass
        #: cache_stale: another connection wrote while this unit kept writes; its records' edges may be stale
        #: until the cache is dropped (forget).
        self.cache_stale = False
        self.woken = False
        self.work_hook: Callable[[], None] | None = None
        #: done_hook, when set (a runner that hands on, engine.handon), is called at a commit that moved tasks to Done.
        self.done_hook: Callable[[], None] | None = None
        #: touch_hook, likewise, at a commit that touched changes (statuses to settle) and moved none to Done.
        self.touch_hook: Callable[[], None] | None = None
        #: ready_hook, likewise, as a change becomes ready in this unit: it may mark its tasks clean at once
        #: (engine.runnerguards, RunnerGuards._clean_at_ready); it returns whether it did.
        self.ready_hook: Callable[[ChangeRec], bool] | None = None
        #: statuses_held: this commit leaves the statuses of the changes it touched to the next unit that writes
        #: (a self-finishing handler's, to its outcome: engine.handon); _held are those changes.
        self.statuses_held = False
        self._held: dict[int, None] = {}
        # Changes whose tasks got new edges (the runner looks for cycles there; None: everywhere).
        self.new_waits: set[int] | None = None
        # Tasks moved into Do or Undo (engine.statusrules.revive): a circle through them may have come alive.
        self.revived: set[int] = set()
        # Changes with tasks in Wait: the Wait rule may follow edges into other changes, so their status is
        # recomputed whenever any task moves.
        self.waiting_known: set[int] | None = None
        self._log_seq = itertools.count()
        # Bumped whenever the cache is dropped (a rollback, a write by another connection): what was learnt
        # from the rows may have changed.
        self.generation = 0
        # Shared stores: the changes whose row this unit locked before changing what people set on them.
        self._owned: set[int] = set()
        self.task_hooks: dict[int, StatusHook] = {}
        self.change_hooks: dict[int, StatusHook] = {}
        #: hook_failures, when a list (while the runner records outcomes), collects what the status
        #: hooks raise instead of letting it out: (hook, task or change, exception).
        self.hook_failures: list[tuple[Any, Any, BaseException]] | None = None
        #: Per change, the event set when it becomes ready (Change.wait_ready).
        self.waiters: dict[int, threading.Event] = {}

    def pending(self) -> bool:
        """pending says whether the unit of work has anything to write (task runs' timings once due included)."""
        return (self.changeset.pending() or self.store.in_write or self._books_todo() or self.tables.pending
                or self.timings.due())

    def _books_todo(self) -> bool:
        """_books_todo says whether warnings, notices or keys are to be written (their pending, read directly:
        this runs several times a step of a chain)."""
        wn, nt, ks = self.warnings, self.notices, self.keys
        return bool(wn.dirty.todo or wn.deleted.todo or nt.dirty.todo or nt.deleted.todo or ks.keys.todo
                    or ks.affects.todo)

    def all_pending(self) -> tuple[Pending[Any], ...]:
        return (*self.changeset.pendings(), *self._book_pendings())

    def _book_pendings(self) -> tuple[Pending[Any], ...]:
        return (*self.warnings.pendings(), *self.tables.pendings(), *self.notices.pendings(), *self.keys.pendings(),
                *self.timings.pendings())

    def forget(self, routine: bool = False) -> None:
        """forget drops every record (they reload on demand).

        routine is the drop at the start of each unit of work on a shared
        store: what was learnt of damaged rows still holds (generation stays).
        """
        if not routine:
            self.generation += 1
        self.cache_stale = False
        self.waiting_known = self.keys.none_queued = None
        self.records.clear()
        self.values.clear()
        self.warnings.forget()
        self.notices.forget()
        self.tables.forget()

    def written_outside(self, kept: bool = True) -> None:
        """written_outside forgets the cache (unless it holds what is to be written) after another connection's commit.

        The blockers counts are checked again, cycles looked for everywhere
        (an edge may have come from outside), and a cache kept for its
        pending writes is no longer taken for the database's edges. kept
        False: nothing is kept (only the write transaction just begun).
        """
        self.blockers_suspect = True
        self.new_waits = None
        if kept and self.pending():
            self.cache_stale = True  # dropped once they are committed
        else:
            self.forget()
            self.sync_sequences()

    def rollback(self) -> None:
        """rollback abandons the unit of work; records reload from the database."""
        self._relaxed = False
        self.store.rollback()
        for pending in self.all_pending():
            pending.clear()
        self.changeset.clear()
        self._owned.clear()
        self.notices.repeated = False
        self.forget()
        self.sync_sequences()

    def sync_sequences(self) -> None:
        """sync_sequences reads the id counters again (ids only grow: those handed out in vain stay used)."""
        if self.store.shared:
            return  # ids come from the database as they are handed out
        stored = self.store.sequences(quiet=self.read_only)
        self._last = {k: max(v, self._last.get(k, 0)) for k, v in stored.items()}

    def flush(self, statuses: bool = True) -> None:
        """flush writes what changed into the open write transaction.

        statuses False leaves the changes' rows and statuses to the next
        flush: a runner handing tasks on in this unit of work (the change
        never shows the status between the two).
        """
        if self.pending():
            self._write(statuses)

    def _write(self, statuses: bool) -> None:
        store = self.store
        store.begin_write(relaxed=self._relaxed)
        if self.changeset.pending():
            store.write(self._rows(statuses))
        if self._books_todo():
            self.warnings.flush(store)
            self.notices.flush(store)
            self.keys.flush(store)
        self.tables.flush(store)
        self.timings.flush(store)

    def relax_commit(self) -> None:
        """relax_commit lets this unit of work commit without its own sync.

        Only for writes the engine derives again after a crash (claiming
        tasks): it becomes durable with the next synced commit, and a power
        cut can only lose it together with every commit after it.
        """
        self._relaxed = True

    def commit(self) -> list[int]:
        """commit flushes and commits; it returns the changes that became ready.

        A commit refused because another process holds the write lock, or
        because the disk is full, keeps the unit of work in memory for the
        next commit: nothing is lost. Any other failure (a constraint, an
        encoding error, a driver error) rolls the unit back, reloads the
        records from the database and raises once: the next unit of work
        starts clean, so one bad unit never wedges the State.
        """
        if not self.pending() and not self.timings.write_if_due():  # (an idle commit writes a batch due)
            self._relaxed = False
            return []
        if self.done_hook is not None and _DONE in self.changeset.unblocked:
            self.done_hook()  # (it may take over the wake for a handler's own task: engine.handon)
        elif self.touch_hook is not None and self.changeset.touched.todo:
            self.touch_hook()  # (it may leave a running handler's change to its outcome: engine.handon)
        if self.statuses_held or self._held:
            self._hold_statuses()
        try:
            self._write(True)  # (pending, as asked above)
            if self.store.shared:
                ids = sorted({*self.changeset.touched.take(), *self.changeset.dirty_changes.take()})
                owned, self._owned = self._owned, set()
                self.changeset.became_ready = settle_changes(self, ids, owned) if ids else []
                self.notices.flush(self.store)  # the change-update notices settling added
            if self.notices.repeated:
                self.store.notify_notices = True  # other hosts' notice waiters wake (shared stores)
            if self.changeset.runnable or self.changeset.unblocked:
                self.store.notify = True  # other hosts' loops wake (shared stores)
            self.store.commit()
        except BaseException as e:
            self._relaxed = False
            if not keeps_work(e):
                self.rollback()
                if isinstance(e, EngineError) or not isinstance(e, Exception):
                    raise
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                raise DatabaseError(f"cannot commit to state database {self.target}: {reason}; "
                                    "the unit of work was rolled back") from e
            # Keep everything in memory for the next commit: nothing is lost.
            self._keep()
            if isinstance(e, DatabaseFullError) and not e.kept:
                raise DatabaseFullError(f"{e}; the changes are kept in memory and written by the next "
                                        "commit once there is space", kept=True) from e
            raise
        self._relaxed = False
        self.changeset.committed(self.records.tasks)
        for pending in self._plain_books:  # (those with nothing written are left alone: most, a step of a chain)
            if pending.done:
                pending.done.clear()
        if self.tables.books:  # (a State with no manager tables: a chain's every step)
            for pending in self.tables.pendings():
                pending.committed()
        for pending in self.timings.pendings():
            pending.committed()
        self.notices.committed()
        if self.notices.repeated:
            self.notices.repeated = False
            self.notices_woken = True
        if self.changeset.runnable or self.changeset.unblocked:
            self.changeset.runnable = False
            self.changeset.unblocked.clear()
            if self.work_hook is not None:
                self.woken = True
        ready, self.changeset.became_ready = self.changeset.became_ready, []
        if self.cache_stale:  # kept over another connection's write (written_outside): read afresh now
            self.forget()
            self.sync_sequences()
        else:
            self.records.evict()
        return ready

    def _hold_statuses(self) -> None:
        """_hold_statuses leaves the touched changes' statuses to the next commit that writes, or settles those held."""
        touched = self.changeset.touched.todo
        if self.statuses_held:
            self.statuses_held = False
            self._held.update(touched)
            touched.clear()
        else:
            touched.update(self._held)
            self._held.clear()

    def _keep(self) -> None:
        """_keep abandons the write transaction and keeps the whole unit of work in memory, to write again."""
        self.store.rollback()
        self.changeset.written.clear()
        for cid in itertools.chain(self.changeset.touched.done, self.changeset.dirty_changes.done):
            rec = self.records.changes.get(cid)
            if rec is not None and rec.db_status is not None:
                rec.db_status = Status.DEFAULT  # unknown: rewrite it
        for pending in self.all_pending():
            pending.failed()
        for cid in self.changeset.new_changes.todo:
            if cid in self.records.changes:
                self.records.changes[cid].db_status = None

    def flush_or_keep(self) -> bool:
        """flush_or_keep is flush(statuses=False) for a runner handing tasks on in this unit of work.

        If it fails (a busy or full database, anything), nothing of the unit
        is written now: it is kept in memory, whole, for the commit, which
        meets the same refusal and keeps it or rolls it back as ever. It
        returns whether the flush was done.
        """
        try:
            self.flush(statuses=False)
            return True
        except Exception as e:
            log.debug("cannot write to state database %s before handing tasks on: %s", self.target, e)
            self._keep()
            return False

    def begin_or_keep(self) -> bool:
        """begin_or_keep opens the write transaction for a runner handing tasks on without a flush first.

        As flush_or_keep: refused (a busy database, a replaced file), the
        unit is kept whole for the commit, and it returns False.
        """
        try:
            self.store.begin_write(relaxed=self._relaxed)
            return True
        except Exception as e:
            log.debug("cannot write to state database %s before handing tasks on: %s", self.target, e)
            self._keep()
            return False

    def task_handle(self, rec: TaskRec) -> Any:
        """task_handle is the public Task of a record (engine.task.task_handle types it)."""
        handle = rec.handle
        if handle is None:
            handle = rec.handle = self._task_class(self, rec.id)
        return handle

    def change_handle(self, rec: ChangeRec) -> Any:
        """change_handle is the public Change of a record (engine.change.change_handle types it)."""
        handle = rec.handle
        if handle is None:
            handle = rec.handle = self._change_class(self, rec.id)
        return handle

    def check_blockers(self) -> None:
        """check_blockers repairs blockers counts after the database changed behind our back."""
        if not self.blockers_suspect:
            return
        self.flush()
        stale = self.store.stale_blockers()
        if stale:
            log.info("recounting what %d tasks wait for in %s", len(stale), self.target)
            self.store.begin_write()
            self.store.recount_blockers(stale)
        self.blockers_suspect = False

    def has_unclean_ready(self) -> bool:
        """has_unclean_ready says whether a ready change still has tasks to clean (lock held)."""
        self.flush()
        return bool(self.store.unclean_changes(limit=1))

    # -- changing records -----------------------------------------------------

    def now(self) -> datetime:
        clock = self._clock
        if clock is _time.system_clock:  # (three times a step of a chain: its aware UTC time as is)
            return datetime.now(UTC)
        return _time.utc(clock(), "the state clock's time")

    def dirty_task(self, rec: TaskRec) -> None:
        if rec.id not in self.changeset.new_tasks.todo:
            self.changeset.dirty_tasks.todo[rec.id] = None  # (Pending.add, inline: several times a step)

    def dirty_change(self, rec: ChangeRec) -> None:
        if rec.id not in self.changeset.new_changes.todo:
            self.changeset.dirty_changes.add(rec.id)

    def own_change(self, rec: ChangeRec) -> None:
        """own_change locks a change's row (shared stores) before what people set on it is read or changed.

        The record then holds the row as committed now; at commit this unit
        of work writes its data and explicit status (engine.shared).
        """
        if not self.store.shared or rec.id in self._owned:
            return
        rows = self.store.locked_change_rows([rec.id])
        if rows:  # none: a change of this unit, not written yet
            fresh = ChangeRec.from_row(rows[0])
            rec.data, rec.explicit = fresh.data, fresh.explicit
        self._owned.add(rec.id)

    def set_task_status(self, rec: TaskRec, new: Status) -> None:
        """set_task_status moves a task to new, keeping the aggregates of its change (engine.statusrules)."""
        move_task(self, rec, new)

    def note_waits(self, tids: Iterable[int]) -> None:
        """note_waits records the changes of tasks that got new edges, for the runner's cycle check."""
        if self.new_waits is None:
            return
        for tid in tids:
            rec = self.records.tasks.get(tid)
            if rec is not None and rec.change_id is not None:
                self.new_waits.add(rec.change_id)

    def take_new_waits(self) -> set[int] | None:
        """take_new_waits returns the changes to check for cycles (None: all) and starts afresh."""
        waits, self.new_waits = self.new_waits, set()
        return waits

    def waiting_changes(self) -> set[int]:
        """waiting_changes are the changes with tasks in Wait (loaded once per cache)."""
        if self.waiting_known is None:
            self.waiting_known = set(self.store.changes_with_waiting_tasks())
        return self.waiting_known

    def change_status(self, crec: ChangeRec) -> Status:
        """change_status is the status of a change: explicit, or computed from its tasks (engine.change)."""
        return crec.explicit if crec.explicit is not None else computed_status(self, crec)

    def add_log(self, rec: TaskRec, level: str, message: str) -> None:
        lines = self.records.own_log_lines(rec)
        when = self.now()
        line = (_time.to_text(when), level, message)
        lines.append(line)
        del lines[:-LOG_KEEP]
        self.changeset.new_log.add((rec.id, next(self._log_seq), *line))
        log.debug("task %s: %s %s", rec.id, level, message)

    def next_id(self, name: str) -> int:
        """next_id hands out the next id of a sequence ("change", "task", "lane")."""
        if self.store.shared:
            return self.store.next_id(name)
        self._last[name] = self._last.get(name, 0) + 1
        self.changeset.dirty_seqs.add(name)
        return self._last[name]
