# SPDX-License-Identifier: GPL-3.0-or-later
"""Keyed concurrency and rate limits: at most N tasks with key K running at once, over every runner host.

A task kind names a concurrency key (a fixed string, or one computed from
each task) and a limit, and optionally a rate: at most R starts per
interval. The runner's claim asks Slots.admit before it starts a task:

- on SQLite the one runner counts its own running tasks and the starts it
  made, in memory; the starts of a kind with a rate are rows of
  ``concurrency_slots`` too, read once per key at the first count after a
  restart, so that a restart (or a crash loop) does not start a rate afresh;
- on PostgreSQL the claim locks the key (an advisory lock until the claim
  commits, so two hosts never count at once; a host that finds another
  counting takes the key as full for that pass), counts the slots held now
  (its own running tasks, and the rows of ``concurrency_slots`` whose task
  is Doing, Undoing or Abort under another runner's live lease, by the
  server's clock) and the starts within the rate's interval, and records
  the start in the same transaction. A host that dies holds its slots only
  until its leases run out.

docs/runner.md ("Concurrency keys and rate limits") tells how to use it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import _time
from ._values import check_name
from .events import sql_store

if TYPE_CHECKING:
    from ._records import TaskRec
    from .task import Task
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.taskrunner")

KeyOf = Callable[["Task"], "str | None"]
#: SLOT_RUN: after this many candidates in a row held back by full keys, a pass looks no further down its
#: query (as when no worker is free): a big fan-out of one key costs a pass a page, not every task.
SLOT_RUN = 16


@dataclass(frozen=True)
class Concurrency:
    """Concurrency is what a task kind says of its tasks: their key, its limit and its rate."""

    #: key names the slots the tasks share: a string, or key(task) (None: no limit for that task).
    key: str | KeyOf
    #: limit: at most this many tasks with the key run at once (Doing or Undoing).
    limit: int
    #: rate: at most this many starts with the key within per seconds (None: no rate).
    rate: int | None = None
    per: float = 0.0


class Slots:
    """Slots holds the concurrency of each kind and admits, or holds back, the tasks a claim would start."""

    def __init__(self, shared: bool) -> None:
        self._shared = shared
        self._by_kind: dict[str, Concurrency] = {}
        # The key of each task running here; SQLite: the starts per key (the State's clock).
        self._running: dict[int, str] = {}
        self._starts: dict[str, deque[datetime]] = {}
        # Per key, for the pass in progress: [running, starts within the interval].
        self._pass: dict[str, list[int]] = {}
        #: refused_in_a_row: how many candidates admit held back since it last admitted one (this pass).
        self.refused_in_a_row = 0

    def declare(self, kind: str, key: str | KeyOf, limit: int, rate: int | None = None,
            per: float | timedelta | None = None) -> None:
        """set gives a kind's tasks a concurrency key, a limit and optionally a rate (rate starts per seconds)."""
        check_name(kind, "task kind")
        if not callable(key):
            key = check_name(key, "concurrency key")
            if not key:
                raise ValueError(f"cannot limit task kind {kind!r}: the concurrency key is empty")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"cannot limit task kind {kind!r} to {limit!r} tasks at once: give a positive int")
        seconds = 0.0
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
                raise ValueError(f"cannot limit task kind {kind!r} to {rate!r} starts: give a positive int")
            if per is None:
                raise ValueError(f"cannot limit task kind {kind!r} to {rate} starts: say per how many seconds")
            seconds = _time.seconds(per, "rate interval")
            if seconds <= 0:
                raise ValueError(f"cannot limit task kind {kind!r} to {rate} starts per {per!r}: give a positive "
                                 "interval")
        self._by_kind[kind] = Concurrency(key, limit, rate, seconds)

    def limited(self, kind: str) -> Concurrency | None:
        """limited is the concurrency of a kind, or None."""
        return self._by_kind.get(kind)

    def begin_pass(self, running: set[int]) -> None:
        """begin_pass forgets what the last pass counted, and the tasks no longer running here."""
        self._pass.clear()
        self.refused_in_a_row = 0
        if self._running:
            for tid in [t for t in self._running if t not in running]:
                del self._running[tid]

    def admit(self, w: UnitOfWork, rec: TaskRec, task: Task) -> float | None:
        """admit takes a slot for the task and returns None, or says how long it must wait (0: for a free slot).

        A key function that raises holds the task back (it is asked again at
        the next pass), as a blocked predicate that raises does.
        """
        c = self._by_kind.get(rec.kind)
        if c is None:
            return None
        try:
            key = c.key(task) if callable(c.key) else c.key
        except Exception as e:
            log.warning("task %s (%s) is held back: its concurrency key function raised %s: %s", rec.id, rec.kind,
                        type(e).__name__, e)
            return 0.0
        if key is None:
            return None
        now = w.now()
        counted = self._pass.get(key)
        if counted is None:
            counted = self._pass[key] = self._count(w, key, c, now)
        running, started = counted
        if running >= c.limit:
            self.refused_in_a_row += 1
            return 0.0
        if c.rate is not None and started >= c.rate:
            self.refused_in_a_row += 1
            return self._rate_wait(w, key, c, now)
        self.refused_in_a_row = 0
        counted[0] += 1
        counted[1] += 1
        self._record(w, rec.id, key, c, now)
        return None

    def _count(self, w: UnitOfWork, key: str, c: Concurrency, now: datetime) -> list[int]:
        if not self._shared:
            running = sum(1 for k in self._running.values() if k == key)
            starts = self._starts.get(key)
            if starts is None and c.rate is not None:
                starts = self._starts[key] = self._stored_starts(w, key, c, now)
            if starts is not None and c.rate is not None:
                since = now - timedelta(seconds=c.per)
                while starts and starts[0] <= since:
                    starts.popleft()
            return [running, len(starts) if starts is not None and c.rate is not None else 0]
        store = sql_store(w.store)
        # Held until the claim commits: no other host counts meanwhile. A host that finds another counting
        # does not wait for it: the key counts as full for this pass (the next one looks again).
        if not store.query(store.sql["try_lock_key"], ("concurrency:" + key,))[0][0]:
            return [c.limit, c.rate or 0]
        # The other runners' slots, and this one's running tasks: a task this pass claimed (it holds a lease
        # now) is not running yet, and a task waiting for its retry (Doing) runs no more.
        mine = sum(1 for k in self._running.values() if k == key)
        running = mine + int(store.query(store.sql["live_slots"], (key, store.runner_id))[0][0])
        started = 0
        if c.rate is not None:
            after = _time.to_text(now - timedelta(seconds=c.per))
            started = len(store.query(store.sql["slot_starts"], (key, after)))
        return [running, started]

    def _stored_starts(self, w: UnitOfWork, key: str, c: Concurrency, now: datetime) -> deque[datetime]:
        """_stored_starts are a key's starts within its rate's interval that an earlier life of this runner
        recorded (SQLite: read once per key, then counted in memory), so a restart does not start a rate afresh."""
        store = sql_store(w.store)
        since = _time.to_text(now - timedelta(seconds=c.per))
        return deque(_time.from_text(r[0]) for r in store.query(store.sql["slot_starts"], (key, since)))

    def _rate_wait(self, w: UnitOfWork, key: str, c: Concurrency, now: datetime) -> float:
        """_rate_wait is how long until the oldest start within the interval leaves it."""
        since = now - timedelta(seconds=c.per)
        if self._shared:
            store = sql_store(w.store)
            rows = store.query(store.sql["slot_starts"], (key, _time.to_text(since)))
            oldest = _time.from_text(rows[0][0]) if rows else now
        else:
            starts = self._starts.get(key)
            oldest = starts[0] if starts else now
        return max(0.001, (oldest + timedelta(seconds=c.per) - now).total_seconds())

    def _record(self, w: UnitOfWork, tid: int, key: str, c: Concurrency, now: datetime) -> None:
        self._running[tid] = key
        if not self._shared:
            if c.rate is None:
                return
            self._starts.setdefault(key, deque()).append(now)
        store = sql_store(w.store)
        w.store.begin_write()  # (PostgreSQL: a flag; the row needs nothing the unit of work holds unwritten)
        store.execute(store.sql["upsert_slot"], (tid, key, _time.to_text(now)))
