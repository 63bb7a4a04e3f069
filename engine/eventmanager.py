# SPDX-License-Identifier: GPL-3.0-or-later
"""EventManager: the Overlord's manager for event waits (engine.events): timeouts, and forgetting old events.

It sits above the TaskRunner, whose recorder fails a task whose wait timed
out as it fails a task whose handler raised.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from . import _time
from .errors import NotFoundError
from .events import EVENT_RETENTION, Lookout, begin_write, lock_key, sql_store
from .runnerguards import fail_task
from .session import Session, session_of
from .status import Status
from .taskrunner import TaskRunner

if TYPE_CHECKING:
    from .state import State
    from .unitofwork import UnitOfWork


class EventManager:
    """EventManager is the Overlord's manager for event waits: timeouts, and forgetting old events."""

    def __init__(self, state: State, runner: TaskRunner, *, session: Session | None = None) -> None:
        self._st = state
        self._session = session if session is not None else session_of(state)  # the Overlord's, or taken here
        self._runner = runner
        self._next_prune: datetime | None = None
        self._lookout = Lookout()

    def ensure(self) -> None:
        """ensure ends the waits whose timeout passed and asks for a pass at the next deadline."""
        st = self._st
        if not self._lookout.should_look(self._session):
            return
        with st:
            w = self._session.uow
            store = sql_store(w.store)
            sql = store.sql
            now = w.now()
            for tid, key, on_timeout, deadline in store.query(sql["due_event_waits"], (_time.to_text(now),)):
                self._time_out(w, int(tid), str(key), str(on_timeout), str(deadline))
            nxt = store.query(sql["next_event_deadline"])
            due = _time.from_text(nxt[0][0]) if nxt and nxt[0][0] is not None else None
            if due is not None:
                st.ensure_before(max(0.0, (due - now).total_seconds()))
            self._lookout.looked(self._session, due)
            if self._next_prune is None or now >= self._next_prune:
                self._next_prune = now + EVENT_RETENTION / 4
                begin_write(w)
                store.execute(sql["delete_old_events"], (_time.to_text(now - EVENT_RETENTION),))

    def _time_out(self, w: UnitOfWork, tid: int, key: str, on_timeout: str, deadline: str) -> None:
        store = sql_store(w.store)
        sql = store.sql
        lock_key(store, key)
        try:
            rec = w.records.trec(tid)
        except NotFoundError:
            return
        again = store.query(sql["event_wait"], (tid,))
        if not again or again[0][0] != key or again[0][1]:
            return  # delivered, or waiting for another key, since the look above
        begin_write(w)
        store.execute(sql["delete_event_wait"], (tid,))
        if rec.status is not Status.WAIT:
            return
        if on_timeout == "retry":
            w.add_log(rec, "INFO", f"no event {key!r} before {deadline}: running it again")
            w.set_task_status(rec, rec.waited_status)
            w.note_runnable()
            return
        chg = f"change {rec.change_id}" if rec.change_id is not None else "no change"
        fail_task(self._runner, rec, TimeoutError(f"no event {key!r} came before {deadline}"), chg)
