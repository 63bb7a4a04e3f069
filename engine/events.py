# SPDX-License-Identifier: GPL-3.0-or-later
"""Events: tasks that wait for a named event, and State.emit that wakes them.

A handler parks its task with ``task.wait_event(key)``: when no event was
delivered to the task yet, that raises EventWait, the runner records the
wait (a row of ``event_waits``) and the task goes to Wait. ``State.emit(key,
data)`` delivers data to every task waiting for key (once per waiting
task: the row says it was delivered) and sends them back to Do; their
handler runs again and ``task.wait_event(key)`` now returns the data.

An event that comes between the handler's look and the recording of its
wait is not lost: emit writes the event to the ``events`` table, the
EventWait carries the id of the last event of that key the handler could
have seen, and recording the wait delivers any later one at once. On
PostgreSQL, emit and the recording of a wait lock the key (an advisory
lock until commit), so one of the two always sees the other.

A wait may time out (the State's clock); the EventManager, one of the
Overlord's managers (engine.eventmanager), then puts the task in Error ("error") or runs its
handler again ("retry"), which may wait again. docs/runner.md tells how
to use it.
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from . import _time
from ._time import POLL_INTERVAL
from ._values import check_name, dump_value
from .errors import NotFoundError, Wait
from .session import Session
from .status import Status

if TYPE_CHECKING:
    from ._records import TaskRec
    from ._work import Work
    from .store import Store
    from .store.sqlstore import SqlStore
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.events")

OnTimeout = Literal["error", "retry"]
#: EVENT_RETENTION is how long emitted events are kept (for the tasks that were parking at that moment).
EVENT_RETENTION = timedelta(hours=1)


class EventWait(Wait):
    """EventWait, raised by Task.wait_event, parks the task until an event of key is emitted.

    after is the id of the last event of key when the handler looked: one
    emitted later, before the wait is recorded, is delivered at once.
    """

    def __init__(self, key: str, *, after: int = 0, timeout: float | None = None,
                 on_timeout: OnTimeout = "error") -> None:
        super().__init__(f"waiting for event {key!r}", waited_status=Status.DO)
        self.key = key
        self.after = after
        self.timeout = timeout
        self.on_timeout = on_timeout


def sql_store(store: Store) -> SqlStore:
    """sql_store is the store as the SqlStore every backend is (its statements by name)."""
    return cast("SqlStore", store)


class Lookout:
    """Lookout spares an ensure pass the database when nothing can be due (the managers below).

    A manager looks when the State's clock reached the earliest due time it
    saw, when this process added something (poke: a wait, a schedule), or
    at least every POLL_INTERVAL (what other hosts added); otherwise it only
    asks the loop again for a pass at the due time it knows.
    """

    def __init__(self) -> None:
        self.due: datetime | None = None
        self._last = -math.inf
        self._seen = -1

    def should_look(self, session: Session) -> bool:
        """should_look says whether the pass must read the database; if not, it asks for a pass at the due time."""
        now = session.now()
        if (_POKES.get(session.uow, 0) != self._seen or time.monotonic() - self._last >= POLL_INTERVAL
                or (self.due is not None and now >= self.due)):
            return True
        if self.due is not None:
            with session.state as st:  # (no statement: the lock only)
                st.ensure_before((self.due - now).total_seconds())
        return False

    def looked(self, session: Session, due: datetime | None) -> None:
        """looked records a look at the database: what it saw as the earliest due time."""
        self._seen = _POKES.get(session.uow, 0)
        self._last = time.monotonic()
        self.due = due


#: Per unit of work (per State), how many waits and schedules this process added: what lookouts compare.
_POKES: weakref.WeakKeyDictionary[UnitOfWork, int] = weakref.WeakKeyDictionary()


def poke(w: UnitOfWork) -> None:
    """poke tells the managers' lookouts that a wait or a schedule was added (in this process)."""
    _POKES[w] = _POKES.get(w, 0) + 1


def lock_key(store: SqlStore, key: str) -> None:
    """lock_key serialises, until commit, the units of work that look at key (PostgreSQL; SQLite has one writer)."""
    if store.shared:
        store.query(store.sql["lock_key"], (key,))


def begin_write(w: UnitOfWork) -> None:
    """begin_write writes what the unit of work holds so far and opens its write transaction (for direct writes)."""
    w.flush()
    w.store.begin_write()


def check_event_key(key: Any) -> str:
    """check_event_key returns key if it can name an event: non-empty text."""
    name = check_name(key, "event key")
    if not name:
        raise ValueError("cannot use an empty event key")
    return name


def wait_event(w: Work, tid: int, key: str, timeout: float | timedelta | None = None,
               on_timeout: OnTimeout = "error") -> Any:
    """wait_event returns the data of the event delivered to task tid for key, or raises EventWait to park it."""
    key = check_event_key(key)
    if on_timeout not in ("error", "retry"):
        raise ValueError(f"cannot wait for event {key!r}: on_timeout must be 'error' or 'retry', not {on_timeout!r}")
    limit = None if timeout is None else _time.seconds(timeout, "event timeout")
    if limit is not None and limit < 0:
        raise ValueError(f"cannot wait for event {key!r}: the timeout must not be negative")
    w.check()
    store = sql_store(w.store)
    sql = store.sql
    rows = store.query(sql["event_wait"], (tid,))
    if rows and rows[0][0] == key and rows[0][1]:
        return json.loads(rows[0][2]) if rows[0][2] is not None else None
    last = store.query(sql["last_event"], (key,))
    raise EventWait(key, after=int(last[0][0] or 0) if last else 0, timeout=limit, on_timeout=on_timeout)


def park(w: UnitOfWork, rec: TaskRec, exc: EventWait) -> None:
    """park records that the task (now in Wait) waits for exc.key; an event emitted meanwhile is delivered now."""
    store = sql_store(w.store)
    sql = store.sql
    lock_key(store, exc.key)
    deadline = None if exc.timeout is None else w.now() + timedelta(seconds=exc.timeout)
    begin_write(w)
    store.execute(sql["upsert_event_wait"], (rec.id, exc.key, _time.opt_to_text(deadline), exc.on_timeout,
                                              False, None))
    got = store.query(sql["events_after"], (exc.key, exc.after))
    if got:
        _deliver(w, rec, got[0][1])
        log.debug("task %s: event %r came while it parked; delivered", rec.id, exc.key)
    elif exc.timeout is not None:
        poke(w)
        w.state.ensure_before(exc.timeout)


def _deliver(w: UnitOfWork, rec: TaskRec, data: str) -> bool:
    store = sql_store(w.store)
    if rec.status is not Status.WAIT:
        store.execute(store.sql["delete_event_wait"], (rec.id,))  # aborted, or set by hand: it waits no more
        return False
    store.execute(store.sql["deliver_event"], (data, rec.id))
    w.set_task_status(rec, rec.waited_status)
    w.note_runnable()
    return True


def emit(session: Session, key: str, data: Any = None) -> int:
    """emit records an event and delivers its data to the tasks waiting for key; it returns how many."""
    key = check_event_key(key)
    text = dump_value("data", data, f"event {key!r}")
    w = session.uow
    w.check()
    store = sql_store(w.store)
    sql = store.sql
    lock_key(store, key)
    begin_write(w)
    store.execute(sql["insert_event"], (key, text, _time.to_text(w.now())))
    woken = 0
    for (tid,) in store.query(sql["event_waiters"], (key,)):
        try:
            rec = w.records.trec(int(tid))  # locks the task's row on PostgreSQL
        except NotFoundError:
            continue
        if _deliver(w, rec, text):
            w.add_log(rec, "INFO", f"event {key!r} arrived")
            woken += 1
    log.debug("event %r woke %d tasks", key, woken)
    return woken
