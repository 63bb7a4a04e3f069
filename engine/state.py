# SPDX-License-Identifier: GPL-3.0-or-later
"""State: the lock, and the public API over a unit of work and a store.

One State owns one Store (its database link, engine.store) and one
UnitOfWork (its cache of records and what it writes, engine.unitofwork).
Taking the lock (``with st:``) starts a unit of work; releasing the
outermost lock writes everything changed in it in one transaction (snapd's
checkpoint). Changes and tasks are loaded only when asked for, so history
does not weigh on opening or on ensure passes. See docs/concepts.md for the
locking and transaction rules.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, MutableSet
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import _time
from ._records import TaskRec
from ._values import INT64_MAX, MISSING, check_key, check_name, clean_text, dump_value
from .change import Change, change_handle
from .db import DatabaseOptions
from .errors import (
    DatabaseBusyError,
    DatabaseError,
    EngineError,
    NoStateError,
    NotFoundError,
    ReadOnlyStateError,
)
from .prune import prune as _prune
from .session import Session
from .statebooks import StateBooks
from .statemaking import StateMaking
from .statenotices import StateNotices, call_soon
from .store import Store, open_store
from .store.location import Location, locate
from .task import Task, task_handle
from .unitofwork import UnitOfWork

__all__ = ["MISSING", "State"]

log = logging.getLogger("engine.state")

#: How often a State on a shared store checks the blockers counts (seconds).
RECHECK_INTERVAL = 5.0
#: How long _fence waits for a unit of work in progress before it defers
#: releasing the writer lock to that unit's end.
FENCE_WAIT = 1.0


class State(StateMaking, StateBooks, StateNotices):
    """State is the persistent state of the engine, guarded by one lock."""

    def __init__(self, store: Store, clock: _time.Clock, read_only: bool = False) -> None:
        self._store = store
        self._target = store.target  # the database as messages name it, on one line
        self._shown = store.target  # State.path: set by open from the Location
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0
        self._closed = False
        self._pid = os.getpid()
        # Why this State may not write (None: it may); see _refuse_writes.
        self._refusal: str | None = None
        self._release_at_unlock = False
        self._uow = UnitOfWork(self, store, clock, self._check, self._held, self._locked_async,
                               task_class=Task, change_class=Change, read_only=read_only)
        self._session = Session(self, self._uow, self._fence)
        self._cache: dict[Any, Any] = {}
        if read_only:
            self._refuse_writes("it was opened read-only")
        self._hook_ids = itertools.count(1)
        self._ensure_hook: Callable[[float], None] | None = None
        self._recheck_at = 0.0
        # Notice waiters: a commit that added or repeated notices bumps the sequence and wakes them.
        self._notice_cond = threading.Condition()
        self._notice_seq = 0
        self._notice_waiters: MutableSet[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._listener: threading.Thread | None = None
        self._listen_stop = threading.Event()
        store.check_read()  # ends what opening read (a transaction, on PostgreSQL)

    # -- opening and closing ------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | Location | None = None, *, url: str | None = None,
             clock: _time.Clock | None = None,
             read_only: bool = False, synchronous: str = "FULL", busy_timeout: float = 5.0,
             busy_budget: float = 120.0) -> State:
        """open opens (creating or upgrading) the state database at path or url.

        path is a file name and nothing else (never read as a URL: "st?ate.db"
        is that file); url is a SQLAlchemy URL (sqlite:///..., or
        postgresql+psycopg://...). Both are parsed once, into the Location
        every layer uses (engine.store.location); path may be that Location
        already (an Overlord's, parsed once). path None and url None
        give a private in-memory database. read_only
        opens an existing database without ever writing to it (no creation,
        no migration, no checkpoint; a commit raises ReadOnlyStateError) and
        without the writer lock, so it works beside a running writer and for
        a user who may only read the file. A writer is refused with
        DatabaseInUseError while another writer holds the file, in any
        process and through any path; a writer whose path comes to name
        another file (renamed over, deleted, moved away) refuses that commit
        and every later one with DatabaseReplacedError. synchronous is SQLite's durability
        mode: FULL (default) survives power loss, NORMAL may lose the last
        commits on power loss.
        """
        if isinstance(path, Location):  # parsed already (an Overlord's)
            if url is not None:
                raise ValueError("cannot open state: give path or url, not both")
            where = path
        else:
            where = locate(path, url)  # the one place a path or URL is parsed
        options = DatabaseOptions(synchronous=synchronous, busy_timeout=busy_timeout, busy_budget=busy_budget)
        store = open_store(where, options, read_only=read_only)
        try:
            state = cls(store, clock or _time.system_clock, read_only)
            state._shown = where.shown
        except BaseException:
            store.close(tidy=False)
            raise
        log.debug("opened state database %s%s", store.target, " read-only" if read_only else "")
        return state

    def close(self) -> None:
        """close releases the database; the State cannot be used afterwards.

        A writer's clean close checkpoints the write-ahead log into the database file and truncates it,
        so that the file alone holds every commit (a copy of it misses nothing).
        """
        if self._pid != os.getpid():
            # A State inherited through fork: its connection and lock are the parent's.
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            if self._uow.timings.aside(self._uow.pending):
                log.warning("closing state database %s with uncommitted changes; they are lost", self._target)
            elif self._refusal is None:
                self._uow.timings.write_now(self._uow.commit, self._target)  # the task runs waiting for a batch
            self._closed = True
            self._listen_stop.set()
            self._store.close(tidy=self._refusal is None)
        self._notices_woken()  # waiters return (nothing more can come)

    def _refuse_writes(self, reason: str) -> None:
        """_refuse_writes makes every later commit raise ReadOnlyStateError (and nothing is written)."""
        self._refusal = reason
        self._store.refusal = f"cannot write state database {self._target}: {reason}"
        self._uow.timings.runs.drop()  # the task runs waiting for a batch can never be written now

    def _fence(self, reason: str, wait: float = FENCE_WAIT) -> None:
        """_fence stops this State writing for good and lets another writer take the database.

        From the moment it is called, no commit of this State reaches the database (a late handler's
        "with task.state:" raises ReadOnlyStateError); reads keep working. What an earlier commit kept
        (a busy database) is written first; then the log is checkpointed and the writer lock released.
        If a thread is inside a unit of work and does not leave it within wait seconds, the lock is
        released when it does, so that no write can land after another writer started.
        """
        if self._refusal is not None:
            return
        self._refusal = reason  # from now on lock() and unlock() refuse to commit
        if not self._lock.acquire(timeout=wait):
            log.warning("a thread holds the lock of state database %s; its writer lock is released when it "
                        "lets go", self._target)
            self._release_at_unlock = True
            self._refuse_writes(reason)
            return
        try:
            if self._depth > 0:  # called inside a unit of work of this thread: release at its end
                self._release_at_unlock = True
                self._refuse_writes(reason)
                return
            self._uow.timings.write_all()  # the task runs waiting for a batch too (engine.timings)
            if not self._closed and self._uow.pending() and self._store.replaced() is None:  # else said once
                self._refusal = None
                try:
                    self._uow.commit()
                except EngineError as e:
                    log.error("cannot write what was kept for state database %s before stopping: %s",
                              self._target, e)
                    self._uow.rollback()
                finally:
                    self._refusal = reason
            self._refuse_writes(reason)
            if not self._closed:
                self._store.fence(tidy=True)
        finally:
            self._lock.release()

    @property
    def path(self) -> str:
        """path is the database file as it was named (":memory:" for a private database)."""
        return self._shown

    @property
    def read_only(self) -> bool:
        """read_only says whether commits are refused (opened read-only, or its overlord stopped)."""
        return self._refusal is not None

    # -- locking and transactions ----------------------------------------------

    def lock(self, begin: bool = False) -> None:
        """lock takes the state lock; the outermost lock starts a unit of work (begin: and its write, _refresh)."""
        if self._pid != os.getpid():
            # Checked before taking the lock: in a forked child it may be held for good by a dead thread.
            raise EngineError(f"cannot use state database {self._target} in process {os.getpid()}: its State "
                              f"was opened by process {self._pid} (a State does not survive fork; "
                              "open a new one)")
        self._lock.acquire()
        if self._depth == 0:
            if self._closed:
                self._lock.release()
                raise RuntimeError("cannot use a closed State")
            self._owner = threading.get_ident()
            ready: list[int] = []
            uow = self._uow
            try:
                pending = not self._refresh(begin) and uow.pending()  # (begun: nothing was kept)
                if pending and self._refusal is not None:
                    # Kept from a commit refused when the State was fenced during it: they can never be written.
                    log.warning("dropping changes that state database %s can no longer write: %s",
                                self._target, self._refusal)
                    uow.rollback()
                elif pending:
                    # Changes kept from a commit that failed (the database was busy) are written before a new
                    # unit of work begins, so that its rollback cannot take them along.
                    ready = uow.commit()
            except BaseException:
                self._owner = None
                self._lock.release()
                raise
            woken, uow.woken = uow.woken, False
            noticed, uow.notices_woken = uow.notices_woken, False
            if ready or woken or noticed:  # (most units of work wake nothing)
                self._wake(ready, woken, noticed)
        self._depth += 1

    def unlock(self) -> None:
        """unlock releases the lock; the outermost unlock commits in one transaction."""
        self._check()
        if self._depth > 1:
            self._depth -= 1
            self._lock.release()
            return
        ready: list[int] = []
        woken = noticed = False
        try:
            ready = self._commit_or_refuse()
            try:
                self._store.check_read()
            except DatabaseBusyError:
                self._uow.forget()
                raise
        finally:
            woken, self._uow.woken = self._uow.woken, False
            noticed, self._uow.notices_woken = self._uow.notices_woken, False
            self._depth = 0
            self._owner = None
            if self._release_at_unlock:
                self._release_fenced()
            self._lock.release()
        if ready or woken or noticed:
            self._wake(ready, woken, noticed)

    def _commit_or_refuse(self) -> list[int]:
        if self._refusal is None:
            return self._uow.commit()
        if not self._uow.pending():
            return []
        self._uow.rollback()
        raise ReadOnlyStateError(f"cannot commit to state database {self._target}: {self._refusal}; "
                                 "nothing of this unit of work was written")

    def _release_fenced(self) -> None:
        if self._release_at_unlock:
            self._release_at_unlock = False
            self._store.fence(tidy=False)

    def _wake(self, ready: list[int], woken: bool = False, noticed: bool = False) -> None:
        """_wake tells waiters their changes are ready or notices came, and the work hook that tasks may run."""
        if not (ready or woken or noticed):
            return  # (most units of work: twice a step of a chain)
        for cid in ready:
            event = self._uow.waiters.pop(cid, None)
            if event is not None:
                event.set()
            for loop, aevent in self._uow.async_waiters.pop(cid, ()):
                call_soon(loop, aevent.set)
        if noticed:
            self._notices_woken()
        hook = self._uow.work_hook
        if woken and hook is not None:
            hook()

    def __enter__(self) -> State:
        self.lock()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.unlock()
            return
        self._check()
        try:
            self._uow.rollback()
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._release_fenced()
            self._lock.release()

    def _check(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot access state without holding its lock (use 'with state:')")

    def _held(self) -> bool:
        return self._owner == threading.get_ident()

    def _refresh(self, begin: bool = False) -> bool:
        """_refresh notes another connection's writes; begin: it begins the write transaction if nothing is kept."""
        began = False
        if self._store.shared:
            # Other hosts may have written anything: every unit reads afresh, its rows locked as loaded (postgresql).
            self._store.refresh()
            uow = self._uow
            if not uow.pending():
                uow.forget(routine=True)
            now = time.monotonic()
            if now >= self._recheck_at:  # blockers counts that two hosts raced on are repaired
                self._recheck_at = now + RECHECK_INTERVAL
                uow.blockers_suspect = True
            return False
        if begin and self._refusal is None and not self._uow.pending():
            try:  # data_version is then read in it, with no read transaction (WAL locks) of its own
                self._store.begin_write()
                began = True
            except DatabaseError as e:  # busy past its budget: raised (retried as a busy commit); else: later
                if isinstance(e, DatabaseBusyError):
                    raise
        try:
            if self._store.refresh():
                self._uow.written_outside(kept=not began)  # another connection (a sqlite3 shell) committed
        except BaseException:
            if began:
                self._store.rollback()  # (the lock is let go: not its write transaction with it)
            raise
        return began

    def _now(self) -> datetime:
        """_now is the State clock's time (the Overlord's start of operation)."""
        return self._uow.now()

    # -- the public API ---------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        """get returns the JSON value stored under key (NoStateError if missing)."""
        self._check()
        check_key(key, "the state")
        text = self._uow.value(key)
        if text is None:
            if default is MISSING:
                raise NoStateError(key)
            return default
        return json.loads(text)

    def set(self, key: str, value: Any) -> None:
        """set stores a JSON-serialisable value under key; None deletes the key."""
        self._check()
        check_key(key, "the state")
        self._uow.set_value(key, None if value is None else dump_value(key, value, "the state"))

    def has(self, key: str) -> bool:
        """has returns whether a value is stored under key."""
        return self.get(key, None) is not None

    def cache(self, key: Any, value: Any) -> None:
        """cache keeps a process-local value under key (never persisted); None removes it."""
        self._check()
        if value is None:
            self._cache.pop(key, None)
        else:
            self._cache[key] = value

    def cached(self, key: Any) -> Any:
        """cached returns the process-local value under key, or None."""
        self._check()
        return self._cache.get(key)

    def changes(self) -> list[Change]:
        """changes returns every change in the database, oldest first.

        A change whose row cannot be read (edited by hand) is left out and logged.
        """
        self._check()
        uow = self._uow
        uow.flush()
        records = uow.records
        ids = records.readable("change", self._store.change_ids())
        return [change_handle(uow, records.changes[cid]) for cid in ids]

    def change(self, id: str) -> Change | None:
        """change returns the change with the given id, or None."""
        self._check()
        return self._change_by_id(_parse_id(id))

    def new_task(self, kind: str, summary: str) -> Task:
        """new_task creates a task; add it to a change for it to run.

        kind and summary follow the rules of new_change.
        """
        self._check()
        check_name(kind, "task kind")
        summary = clean_text(summary, "task summary")
        uow = self._uow
        rec = TaskRec(uow.next_id("task"), kind, summary, uow.now())
        uow.add_task(rec)
        return task_handle(uow, rec)

    def tasks(self) -> list[Task]:
        """tasks returns every task that belongs to a change (one whose row cannot be read is left out)."""
        self._check()
        uow = self._uow
        uow.flush()
        records = uow.records
        return [task_handle(uow, records.tasks[tid]) for tid in records.readable("task", self._store.linked_task_ids())]

    def task(self, id: str) -> Task | None:
        """task returns the task with the given id, or None (also for a task in no change)."""
        self._check()
        tid = _parse_id(id)
        if tid is None:
            return None
        try:
            rec = self._uow.records.trec(tid)
        except NotFoundError:
            return None
        return task_handle(self._uow, rec) if rec.change_id is not None else None

    def task_count(self) -> int:
        """task_count counts every task, whether in a change or not."""
        self._check()
        self._uow.flush()
        return self._store.task_count()

    def new_lane(self) -> int:
        """new_lane returns a new lane number (lanes start at 1)."""
        self._check()
        return self._uow.next_id("lane")

    def ensure_before(self, seconds: float | timedelta) -> None:
        """ensure_before asks for the next ensure pass within the given delay."""
        self._check()
        delay = max(0.0, _time.seconds(seconds, "ensure_before delay", clamp=True))
        hook = self._ensure_hook
        if hook is not None:
            hook(delay)

    def set_ensure_before_hook(self, hook: Callable[[float], None] | None) -> Callable[[float], None] | None:
        """set_ensure_before_hook routes ensure_before requests (the Overlord sets it); it returns the one before."""
        previous, self._ensure_hook = self._ensure_hook, hook
        return previous

    def set_work_hook(self, hook: Callable[[], None] | None) -> None:
        """set_work_hook calls hook(), without the lock, after each commit that may have made tasks runnable.

        The Overlord sets it to wake its loop (a change committed while it runs starts at once).
        """
        self._uow.work_hook = hook

    def prune(self, start_of_operation: datetime, prune_wait: float | timedelta,
              abort_wait: float | timedelta, max_ready_changes: int) -> None:
        """prune deletes old ready changes and orphan tasks, and aborts stale changes (snapd's rules)."""
        self._check()
        _prune(self._uow, _time.utc(start_of_operation, "start_of_operation"),
               _time.seconds(prune_wait, "prune_wait"), _time.seconds(abort_wait, "abort_wait"),
               max_ready_changes)


def _parse_id(id: str | int) -> int | None:
    if isinstance(id, int) and not isinstance(id, bool):
        return id if 0 < id <= INT64_MAX else None
    if isinstance(id, str) and id.isdigit() and id.isascii() and len(id) <= 19:
        n = int(id)
        return n if 0 < n <= INT64_MAX else None
    return None
