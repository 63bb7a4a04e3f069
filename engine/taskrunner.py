# SPDX-License-Identifier: GPL-3.0-or-later
"""TaskRunner: runs the do, undo and cleanup handlers of runnable tasks.

An ensure pass claims runnable tasks (moving them to Doing or Undoing and
committing that) before starting their handlers on worker threads. Handlers
report back through one recorder thread, which applies their outcomes in
batches, one transaction per batch (group commit). See docs/runner.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import tenacity

from ._workers import EventLoopThread, Workers
from .concurrency import SLOT_RUN, Slots
from .errors import EngineError
from .handon import HandOn, handle, handle_async
from .leases import DEFAULT_LEASE, Leases
from .outcomes import OutcomeRecorder
from .runnerguards import RunnerGuards
from .runs import (
    NO_HANDLERS,
    PAGE,
    Blocked,
    Handler,
    HandlerPair,
    Match,
    Run,
    Runs,
    check_handler,
    pages,
)
from .session import Session, session_of
from .status import Status
from .task import Task
from .why import RunnerView, WhyNot, reasons

if TYPE_CHECKING:
    from ._records import TaskRec
    from .state import State

log = logging.getLogger("engine.taskrunner")


#: DEFAULT_WORKERS is the default number of handlers running at once.
DEFAULT_WORKERS = 32
#: DEFAULT_STOP_TIMEOUT bounds how long stop() waits for handlers to return.
DEFAULT_STOP_TIMEOUT = 30.0
# (Status's members as names: Enum's class attribute lookup costs some 80 ns, several times a step.)
_DO, _DOING, _UNDO, _UNDOING, _WAIT = Status.DO, Status.DOING, Status.UNDO, Status.UNDOING, Status.WAIT


class TaskRunner(RunnerGuards, HandOn):
    """TaskRunner runs the handlers registered for task kinds.

    Drive it with ensure() and wait(), or let an Overlord do so.
    """

    def __init__(self, state: State, *, workers: int = DEFAULT_WORKERS,
                 stop_timeout: float = DEFAULT_STOP_TIMEOUT, lease: float = DEFAULT_LEASE,
                 session: Session | None = None) -> None:
        if workers < 1:
            raise ValueError(f"cannot create a task runner with {workers} workers")
        self._st = state
        #: The engine's internal handle on the State (engine.session): the Overlord's, or taken once here.
        self._session = session = session if session is not None else session_of(state)
        self._w = session.uow
        self._size = workers
        self._stop_timeout = stop_timeout
        self._handlers: dict[str, HandlerPair] = {}
        self._optional: list[tuple[Match, HandlerPair]] = []
        self._cleanups: dict[str, Handler] = {}
        self._blocked: list[Blocked] = []
        self._mu = threading.Lock()  # ensure, stop, stop_kinds; taken before the state lock
        self._r = Runs()
        # Several hosts on one database: claims under leases (engine.leases).
        self._leases = Leases(self._w.store, lease) if self._w.store.shared else None
        # While an Overlord loops: the recorder claims the next tasks in its own unit of work (hand_on).
        self._hand_on_enabled = False
        self._handing_on = False  # (while a hand-on claims)
        self._recorder = OutcomeRecorder(session, self._r, self._pair, self._quarantine, self._leases,
                                         hand_on=self._hand_on, start=self._start)
        self._workers = Workers(workers, "engine-worker")
        self._loop = EventLoopThread("engine-async")
        # Tasks and changes whose rows cannot be read: reported once, then skipped.
        self._damaged_tasks: set[int] = set()
        self._damaged_changes: set[int] = set()
        self._reasons: set[str] = set()
        # Per change, whether it and its tasks can be read; tasks whose outcome
        # could not be recorded. Both hold for one generation of the cache.
        self._checked: dict[int, bool] = {}
        self._quarantined: set[int] = set()
        self._generation = -1
        # (task, predicate) pairs whose raise was logged: once each.
        self._failed_predicates: set[tuple[int, str]] = set()
        # h26b: concurrency keys and rate limits of task kinds (engine.concurrency).
        self._slots = Slots(self._w.store.shared)

    # -- registration ---------------------------------------------------------

    def add_handler(self, kind: str, do: Handler, undo: Handler | None = None, *,
                    retry: tenacity.BaseRetrying | None = None) -> None:
        """add_handler registers the do and (optional) undo handlers of a task kind.

        retry is a tenacity policy deciding which exceptions retry the task,
        after which delay, and when to give up.
        """
        if retry is not None and not isinstance(retry, tenacity.BaseRetrying):
            raise TypeError(f"cannot register {kind!r}: retry must be a tenacity.Retrying, not {type(retry).__name__}")
        check_handler(kind, "do", do)
        check_handler(kind, "undo", undo)
        with self._mu:
            self._handlers[kind] = HandlerPair(do, undo, retry)

    def add_optional_handler(self, match: Match, do: Handler, undo: Handler | None = None) -> None:
        """add_optional_handler registers handlers for tasks match(task) accepts and no kind claims."""
        check_handler("optional", "do", do)
        check_handler("optional", "undo", undo)
        with self._mu:
            self._optional.append((match, HandlerPair(do, undo)))

    def add_cleanup(self, kind: str, fn: Handler) -> None:
        """add_cleanup registers fn to clean up after tasks of kind once their change is ready."""
        check_handler(kind, "cleanup", fn)
        with self._mu:
            if kind not in self._handlers:
                raise EngineError(f"cannot add a cleanup for task kind {kind!r}: register its handler first")
            self._cleanups[kind] = fn

    def set_blocked(self, pred: Blocked) -> None:
        """set_blocked makes pred(task, running) the only predicate that can hold tasks back."""
        with self._mu:
            self._blocked = [pred]

    def add_blocked(self, pred: Blocked) -> None:
        """add_blocked adds a predicate that can hold tasks back while others run."""
        with self._mu:
            self._blocked.append(pred)

    def set_concurrency(self, kind: str, key: str | Callable[[Task], str | None], limit: int, *,
                        rate: int | None = None, per: float | timedelta | None = None) -> None:
        """set_concurrency runs at most limit tasks of kind with the same key at once, over every runner host.

        key is a string, or key(task) (lock held) for a key per task (None:
        not limited). rate, with per (seconds or a timedelta), also limits
        the starts with the key to rate per interval. docs/runner.md.
        """
        with self._mu:
            self._slots.declare(kind, key, limit, rate, per)

    def on_task_error(self, callback: Callable[[BaseException], Any]) -> None:
        """on_task_error calls callback(error) whenever a task fails."""
        self._r.on_error = callback

    def known_task_kinds(self) -> list[str]:
        """known_task_kinds lists the task kinds with registered handlers."""
        return list(self._handlers)

    def task_kind_has_undo(self, kind: str) -> bool:
        """task_kind_has_undo returns whether tasks of kind can be undone."""
        pair = self._handlers.get(kind)
        return pair is not None and pair.undo is not None

    def why_not(self, task: Task) -> WhyNot | None:
        """why_not says why task is not running in this runner, or None when it is Done or running (engine.why)."""
        return self.why_not_tasks([task])[0]

    def why_not_tasks(self, tasks: Iterable[Task]) -> list[WhyNot | None]:
        """why_not_tasks is why_not for many tasks (a change's, say), reading what they share once (engine.why)."""
        view = RunnerView(self, self._r, self._leases, self._size, self._pair, self._blocked, self._damaged_tasks,
                          self._damaged_changes, self._quarantined, self._checked)
        return reasons(tasks, view)

    def _pair(self, rec: TaskRec) -> HandlerPair:
        pair = self._handlers.get(rec.kind)
        if pair is not None:
            return pair
        if self._optional:
            task = self._w.task_handle(rec)
            for match, opt in self._optional:
                try:
                    matched = match(task)
                except BaseException as e:
                    # Only this task is concerned: left alone (as blocked) and asked about again later.
                    self._user_failed(rec, "optional-handler matcher", match, e)
                    return NO_HANDLERS
                if matched:
                    return opt
        return NO_HANDLERS

    # -- ensure ---------------------------------------------------------------

    def ensure(self) -> None:
        """ensure claims the runnable tasks (as many as there are free workers) and starts them."""
        with self._mu:
            if self._r.stopped:
                return
            started: list[Run] = []
            try:
                with self._st, self._recorder.hooks_guarded() as failures:
                    self._claim(started)
                    if failures:
                        self._hooks_failed(failures, started)
            except BaseException:
                with self._r.lock:
                    for run in started:
                        self._r.runs.pop(run.tid, None)
                    self._r.idle.notify_all()
                raise
            for run in started:
                self._start(run)

    def _claim(self, started: list[Run]) -> None:
        w = self._w
        store = w.store
        w.flush()  # a user's pending writes commit with full durability
        if self._generation != w.generation:
            # The cache was dropped: what the runner learnt of damaged rows may be stale.
            self._generation = w.generation
            self._checked.clear()
            self._quarantined.clear()
            self._scan_unknown_statuses()
        w.check_blockers()
        if self._leases is not None:
            with self._r.lock:
                mine = set(self._r.runs)
            self._leases.reap(w, mine)
        self._fail_cycles()
        if not store.in_write:
            # What a pass writes (claims, Abort to Undo, cleanups) is derived
            # from the state again after a crash: no sync of its own needed.
            w.relax_commit()
        now = w.now()
        with self._r.lock:
            runs = dict(self._r.runs)
        self._r.some_blocked = False
        self._r.starved = False
        # Aborted tasks: stop the running ones, move the others on.
        for row in pages(lambda after, n: store.tasks_in_status("Abort", after, n), lambda: PAGE):
            rec = self._load(row)
            if rec is None or rec.status is not Status.ABORT or self._pair(rec).do is None:
                continue
            if rec.id in runs:
                runs[rec.id].tomb.kill()
            else:
                self._recorder.try_undo(rec)
        w.flush()
        running = [run.task for run in runs.values()]
        held = w.keys.held()  # queued changes still waiting for older ones (engine.keys)
        self._slots.begin_pass(set(runs))  # h26b
        free = self._size - len(runs)
        candidates = (
            (lambda after, n: store.started_tasks(after, n), lambda: PAGE),
            (store.runnable_undo, None),
            (self._runnable_do(), None),
        )
        free, next_time = self._claim_from(candidates, runs, started, running, free, now, held)
        if self._leases is not None:
            store.release_claims(list(runs))  # the tasks running here keep theirs
        if free > 0:
            free = self._claim_cleanups(runs, started, free)
        if next_time is not None:
            self._st.ensure_before((next_time - now).total_seconds())

    def _claim_from(self, candidates: Any, runs: dict[int, Run], started: list[Run], running: list[Task],
                    free: int, now: datetime, held: set[int]) -> tuple[int, datetime | None]:
        """_claim_from claims the runnable tasks the candidate queries find, as many as free workers.

        Each candidate is (query(after, limit), size() or None: a little more than the free workers), or (a list
        of rows known already, None);
        held are the queued changes that must wait still (engine.keys): their Do tasks are not claimed.
        It returns the workers left free and the earliest at-time of a task not due yet.
        """
        w = self._w
        next_time: datetime | None = None
        starved = False

        # Fetch one more than the free workers can take (enough to see that tasks were left; a row read costs
        # about 2 us), and a little more for a further page (candidates were skipped), without loading a big
        # fan-out at every pass.
        paged = 0

        def few() -> int:
            nonlocal paged
            paged += 1
            return min(PAGE, max(free, 0) + (1 if paged == 1 else 16))

        for query, size in candidates:
            paged = 0
            for row in query if isinstance(query, list) else pages(query, size or few):
                rec = self._load(row)
                if rec is None or rec.id in runs or rec.status.ready or rec.status is _WAIT:
                    continue
                if not self._sound(rec):
                    continue
                pair = self._pair(rec)
                if pair.do is None:
                    continue  # another runner (or a newer version) owns this kind
                if rec.status is _UNDO and pair.undo is None:
                    # Nothing to undo: it stays done; what it waited for may undo now.
                    w.set_task_status(rec, Status.DONE)
                    if w.records.wait_ids(rec):
                        self._st.ensure_before(0)
                    continue
                if rec.at_time is not None and rec.at_time > now:
                    next_time = rec.at_time if next_time is None else min(next_time, rec.at_time)
                    continue
                if held and rec.change_id in held and rec.status is Status.DO:
                    self._r.some_blocked = True  # asked again when a task finishes
                    continue
                if free <= 0:
                    starved = self._r.starved = True
                    break
                task = w.task_handle(rec)
                if self._held_back(rec, task, running):
                    self._r.some_blocked = True
                    continue
                if self._slots.limited(rec.kind) is not None and self._no_slot(rec, task):  # h26b
                    if self._slots.refused_in_a_row >= SLOT_RUN:
                        break  # a run of tasks whose keys are full: as when no worker is free
                    continue
                run = self._claim_one(rec, pair, task)
                runs[rec.id] = run
                started.append(run)
                running.append(task)
                free -= 1
            if starved:
                break
        return free, next_time

    def _claim_one(self, rec: TaskRec, pair: HandlerPair, task: Task) -> Run:
        w = self._w
        if rec.status in (_DO, _UNDO) and (rec.retry_attempts or rec.retry_since):
            # A new phase starts a new retry series (attempts stays cumulative).
            rec.retry_attempts = 0
            rec.retry_since = None
            w.dirty_task(rec)
        if rec.status in (_DO, _DOING):
            phase: Literal["do", "undo"] = "do"
            w.set_task_status(rec, _DOING)
            fn = pair.do
        else:
            phase = "undo"
            w.set_task_status(rec, _UNDOING)
            fn = pair.undo
        assert fn is not None
        if rec.at_time is not None:
            rec.at_time = None
            w.dirty_task(rec)
        run = Run(rec.id, rec.kind, phase, fn, task, pair)
        with self._r.lock:
            self._r.runs[rec.id] = run
        if log.isEnabledFor(logging.DEBUG):  # (once a step of a chain: its arguments only when logged)
            log.debug("running task %s (%s) of change %s: %s", rec.id, rec.kind, rec.change_id, phase)
        return run

    # -- running handlers -------------------------------------------------------

    def _start(self, run: Run) -> None:
        if self._leases is not None:
            self._leases.start_heartbeat()
        if run.is_async:
            self._loop.submit(handle_async(run, self._recorder.report))
        else:
            # This thread may record the outcome itself and run the next task of a chain there.
            self._workers.submit(lambda: handle(run, lambda done: self._recorder.report(done, inline=True)))

    # -- waiting and stopping ---------------------------------------------------

    def wait(self) -> None:
        """wait returns once no handler runs and every outcome is committed."""
        with self._r.lock:
            while (self._r.runs or self._r.outcomes or self._r.uncommitted) and not self._r.abandoned:
                self._r.idle.wait()

    def stop(self) -> None:
        """stop kills every tomb and waits, up to its bound, for the handlers to return."""
        with self._mu:
            with self._r.lock:
                if self._r.stopped and (self._r.abandoned or not self._r.runs):
                    return
                self._r.stopped = self._r.stopping = True
                runs = list(self._r.runs.values())
            for run in runs:
                run.tomb.kill()
            if self._leases is not None:
                self._leases.stop()  # what is abandoned below runs again elsewhere once its lease runs out
            deadline = time.monotonic() + self._stop_timeout
            with self._r.lock:
                while self._r.runs or self._r.outcomes or self._r.uncommitted:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._r.abandoned = True
                        log.error("stop: handlers of tasks %s did not return within %g s; they will run again "
                                  "at the next start", sorted(self._r.runs), self._stop_timeout)
                        self._r.have_outcomes.notify_all()
                        self._r.idle.notify_all()
                        break
                    self._r.idle.wait(left)
                self._r.have_outcomes.notify_all()
            self._workers.shutdown()
            self._loop.shutdown()

    def stop_kinds(self, *kinds: str) -> None:
        """stop_kinds kills the tombs of running tasks of the given kinds and waits for them."""
        with self._mu:
            with self._r.lock:
                runs = [run for run in self._r.runs.values() if run.kind in kinds]
            for run in runs:
                run.tomb.kill()
            with self._r.lock:
                while (any(self._r.runs.get(run.tid) is run for run in runs) or self._r.uncommitted) \
                        and not self._r.abandoned:
                    self._r.idle.wait()
