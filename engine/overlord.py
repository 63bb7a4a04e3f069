# SPDX-License-Identifier: GPL-3.0-or-later
"""Overlord: the ensure loop over a State, its managers and its TaskRunner."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import _time
from .errors import DatabaseConflictError, DatabaseError, DatabaseReplacedError, EngineError, EnsureError
from .eventmanager import EventManager
from .leases import DEFAULT_LEASE
from .schedules import ScheduleManager
from .session import session_of
from .state import State
from .stateengine import Manager, StateEngine
from .store.location import locate
from .taskrunner import DEFAULT_STOP_TIMEOUT, DEFAULT_WORKERS, TaskRunner
from .timings import BATCH_AGE
from .tracing import disable_tracing, trace_from_environment

log = logging.getLogger("engine.overlord")

#: ENSURE_INTERVAL is the longest the loop sleeps between ensure passes (snapd: 5 min).
ENSURE_INTERVAL = 5 * 60.0
#: PRUNE_INTERVAL is how often the loop prunes (snapd: 10 min).
PRUNE_INTERVAL = 10 * 60.0
#: PRUNE_WAIT: ready changes older than this are pruned (snapd: 24 h).
PRUNE_WAIT = timedelta(hours=24)
#: ABORT_WAIT: unready changes older than this are aborted (snapd: 3 days).
ABORT_WAIT = timedelta(days=3)
#: PRUNE_MAX_CHANGES: at most this many ready changes are kept (snapd: 500).
PRUNE_MAX_CHANGES = 500
#: POLL_INTERVAL bounds the loop's sleep on a shared database (PostgreSQL), whatever the notifications say.
POLL_INTERVAL = _time.POLL_INTERVAL
#: STATE_FILE is the database's name inside a root directory.
STATE_FILE = "state.db"


class Overlord:
    """Overlord opens the State, runs the managers and the TaskRunner, and loops ensure."""

    def __init__(self, path: str | Path | None = None, *, url: str | None = None, root: str | Path | None = None,
                 clock: _time.Clock | None = None, workers: int = DEFAULT_WORKERS,
                 stop_timeout: float = DEFAULT_STOP_TIMEOUT, lease: float = DEFAULT_LEASE,
                 **state_options: Any) -> None:
        if state_options.get("read_only"):
            raise ValueError("cannot run an overlord on a read-only state (read with State.open(path, read_only=True))")
        if root is not None and path is None and url is None:
            path = Path(root) / STATE_FILE
            if Path(root).exists() and not Path(root).is_dir():
                raise DatabaseError(f"cannot open state directory {root}: it is not a directory")
            try:
                Path(root).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseError(f"cannot create state directory {root}: {e.strerror}") from None
        # The writing State holds the database's writer lock (engine.dbfile):
        # a second Overlord, or any other writing State, is refused.
        where = locate(path, url)  # parsed once, here: the State opens the chosen store from this Location
        self.state = State.open(where, clock=clock, **state_options)
        self._stop_timeout = stop_timeout
        #: The engine's internal handle on the State (engine.session), taken once and handed to what it makes.
        self._session = session = session_of(self.state)
        try:
            self.state_engine = StateEngine(self.state, session=session)
            self.task_runner = TaskRunner(self.state, workers=workers, stop_timeout=stop_timeout, lease=lease,
                                          session=session)
            self.state_engine.add_manager(self.task_runner)
            # h26b: event waits' timeouts (engine.events).
            self.events = EventManager(self.state, self.task_runner, session=session)
            self.state_engine.add_manager(self.events, before=self.task_runner)
            self.schedules = ScheduleManager(self.state, session=session)  # h26b: schedules (engine.schedules)
            self.state_engine.add_manager(self.schedules, before=self.task_runner)
        except BaseException:
            self.state.close()  # a bad argument must not keep the database locked
            raise
        self._cv = threading.Condition()
        self._listening = threading.Event()  # set: the LISTEN thread ends
        self._listener: threading.Thread | None = None
        self._ensure_next = time.monotonic() + ENSURE_INTERVAL
        self._requested: float | None = None  # earliest delay asked for since the last reset
        self._timings_at: float | None = None  # when the loop writes the task runs' timings waiting (_wait)
        self._loop_thread: threading.Thread | None = None
        self._settling = False
        self._stopping = False
        self._stopped = False
        # Held by the stop() that does the stopping: any other stop() waits on it.
        self._stop_lock = threading.RLock()
        self._start_of_operation = self._session.now()
        self.state.set_ensure_before_hook(self._ensure_before)
        # A commit that may have made tasks runnable wakes the loop at once,
        # without the committer asking through ensure_before.
        self.state.set_work_hook(self._work_committed)
        self._session.uow.timings.on_held = self._timings_held
        # With the standard OTEL_* variables set and the [otel] extra installed: a trace per change.
        trace_from_environment(self.state)

    def add_manager(self, manager: Manager) -> None:
        """add_manager registers a manager; the TaskRunner stays last."""
        self.state_engine.add_manager(manager, before=self.task_runner)

    def _ensure_before(self, delay: float) -> None:
        with self._cv:
            when = time.monotonic() + delay
            if self._requested is None or delay < self._requested:
                self._requested = delay
            if when < self._ensure_next:
                self._ensure_next = when
                self._cv.notify_all()

    def _work_committed(self) -> None:
        """_work_committed wakes the loop: a commit may have made tasks runnable."""
        if self._loop_thread is not None or self._settling:
            self._ensure_before(0)

    # -- the loop -------------------------------------------------------------

    def loop(self) -> None:
        """loop starts the ensure loop in a background thread."""
        with self._cv:
            if self._settling:
                raise EngineError("cannot loop while settling")
            if self._loop_thread is not None or self._stopped:
                raise EngineError("cannot loop: the overlord loop already ran")
            if self._stopping:
                raise EngineError("cannot loop: the overlord is stopping")
            self.state_engine.start_up()
            # The loop passes anyway: outcomes hand the next tasks on without waiting for it.
            self.task_runner.set_hand_on(True)
            self._loop_thread = threading.Thread(target=self._run_loop, name="engine-overlord", daemon=True)
            self._loop_thread.start()

    def _run_loop(self) -> None:
        next_prune = time.monotonic() + PRUNE_INTERVAL
        backoff = 0.0
        store = self._session.store
        # Several hosts: another host's commit wakes this loop through LISTEN/NOTIFY, and the loop
        # polls anyway (for expired leases, and for a notification lost while reconnecting).
        interval = POLL_INTERVAL if store.shared else ENSURE_INTERVAL
        if store.shared:
            listen = getattr(store, "listen", None)
            if listen is not None:
                self._listener = threading.Thread(target=listen, args=(lambda: self._ensure_before(0),
                                                                       self._listening),
                                                  name="engine-listen", daemon=True)
                self._listener.start()
        while True:
            with self._cv:
                if self._stopping:
                    return
                self._ensure_next = time.monotonic() + interval
            try:
                self.state_engine.ensure()
                backoff = 0.0
            except EnsureError as e:
                if any(isinstance(err, DatabaseReplacedError) for err in e.errors):
                    return  # every later commit is refused: the store said why, once
                log.warning("%s", e)
                if any(isinstance(err, DatabaseError) for err in e.errors):
                    # The database was busy or failing: try again soon, not in 5 minutes
                    # (at once, nearly, after a conflict with another host).
                    first = 0.01 if all(isinstance(err, DatabaseConflictError) for err in e.errors) else 0.5
                    backoff = min(max(backoff * 2, first), 60.0)
                    self._ensure_before(backoff)
            except Exception:
                log.exception("internal error: ensure pass failed")
            if store.replaced() is not None:
                return  # the path names another file now (a commit elsewhere may have found it first)
            prune_now = self._wait(next_prune)
            if prune_now is None:
                return
            if prune_now:
                next_prune = time.monotonic() + PRUNE_INTERVAL
                self._prune()

    def _wait(self, next_prune: float) -> bool | None:
        """_wait sleeps until the next pass is due: whether to prune first (None: stop, or the database file
        was replaced).

        On the way it writes the task runs' timings that wait for a batch
        once BATCH_AGE has passed, so that an idle daemon writes them within
        about that time, not at its next pass (minutes later).
        """
        while True:
            with self._cv:
                while True:
                    if self._stopping:
                        return None
                    now = time.monotonic()
                    if now >= self._ensure_next or now >= next_prune:
                        return now >= next_prune
                    at = self._timings_at
                    if at is not None and now >= at:
                        self._timings_at = None
                        break
                    self._cv.wait(min(self._ensure_next, next_prune, math.inf if at is None else at) - now)
            try:
                with self.state:
                    pass  # a commit with nothing else to write writes the runs once due (engine.timings)
            except DatabaseReplacedError:
                return None  # every later commit is refused: the store said why, once
            except EngineError as e:
                log.warning("cannot write the timings of task runs: %s", e)

    def _timings_held(self) -> None:
        """_timings_held is told (lock held) that committed task runs now wait for a batch: the loop writes
        them BATCH_AGE later unless a commit did meanwhile."""
        with self._cv:
            if self._timings_at is None:
                self._timings_at = time.monotonic() + BATCH_AGE
                self._cv.notify_all()

    def _prune(self) -> None:
        try:
            with self.state:
                self.state.prune(self._start_of_operation, PRUNE_WAIT, ABORT_WAIT, PRUNE_MAX_CHANGES)
        except Exception:
            log.exception("cannot prune state")

    # -- settle ------------------------------------------------------------------

    def settle(self, timeout: float | None = None, *, advance: Callable[[float], object] | None = None) -> None:
        """settle runs ensure and wait until nothing is due now and every ready change is clean.

        It raises TimeoutError("Settle is not converging") past timeout seconds.
        With advance (a fake clock's advance(seconds)), time is skipped instead
        of waited for: a pass asked for in n seconds (a retry, an at-time)
        moves the clock n seconds on and runs at once.
        """
        with self._cv:
            if self._loop_thread is not None:
                raise EngineError("cannot settle while the overlord loop runs")
            if self._settling:
                raise EngineError("cannot settle twice at once")
            self._settling = True
        try:
            self._settle(timeout, advance)
        finally:
            with self._cv:
                self._settling = False

    def _settle(self, timeout: float | None, advance: Callable[[float], object] | None) -> None:
        # snapd's Settle: run ensure and wait, again and again, while the next
        # pass is asked for sooner than the ensure interval (a retry, an
        # at-time, ensure_before with a delay, new runnable work); stop once
        # nothing is scheduled before the interval and every ready change is
        # clean. Between passes it sleeps until the earliest time asked for.
        self.state_engine.start_up()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        errors: list[BaseException] = []
        while True:
            if deadline is not None and time.monotonic() > deadline:
                if errors:
                    raise EnsureError([*errors, TimeoutError("Settle is not converging")])
                raise TimeoutError("Settle is not converging")
            with self._cv:
                self._requested = None
                self._ensure_next = time.monotonic() + ENSURE_INTERVAL
            try:
                self.state_engine.ensure()
            except EnsureError as e:
                errors += e.errors
            self.state_engine.wait()
            with self._cv:
                requested = self._requested
            if advance is not None and requested is not None and (
                    requested < ENSURE_INTERVAL or self._unready_changes()):
                # Skip the time instead of waiting for it; past the interval
                # only while some change still has work to do (a late retry).
                if requested > 0:
                    advance(requested)
                continue
            if requested is not None and requested < ENSURE_INTERVAL:
                with self._cv:
                    # Sleep until the time asked for (or a sooner request), within the timeout.
                    while not self._stopping:
                        now = time.monotonic()
                        until = self._ensure_next if deadline is None else min(self._ensure_next, deadline)
                        if now >= until:
                            break
                        self._cv.wait(until - now)
                continue
            with self.state:
                if not self._session.has_unclean_ready():
                    break
        if errors:
            raise EnsureError(errors)

    def _unready_changes(self) -> bool:
        with self.state:
            return any(not c.is_ready() for c in self.state.changes())

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """stop ends the loop and the managers (each within a bound) and releases the database.

        It returns only once the overlord is stopped: a stop() called while
        another is under way waits for that one to end.
        """
        with self._cv:
            if self._stopped:
                return
            self._stopping = True
            self._listening.set()
            self._cv.notify_all()
        if not self._stop_lock.acquire(blocking=False):
            log.debug("stop: waiting for the stop under way in another thread")
            self._stop_lock.acquire()
        try:
            with self._cv:
                if self._stopped:
                    return  # stopped by the stop() this one waited for
                thread = self._loop_thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(self._stop_timeout)
                if thread.is_alive():
                    log.error("stop: the ensure loop did not stop within %g s", self._stop_timeout)
            if self._listener is not None:
                self._listener.join(2.0)  # it looks at its stop event twice a second
            self.state_engine.stop()
            disable_tracing(self.state)  # the spans left open end, and are exported
            self._release()
            with self._cv:
                self._stopped = True
        finally:
            self._stop_lock.release()

    def _release(self) -> None:
        # Fence the State: whatever a handler abandoned by stop() does later
        # never reaches the database, which is free for the next overlord.
        self._session.fence("its overlord was stopped")
