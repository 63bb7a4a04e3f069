# SPDX-License-Identifier: GPL-3.0-or-later
"""Session: the engine's internal handle on one State, for the modules of its middle.

The State makes one Session when it is made. The TaskRunner and its
recorder, the StateEngine, the Overlord and the event and schedule managers
take it once, when they are made (session_of, as SQLAlchemy's
object_session finds the session of an object); the State hands it to the
event and schedule functions it calls. Through it they reach the
unit of work (its identity map and change set), the clock, and what only
the State may do (fence its writes), never the State's private members.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .store import Store
    from .unitofwork import UnitOfWork


class StateFace(Protocol):
    """StateFace is what the engine's middle asks of the public State through a Session.

    engine.state.State is the one; this module sits below it (the State makes
    its Session), so it names what it uses: the lock (``with``), a pass
    (ensure_before), and a change or task to make (the schedules' changes).
    """

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

    def lock(self, begin: bool = False) -> None:
        """lock takes the lock (begin: and opens the write transaction, a unit that writes)."""

    def ensure_before(self, seconds: float | timedelta) -> None:
        """ensure_before asks for the next ensure pass within the given delay."""

    def new_change(self, kind: str, summary: str) -> Any:
        """new_change makes a change (an engine.change.Change)."""

    def new_task(self, kind: str, summary: str) -> Any:
        """new_task makes a task (an engine.task.Task)."""


class Session:
    """Session is what the engine's middle uses of one State: its unit of work, its clock, its fence."""

    __slots__ = ("__weakref__", "_fence", "state", "store", "uow")

    def __init__(self, state: StateFace, uow: UnitOfWork, fence: Callable[[str], None]) -> None:
        #: state is the public State (its lock, ensure_before, new_change, ...).
        self.state = state
        #: uow is the State's unit of work (engine.unitofwork).
        self.uow = uow
        #: store is the State's database link (engine.store).
        self.store: Store = uow.store
        self._fence = fence
        _SESSIONS[id(state)] = self

    def now(self) -> datetime:
        """now is the State clock's time."""
        return self.uow.now()

    def has_unclean_ready(self) -> bool:
        """has_unclean_ready says whether a ready change still has tasks to clean (lock held)."""
        return self.uow.has_unclean_ready()

    def fence(self, reason: str) -> None:
        """fence stops the State writing for good and lets another writer take the database (engine.state)."""
        self._fence(reason)


#: The Session of each State, by id(State): held weakly (the State holds its Session).
_SESSIONS: weakref.WeakValueDictionary[int, Session] = weakref.WeakValueDictionary()


def session_of(state: object) -> Session:
    """session_of is the engine's internal handle on a State (TypeError for anything else)."""
    session = _SESSIONS.get(id(state))
    if session is None or session.state is not state:
        raise TypeError(f"cannot use {type(state).__name__} as a State")
    return session
