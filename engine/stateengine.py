# SPDX-License-Identifier: GPL-3.0-or-later
"""StateEngine: calls the managers' ensure (and start_up, wait and stop where they have them) in turn."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from . import timings
from .errors import DatabaseReplacedError, EngineError, EnsureError
from .session import Session, session_of

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("engine.stateengine")


@runtime_checkable
class Manager(Protocol):
    """Manager is anything with ensure(); start_up(), wait() and stop() are called where it has them.

    snapd's StateManager, with its optional StateStarterUp, StateWaiter and
    StateStopper: a manager with no background work needs only ensure().
    """

    def ensure(self) -> None:
        """ensure brings what the manager owns towards the wanted state."""


#: OPTIONAL are the methods the state engine calls on the managers that have them.
OPTIONAL = ("start_up", "wait", "stop")


class StateEngine:
    """StateEngine drives a set of managers over one State."""

    def __init__(self, state: State, *, session: Session | None = None) -> None:
        self._state = state
        #: The engine's internal handle on the State (engine.session): ensure passes' timings go to its unit of work.
        #: An Overlord hands in the one it took; alone, the engine takes it here.
        self._session = session if session is not None else session_of(state)
        self._lock = threading.Lock()
        self._managers: list[Manager] = []
        #: ensure_threshold: an ensure pass that takes at least this long (seconds) keeps its managers'
        #: durations (engine.timings; State.ensure_timings).
        self.ensure_threshold = timings.ENSURE_THRESHOLD
        self._started = False
        self._stopped = False
        # Held while the managers stop: a second stop() waits for the first.
        self._stop_lock = threading.RLock()

    @property
    def state(self) -> State:
        """state is the State the managers work on."""
        return self._state

    def add_manager(self, manager: Manager, *, before: Manager | None = None) -> None:
        """add_manager registers manager, last or just before another one."""
        if not callable(getattr(manager, "ensure", None)):
            raise TypeError(f"cannot add manager {manager!r}: it has no ensure() method")
        for name in OPTIONAL:
            if getattr(manager, name, None) is not None and not callable(getattr(manager, name)):
                raise TypeError(f"cannot add manager {manager!r}: its {name} is not a method")
        with self._lock:
            if before is not None and before in self._managers:
                self._managers.insert(self._managers.index(before), manager)
            else:
                self._managers.append(manager)

    def managers(self) -> list[Manager]:
        """managers returns the registered managers in calling order."""
        with self._lock:
            return list(self._managers)

    def start_up(self) -> None:
        """start_up calls start_up() of the managers that have one, once; errors raise EnsureError."""
        with self._lock:
            if self._started:
                return
            self._started = True
            errors = []
            for m in self._managers:
                start_up = getattr(m, "start_up", None)
                if callable(start_up):
                    try:
                        start_up()
                    except Exception as e:
                        log.warning("state start-up error in %s: %s", type(m).__name__, e)
                        errors.append(e)
        if errors:
            raise EnsureError(errors, "startup")

    def ensure(self) -> None:
        """ensure calls every manager's ensure, then raises EnsureError listing every failure."""
        with self._lock:
            if not self._started:
                raise EngineError("cannot ensure: the state engine was not started up")
            if self._stopped:
                raise EngineError("cannot ensure: the state engine is stopped")
            managers = list(self._managers)
        errors = []
        durations: list[tuple[str, float]] = []
        start = t0 = time.perf_counter()
        for m in managers:
            try:
                m.ensure()
            except Exception as e:
                if not isinstance(e, DatabaseReplacedError):  # that one the store said, once
                    log.warning("state ensure error in %s: %s", type(m).__name__, e)
                errors.append(e)
            t1 = time.perf_counter()
            durations.append((type(m).__name__, t1 - t0))
            t0 = t1
        if t0 - start >= self.ensure_threshold:
            w = self._session.uow
            w.timings.ensure_pass(w.now() - timedelta(seconds=t0 - start), durations)
        if self._session.uow.timings.runs.held:  # task runs wait for a batch: this pass writes them once due
            with self._session.state:
                pass
        if errors:
            raise EnsureError(errors)

    def wait(self) -> None:
        """wait calls every manager's wait."""
        with self._lock:
            if self._stopped:
                return
            managers = list(self._managers)
        for m in managers:
            wait = getattr(m, "wait", None)
            if wait is not None:
                wait()

    def stop(self) -> None:
        """stop calls every manager's stop, once; a stop() called meanwhile returns when that one ends."""
        if not self._stop_lock.acquire(blocking=False):
            log.debug("stop: waiting for the stop under way in another thread")
            self._stop_lock.acquire()
        try:
            with self._lock:
                if self._stopped:
                    return
                self._stopped = True
                managers = list(self._managers)
            for m in managers:
                stop = getattr(m, "stop", None)
                if stop is None:
                    continue
                try:
                    stop()
                except Exception:
                    log.exception("cannot stop manager %r", m)
        finally:
            self._stop_lock.release()
