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
import contextlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import _time
from . import schedules as _schedules
from ._records import ChangeRec, TaskRec
from ._values import INT64_MAX, MISSING, check_key, check_name, clean_text, dump_value
from .db import DatabaseOptions
from .errors import (
    ChangeConflictError,
    DatabaseBusyError,
    EngineError,
    NoStateError,
    NotFoundError,
    ReadOnlyStateError,
)
from .events import emit as _emit
from .keys import KEY_RETENTION, check_change_key, check_keys
from .prune import prune as _prune
from .repair import select_changes
from .schedules import Schedule
from .session import Session
from .status import Status
from .store import Store, locate, open_store
from .unitofwork import ChangeHook, TaskHook, UnitOfWork

if TYPE_CHECKING:

    from .assertion import AssertionBook
    from .change import Change
    from .notice import Notice
    from .task import Task
    from .timings import EnsureTiming
    from .warning import StateWarning

__all__ = ["MISSING", "State"]

log = logging.getLogger("engine.state")

#: How often a State on a shared store checks the blockers counts (seconds).
RECHECK_INTERVAL = 5.0
#: How long the first notice waiter on a shared store waits for its LISTEN to be in place (seconds).
LISTEN_START = 5.0
#: How long _fence waits for a unit of work in progress before it defers
#: releasing the writer lock to that unit's end.
FENCE_WAIT = 1.0


class State:
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
                               read_only=read_only)
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
        self._notice_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._listener: threading.Thread | None = None
        self._listen_stop = threading.Event()
        store.check_read()  # ends what opening read (a transaction, on PostgreSQL)

    # -- opening and closing ------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None, *, url: str | None = None, clock: _time.Clock | None = None,
             read_only: bool = False, synchronous: str = "FULL", busy_timeout: float = 5.0,
             busy_budget: float = 120.0) -> State:
        """open opens (creating or upgrading) the state database at path or url.

        path is a file name and nothing else (never read as a URL: "st?ate.db"
        is that file); url is a SQLAlchemy URL (sqlite:///..., or
        postgresql+psycopg://...). Both are parsed once, into the Location
        every layer uses (engine.store.location). path None and url None
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

        A writer's clean close checkpoints the write-ahead log into the
        database file and truncates it, so that the file alone holds every
        commit (a copy of it misses nothing).
        """
        if self._pid != os.getpid():
            # A State inherited through fork: its connection and lock are the parent's.
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            if self._uow.pending():
                log.warning("closing state database %s with uncommitted changes; they are lost", self._target)
            self._closed = True
            self._listen_stop.set()
            self._store.close(tidy=self._refusal is None)
        self._notices_woken()  # waiters return (nothing more can come)

    def _refuse_writes(self, reason: str) -> None:
        """_refuse_writes makes every later commit raise ReadOnlyStateError (and nothing is written)."""
        self._refusal = reason
        self._store.refusal = f"cannot write state database {self._target}: {reason}"

    def _fence(self, reason: str, wait: float = FENCE_WAIT) -> None:
        """_fence stops this State writing for good and lets another writer take the database.

        From the moment it is called, no commit of this State reaches the
        database (a late handler's "with task.state:" raises
        ReadOnlyStateError); reads keep working. What an earlier commit kept
        (a busy database) is written first; then the log is checkpointed and
        the writer lock released. If a thread is inside a unit of work and
        does not leave it within wait seconds, the lock is released when it
        does, so that no write can land after another writer started.
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
            if not self._closed and self._uow.pending():
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

    def lock(self) -> None:
        """lock takes the state lock; the outermost lock starts a unit of work."""
        if self._pid != os.getpid():
            # Checked before taking the lock: in a forked child it may be held
            # for good by a thread that did not survive the fork.
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
                self._refresh()
                if uow.pending() and self._refusal is not None:
                    # Kept from a commit refused when the State was fenced
                    # during it: they can never be written.
                    log.warning("dropping changes that state database %s can no longer write: %s",
                                self._target, self._refusal)
                    uow.rollback()
                elif uow.pending():
                    # Changes kept from a commit that failed (the database was
                    # busy) are written before a new unit of work begins, so
                    # that its rollback cannot take them along.
                    ready = uow.commit()
            except BaseException:
                self._owner = None
                self._lock.release()
                raise
            woken, uow.woken = uow.woken, False
            noticed, uow.notices_woken = uow.notices_woken, False
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
            self._release_fenced()
            self._lock.release()
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
        for cid in ready:
            event = self._uow.waiters.pop(cid, None)
            if event is not None:
                event.set()
            for loop, aevent in self._uow.async_waiters.pop(cid, ()):
                _call_soon(loop, aevent.set)
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

    def _refresh(self) -> None:
        if self._store.shared:
            # Other hosts may have written anything: every unit of work reads
            # afresh, its rows locked as they are loaded (engine.store.postgresql).
            self._store.refresh()
            uow = self._uow
            if not uow.pending():
                uow.forget(routine=True)
            now = time.monotonic()
            if now >= self._recheck_at:  # blockers counts that two hosts raced on are repaired
                self._recheck_at = now + RECHECK_INTERVAL
                uow.blockers_suspect = True
            return
        # Another connection (a sqlite3 shell) committed: forget the cache.
        if self._store.refresh():
            uow = self._uow
            uow.blockers_suspect = True
            uow.new_waits = None  # an edge may have come from outside: look for cycles everywhere
            if not uow.pending():
                uow.forget()
                uow.sync_sequences()

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

    def new_change(self, kind: str, summary: str, *, key: str | None = None,
                   key_retention: float | timedelta | None = None, affects: Iterable[str] = (),
                   on_conflict: str = "refuse") -> Change:
        """new_change creates a change with no tasks.

        kind is a str of valid Unicode; summary is text for people (lone
        surrogates in it are stored escaped).

        key makes the request idempotent: while the key lasts (key_retention,
        default KEY_RETENTION, 24 hours, unless the change is pruned first) a
        new_change with the same key returns the change it made, on every
        host sharing the database (chg.is_new is False then; a key of a
        change of another kind raises ChangeConflictError).

        affects names what the change affects ("snap:hello"); when unready
        changes affect some of it, on_conflict "refuse" raises
        ChangeConflictError (nothing is made) and "queue" makes the change,
        whose tasks wait until no older unready change affects its keys.
        """
        self._check()
        check_name(kind, "change kind")
        summary = clean_text(summary, "change summary")
        if on_conflict not in ("refuse", "queue"):
            raise ValueError(f"cannot make a change: on_conflict must be 'refuse' or 'queue', not {on_conflict!r}")
        uow = self._uow
        keys = uow.keys
        affected = check_keys(affects, "affected key")
        if key is not None:
            key = check_change_key(key, "change key")
            retention = KEY_RETENTION.total_seconds() if key_retention is None else \
                _time.seconds(key_retention, "key_retention")
            found = keys.find(key)
            if found is not None:
                existing = self._keyed(found, key, kind)
                if existing is not None:
                    return existing
        queued = False
        if affected:
            conflicts = self._unready_affecting(affected)
            if conflicts and on_conflict == "refuse":
                cid = min(conflicts)
                other = uow.change_handle(uow.records.crec(cid))
                subject = conflicts[cid][0]
                raise ChangeConflictError(other.id, f"cannot start a {kind} change: change {other.id} "
                                                    f"({other.kind}) is in progress for {subject}",
                                          change_kind=other.kind, subject=subject)
            queued = bool(conflicts)
        cid = uow.next_id("change")
        if key is not None:
            other_cid = keys.claim(key, cid, retention)
            while other_cid is not None:  # another request (another host) made it first
                existing = self._keyed(other_cid, key, kind)
                if existing is not None:
                    return existing
                other_cid = keys.claim(key, cid, retention, take_over=True)
        rec = ChangeRec(cid, kind, summary, uow.now())
        uow.add_change(rec)
        keys.made.add(cid)
        keys.made.take()
        if affected:
            keys.affect(cid, affected, queued)
            if queued:
                log.info("change %s (%s) waits for changes %s affecting %s", cid, kind,
                         ", ".join(map(str, sorted(conflicts))), ", ".join(affected))
        return uow.change_handle(rec)

    def _keyed(self, cid: int, key: str, kind: str) -> Change | None:
        """_keyed is the change an idempotency key names (None: it is gone, the key may be taken over)."""
        uow = self._uow
        try:
            chg = uow.change_handle(uow.records.crec(cid))
        except NotFoundError:
            log.warning("change key %r names change %s, which is gone: a new change takes it", key, cid)
            return None
        if chg.kind != kind:
            raise ChangeConflictError(chg.id, f"cannot make a {kind} change with key {key!r}: it names change "
                                              f"{chg.id} ({chg.kind})", change_kind=chg.kind, subject=key)
        log.debug("change key %r names change %s: returning it", key, cid)
        return chg

    def change_by_key(self, key: str) -> Change | None:
        """change_by_key returns the change an unexpired idempotency key names, or None."""
        self._check()
        key = check_change_key(key, "change key")
        cid = self._uow.keys.find(key)
        if cid is None:
            return None
        try:
            return self._uow.change_handle(self._uow.records.crec(cid))
        except NotFoundError:
            return None

    def affecting(self, keys: Iterable[str] | str, *, ignore: Change | str | None = None) -> list[Change]:
        """affecting returns the unready changes that affect any of keys, oldest first (one indexed query).

        ignore leaves one change out (the one asking, say).
        """
        self._check()
        wanted = check_keys(keys, "affected key")
        uow = self._uow
        skip = str(ignore.id if ignore is not None and not isinstance(ignore, str) else ignore)
        return [uow.change_handle(uow.records.crec(cid)) for cid in sorted(self._unready_affecting(wanted))
                if str(cid) != skip]

    def select_changes(self, *, status: Status | str | Iterable[Status | str] | None = None,
                       kind: str | Iterable[str] | None = None, before: datetime | None = None,
                       older_than: float | timedelta | None = None,
                       label: tuple[str, Any] | None = None) -> list[Change]:
        """select_changes returns the changes in any of the statuses, of any of the kinds, spawned before a
        time (or older_than a duration, by the State's clock), and whose data holds label[1] under key
        label[0]; oldest first (None: any). Act on them in the same unit of work (chg.abort(), chg.retry())
        for one transaction."""
        self._check()
        when = None if before is None else _time.utc(before, "before")
        if older_than is not None:
            age = self._now() - timedelta(seconds=_time.seconds(older_than, "older_than"))
            when = age if when is None else min(when, age)
        return select_changes(self._uow, self.changes(), status=status, kind=kind, before=when, label=label)

    def _unready_affecting(self, keys: list[str]) -> dict[int, list[str]]:
        """_unready_affecting maps the unready changes affecting some of keys to those keys."""
        uow = self._uow
        out = {}
        for cid, found in uow.keys.unready_affecting(keys).items():
            try:
                ready = uow.change_handle(uow.records.crec(cid)).is_ready()
            except NotFoundError:
                continue
            if not ready:  # the stored status may lag a change moved in this unit of work
                out[cid] = found
        return out

    def changes(self) -> list[Change]:
        """changes returns every change in the database, oldest first.

        A change whose row cannot be read (edited by hand) is left out and logged.
        """
        self._check()
        uow = self._uow
        uow.flush()
        records = uow.records
        return [uow.change_handle(records.changes[cid]) for cid in records.readable("change", self._store.change_ids())]

    def change(self, id: str) -> Change | None:
        """change returns the change with the given id, or None."""
        self._check()
        cid = _parse_id(id)
        if cid is None:
            return None
        try:
            return self._uow.change_handle(self._uow.records.crec(cid))
        except NotFoundError:
            return None

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
        return uow.task_handle(rec)

    def tasks(self) -> list[Task]:
        """tasks returns every task that belongs to a change (one whose row cannot be read is left out)."""
        self._check()
        uow = self._uow
        uow.flush()
        records = uow.records
        return [uow.task_handle(records.tasks[tid]) for tid in records.readable("task", self._store.linked_task_ids())]

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
        return self._uow.task_handle(rec) if rec.change_id is not None else None

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

        The Overlord sets it to wake its loop, so that a change committed
        while the loop runs starts at once; ensure_before stays for what
        managers and the runner ask for themselves.
        """
        self._uow.work_hook = hook

    def prune(self, start_of_operation: datetime, prune_wait: float | timedelta,
              abort_wait: float | timedelta, max_ready_changes: int) -> None:
        """prune deletes old ready changes and orphan tasks, and aborts stale changes (snapd's rules)."""
        self._check()
        _prune(self._uow, _time.utc(start_of_operation, "start_of_operation"),
               _time.seconds(prune_wait, "prune_wait"), _time.seconds(abort_wait, "abort_wait"),
               max_ready_changes)

    # -- warnings -----------------------------------------------------------------

    def add_warning(self, message: str, *, repeat_after: float | timedelta | None = None,
                    expire_after: float | timedelta | None = None) -> None:
        """add_warning records a warning, or refreshes the one with the same message."""
        self._check()
        self._uow.warnings.add(message, repeat_after, expire_after)

    def warnings(self) -> list[StateWarning]:
        """warnings returns the warnings due to be shown, oldest first."""
        self._check()
        return self._uow.warnings.pending_warnings()

    def all_warnings(self) -> list[StateWarning]:
        """all_warnings returns every unexpired warning, oldest first."""
        self._check()
        return self._uow.warnings.all()

    def ensure_timings(self, manager: str | None = None) -> list[EnsureTiming]:
        """ensure_timings returns the kept slow ensure passes, oldest first (with manager: those it ran in)."""
        self._check()
        return self._uow.timings.ensure_timings(manager)

    def okay_warnings(self, t: datetime) -> int:
        """okay_warnings marks the warnings due at t as shown and returns how many."""
        self._check()
        return self._uow.warnings.okay(_time.utc(t, "okay_warnings time"))

    # -- notices ------------------------------------------------------------------

    def emit(self, key: str, data: Any = None) -> int:
        """emit records an event of key and hands data to every task waiting for it; it returns how many.

        Each waiting task gets the event once: it goes back to Do, and its
        handler's task.wait_event(key) returns data. data is JSON. The event
        and the deliveries are written by this unit of work's commit.
        """
        self._check()
        return _emit(self._session, key, data)

    # -- schedules (engine.schedules) ----------------------------------------------

    def add_schedule(self, name: str, spec: str, template: dict[str, Any], *,
                     missed: Literal["skip", "once"] = "skip") -> Schedule:
        """add_schedule makes (or replaces) a schedule: when spec is due, a change is made from template.

        spec is cron's syntax ("*/15 * * * *") or snapd's timer syntax
        ("mon-fri,10:00"); template is {"kind", "summary", "data"?, "tasks":
        [{"kind", "summary", "data"?}, ...]} (the tasks run one after the
        other); missed says what to do with the slots that passed while
        nothing ran: "skip" them or run "once". See docs/runner.md.
        """
        self._check()
        return _schedules.add(self._session, name, spec, template, missed)

    def schedules(self) -> list[Schedule]:
        """schedules lists the schedules, by name."""
        return _schedules.listing(self._session)

    def schedule(self, name: str) -> Schedule | None:
        """schedule is the schedule of that name, or None."""
        return _schedules.get(self._session, name)

    def remove_schedule(self, name: str) -> None:
        """remove_schedule deletes a schedule (NotFoundError if there is none); its changes stay."""
        _schedules.remove(self._session, name)

    def pause_schedule(self, name: str) -> Schedule:
        """pause_schedule keeps a schedule from making changes until resume_schedule."""
        return _schedules.pause(self._session, name)

    def resume_schedule(self, name: str) -> Schedule:
        """resume_schedule runs a paused schedule again from its first slot after now."""
        return _schedules.resume(self._session, name)

    def run_schedule(self, name: str) -> Change:
        """run_schedule makes the schedule's change now ("run now"); its slots stay as they were."""
        return _schedules.run_now(self._session, name)

    def add_notice(self, type: str, key: str, *, data: Mapping[str, str] | None = None,
                   repeat_after: float | timedelta | None = None,
                   expire_after: float | timedelta | None = None) -> str:
        """add_notice records an occurrence of the notice of type and key and returns the notice's id.

        An existing notice of that type and key counts one more occurrence,
        takes data as its last data, and is repeated (waiters see it again)
        unless it was repeated less than repeat_after ago (None or 0: every
        occurrence repeats). It expires expire_after (default 7 days) after
        its last occurrence. type is lowercase words joined by "-"; key is
        non-empty text of at most 256 bytes; data maps str to str. The
        notice is written, and waiters woken, by the commit.
        """
        self._check()
        return self._uow.notices.add(type, key, data, repeat_after, expire_after)

    def notices(self, after: datetime | None = None, types: Iterable[str] | None = None,
                keys: Iterable[str] | None = None) -> list[Notice]:
        """notices returns the unexpired notices repeated after a time, of the given types and keys, oldest first.

        None (or an empty list) for types or keys means any. The order is
        that of last_repeated; a client passes the last_repeated of the last
        notice it saw as after to see only what came since.
        """
        self._check()
        return self._uow.notices.matching(after, _strs(types, "types"), _strs(keys, "keys"))

    def wait_notices(self, after: datetime | None = None, types: Iterable[str] | None = None,
                     keys: Iterable[str] | None = None, timeout: float | None = None) -> list[Notice]:
        """wait_notices waits, WITHOUT the lock, until notices match, and returns them ([] after timeout).

        It returns at once when some match already; otherwise it is woken
        by the commit that adds or repeats one (on PostgreSQL, by any
        host's commit through LISTEN/NOTIFY, and it looks again at least
        every POLL_INTERVAL). timeout None waits until a notice comes or
        the State closes.
        """
        if self._held():
            raise RuntimeError("cannot wait for notices while holding the state lock")
        type_list, key_list = _strs(types, "types"), _strs(keys, "keys")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        poll = self._shared_poll()
        while True:
            with self._notice_cond:
                seq = self._notice_seq
            if self._closed:
                return []
            with self:
                found = self._uow.notices.matching(after, type_list, key_list)
            if found:
                return found
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            with self._notice_cond:
                if self._notice_seq == seq and not self._closed:
                    wait = left if poll is None else (poll if left is None else min(poll, left))
                    self._notice_cond.wait(wait)

    async def wait_notices_async(self, after: datetime | None = None, types: Iterable[str] | None = None,
                                 keys: Iterable[str] | None = None,
                                 timeout: float | None = None) -> list[Notice]:
        """wait_notices_async is wait_notices for asyncio: it awaits the commit that adds one, without a thread.

        The lock is taken only for the short look at the notices table,
        and never by blocking the event loop: when another thread holds it,
        that look runs in a worker thread (asyncio.to_thread).
        """
        type_list, key_list = _strs(types, "types"), _strs(keys, "keys")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        poll = self._shared_poll()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._notice_cond:
            self._notice_waiters.add(waiter)
        try:
            while True:
                event.clear()
                if self._closed:
                    return []
                found: list[Notice] = await self._locked_async(
                    lambda: self._uow.notices.matching(after, type_list, key_list))
                if found:
                    return found
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return []
                wait = left if poll is None else (poll if left is None else min(poll, left))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
        finally:
            with self._notice_cond:
                self._notice_waiters.discard(waiter)

    async def _locked_async(self, fn: Callable[[], Any]) -> Any:
        """_locked_async calls fn under the lock without blocking the event loop (a thread only when it is busy)."""
        if self._lock.acquire(blocking=False):
            try:
                with self:
                    return fn()
            finally:
                self._lock.release()
        return await asyncio.to_thread(self._locked_call, fn)

    def _locked_call(self, fn: Callable[[], Any]) -> Any:
        with self:
            return fn()

    def _notices_woken(self) -> None:
        """_notices_woken wakes every notice waiter (a commit added or repeated notices)."""
        with self._notice_cond:
            self._notice_seq += 1
            self._notice_cond.notify_all()
            waiters = list(self._notice_waiters)
        for loop, event in waiters:
            _call_soon(loop, event.set)

    def _shared_poll(self) -> float | None:
        """_shared_poll starts listening to other hosts' notices on a shared store; it returns the poll interval."""
        if not self._store.shared:
            return None

        listen = getattr(self._store, "listen", None)
        listening = threading.Event()
        with self._notice_cond:
            if listen is not None and self._listener is None and not self._closed:
                from .store.postgresql import NOTICE_CHANNEL

                self._listener = threading.Thread(target=listen, args=(self._notices_woken, self._listen_stop,
                                                                       NOTICE_CHANNEL, listening),
                                                  name="engine-notices", daemon=True)
                self._listener.start()
            else:
                listening.set()
        # What is committed from now on wakes this waiter (bounded: the polling covers a server away).
        listening.wait(LISTEN_START)
        return _time.POLL_INTERVAL

    # -- assertions ---------------------------------------------------------------

    @property
    def assertions(self) -> AssertionBook:
        """assertions stores and looks up signed documents by type and primary key (lock needed)."""
        return self._uow.assertions

    # -- hooks ----------------------------------------------------------------------

    def add_task_status_changed_handler(self, fn: TaskHook) -> int:
        """add_task_status_changed_handler calls fn(task, old, new) on every task status change."""
        self._check()
        hid = next(self._hook_ids)
        self._uow.task_hooks[hid] = fn
        return hid

    def remove_task_status_changed_handler(self, hid: int) -> None:
        """remove_task_status_changed_handler removes a handler added earlier."""
        self._check()
        self._uow.task_hooks.pop(hid, None)

    def add_change_status_changed_handler(self, fn: ChangeHook) -> int:
        """add_change_status_changed_handler calls fn(change, old, new) on every change status change."""
        self._check()
        hid = next(self._hook_ids)
        self._uow.change_hooks[hid] = fn
        return hid

    def remove_change_status_changed_handler(self, hid: int) -> None:
        """remove_change_status_changed_handler removes a handler added earlier."""
        self._check()
        self._uow.change_hooks.pop(hid, None)


def _strs(values: Iterable[str] | None, what: str) -> list[str] | None:
    """_strs checks a filter of notice types or keys: None or strings."""
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"cannot filter notices: {what} must be strings, not {out!r}")
    return out


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: its waiter is gone
        loop.call_soon_threadsafe(fn)


def _parse_id(id: str | int) -> int | None:
    if isinstance(id, int) and not isinstance(id, bool):
        return id if 0 < id <= INT64_MAX else None
    if isinstance(id, str) and id.isdigit() and id.isascii() and len(id) <= 19:
        n = int(id)
        return n if 0 < n <= INT64_MAX else None
    return None
