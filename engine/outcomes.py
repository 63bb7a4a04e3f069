# SPDX-License-Identifier: GPL-3.0-or-later
"""Outcomes: how a finished handler's outcome becomes the task's next status.

One recorder thread per runner takes the outcomes of finished handlers and
applies each through one dispatch ladder (return, Retry, Wait, a retry
policy, an error), a batch per transaction. The TaskRunner owns one
OutcomeRecorder; both share the Runs table (the claimed tasks, the outcomes
waiting to be recorded, and the conditions that signal them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from .commitretry import retry_while_kept
from .errors import (
    DatabaseConflictError,
    DatabaseCorruptError,
    DatabaseError,
    DatabaseReplacedError,
    NotFoundError,
    Retry,
    Wait,
)
from .events import EventWait
from .failing import change_of, fail_task
from .ledger import HooksGuarded, Ledger, Ran, Writing
from .retries import busy_retry, is_busy, policy_retry
from .runs import HandlerPair, Run, Runs
from .status import Status
from .usercode import callable_name, error_message, exception_text, traceback_text

if TYPE_CHECKING:
    from ._records import TaskRec
    from .leases import Leases
    from .session import Session

log = logging.getLogger("engine.taskrunner")

#: FAN_IN_S bounds how long a worker whose kept run finished waits for the outcomes of the runs started with it.
FAN_IN_S = 0.002


class OutcomeRecorder:
    """OutcomeRecorder turns handlers' outcomes into statuses, on its own thread."""

    def __init__(self, session: Session, runs: Runs, pair: Callable[[TaskRec], HandlerPair],
                 quarantine: Callable[[int], None], leases: Leases | None = None, *,
                 hand_on: Callable[[list[Run], Sequence[int]], bool] | None = None,
                 start: Callable[[Run], None] | None = None) -> None:
        self._st = session.state
        # The runner's: claim what a batch made runnable, in its unit of work (and whether that
        # left nothing for an ensure pass); start a claimed run once committed.
        self._hand_on = hand_on
        self._start = start
        # Whether an outcome of the unit of work asked for an ensure pass (sent unless handed on).
        self._want_pass = False
        self._leases = leases
        self._w = session.uow
        self._ledger = Ledger(session.uow)
        self._writing = Writing(session.state)
        self._r = runs
        self._pair = pair
        self._quarantine = quarantine
        self._thread: threading.Thread | None = None

    def try_undo(self, rec: TaskRec) -> None:
        """try_undo moves an aborted or failed-elsewhere task to Undo (Hold when it cannot be undone)."""
        self._ledger.undo(rec, self._pair(rec).undo is not None)

    def report(self, run: Run, *, inline: bool = False) -> Run | None:
        """report hands a finished run over to be recorded.

        inline (a worker thread, after a sync handler): when no thread is
        recording, this one records, the batch of its outcome and those that
        come meanwhile, and returns a run it claimed for this thread to run
        next (the next task of a chain, with no thread woken in between).
        Otherwise, and for async handlers, the recorder thread records it
        (started if needed).
        """
        with self._r.lock:
            if self._r.abandoned:
                log.warning("task %s (%s) returned after the runner stopped; it runs again at next start",
                            run.tid, run.kind)
                if self._r.runs.get(run.tid) is run:
                    del self._r.runs[run.tid]
                return None
            fan = self._r.fan
            if fan:
                fan.discard(run.tid)
            self._r.outcomes.append(run)
            if self._r.recording:
                if self._r.fan_waiting and not fan:
                    self._r.fan_in.notify()
                return None  # the thread recording takes it before it stops (_take): nobody else to wake
            if not inline:
                self._r.have_outcomes.notify()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._record_loop, name="engine-recorder", daemon=True)
                    self._thread.start()
                return None
            self._r.recording = True
            batch: list[Run] | None = None
            if fan:
                # The others started with it wait for the GIL this thread held to run its handler: their
                # outcomes are recorded with its own, in one transaction (bounded: one may run long).
                self._r.fan_waiting = True
                self._r.fan_in.wait_for(lambda: not fan or self._r.abandoned, FAN_IN_S)
                self._r.fan_waiting = False
                fan.clear()
            else:
                batch = self._taken()  # (taken in this section: its own outcome at least)
        return self._lead(batch)

    def _lead(self, batch: list[Run] | None) -> Run | None:
        """_lead records batches on this worker thread until none is left; it returns a run to execute here.

        batch: the first, taken already (None: taken here).
        """
        kept: Run | None = None
        while True:
            if batch is None:
                batch = self._take()
                if batch is None:
                    return kept
            if kept is not None:
                self._start_run(kept)  # more outcomes came: not held back while they are recorded
                kept = None
            others = []
            for run in self._record_batch(batch):
                if kept is None and run.phase != "cleanup" and not run.is_async:
                    kept = run
                else:
                    others.append(run)
            with self._r.lock:  # (before they start: one may report at once)
                self._r.fan.clear()
                if others:
                    if kept is not None:
                        self._r.fan.add(kept.tid)
                        self._r.fan.update(run.tid for run in others if not run.is_async)
                    batch = None
                else:
                    # Nothing to start first: the next batch is taken in this section (a chain's step: none).
                    batch = self._taken()
                    if batch is None:
                        return kept
            for run in others:
                self._start_run(run)

    def _take(self) -> list[Run] | None:
        """_take takes the outcomes to record (None: none left, and this thread no longer records)."""
        with self._r.lock:
            return self._taken()

    def _taken(self) -> list[Run] | None:
        """_taken is _take with the lock of the runs held."""
        r = self._r
        if not r.outcomes or r.abandoned:
            r.recording = False
            if r.outcomes:
                r.have_outcomes.notify()
            return None
        batch, r.outcomes = r.outcomes, []
        r.uncommitted += len(batch)
        return batch

    def _take_late(self, batch: list[Run]) -> None:
        """_take_late adds to batch the outcomes reported while it took the state lock (which lets them run)."""
        with self._r.lock:
            if self._r.outcomes and not self._r.abandoned:
                late, self._r.outcomes = self._r.outcomes, []
                self._r.uncommitted += len(late)
                batch += late

    def _record_batch(self, batch: list[Run]) -> list[Run]:
        """_record_batch commits a batch of outcomes; it returns the runs claimed with them, to start."""
        started: list[Run] = []
        try:
            self._commit_batch(batch, started)
        except BaseException:
            log.exception("internal error: cannot record the outcomes of tasks %s", [r.tid for r in batch])
            self._release(batch)
        finally:
            with self._r.lock:
                self._r.uncommitted -= len(batch)
                self._r.idle.notify_all()
        return started

    def _start_run(self, run: Run) -> None:
        with self._r.lock:
            if self._r.stopping:
                run.tomb.kill()  # claimed as stop() began: it runs with its tomb dead, as at a pass
        if self._start is not None:
            self._start(run)

    def _record_loop(self) -> None:
        """_record_loop applies finished handlers' outcomes, one transaction per batch.

        Nothing that goes wrong while recording stops this thread: every
        failure is logged, and the tasks concerned fail (or are retried).
        """
        while True:
            with self._r.lock:
                while not self._r.outcomes or self._r.recording:
                    if self._r.abandoned or (self._r.stopped and not self._r.runs and not self._r.uncommitted):
                        self._thread = None
                        return
                    self._r.have_outcomes.wait(1.0)
                self._r.recording = True
            while (batch := self._take()) is not None:
                for run in self._record_batch(batch):
                    self._start_run(run)

    def _prefetch(self, batch: list[Run]) -> None:
        """_prefetch loads, on a shared store, the batch's tasks, their edges and lanes and their leases at once.

        Each unit of work reads afresh there: one query for the batch instead of several per outcome.
        """
        if self._leases is None:
            return
        ids = [run.tid for run in batch]
        with contextlib.suppress(NotFoundError, DatabaseCorruptError):  # each outcome deals with its own task
            self._w.records.load_graph(self._w.records.trecs(ids))
        self._leases.prefetch(ids)

    def _hold(self, batch: list[Run]) -> None:
        """_hold puts runs whose outcomes were rolled back back among the running ones."""
        with self._r.lock:
            for run in batch:
                self._r.runs.setdefault(run.tid, run)

    def _release(self, batch: list[Run]) -> None:
        """_release frees the workers of runs whose outcomes are dealt with."""
        with self._r.lock:
            for run in batch:
                if self._r.runs.get(run.tid) is run:
                    del self._r.runs[run.tid]

    def _commit_batch(self, batch: list[Run], started: list[Run]) -> None:
        """_commit_batch records a batch of outcomes in one transaction.

        While the database is busy or full the recorded outcomes stay in
        memory, their tasks still count as running, and the commit is
        retried with backoff; a batch that cannot be committed for another
        reason is recorded one outcome at a time. The tasks the outcomes made
        runnable may be claimed in the same transaction (the runner's
        hand_on) and are started once it is committed.
        """
        recorded = False
        # Handlers that committed their own Done: no status written, the unit relaxed (below), begun later.
        own = all(run.own_done and run.outcome is None for run in batch)

        def record() -> None:
            nonlocal recorded
            try:
                with self._st if own else self._writing:
                    if not recorded:  # recorded once: a kept unit of work holds them until it commits
                        recorded = True
                        self._take_late(batch)
                        self._want_pass = False
                        if own and all(run.own_done and run.outcome is None for run in batch):
                            # Their handlers committed their Done: this unit records no status, only each
                            # run's time and the claim of what it unblocked, which a pass would claim again
                            # after a crash: without its own sync, as a pass's claim (docs/runner.md).
                            self._w.relax_commit()
                        if self._leases is not None:
                            self._prefetch(batch)
                        try:
                            for run in batch:
                                self._record_or_fail(run)
                        finally:
                            if self._leases is not None:
                                self._leases.forget()
                        # The workers are free again as of this transaction: a pass
                        # (which reads the runs under the state lock) sees them free
                        # exactly when it sees the outcomes committed.
                        self._release(batch)
                        self._wake(self._handed_on(batch, started))
                    else:
                        self._release(batch)
            except DatabaseConflictError:
                recorded = False  # rolled back: record them again on what the database holds now
                self._drop(started)
                self._hold(batch)
                raise

        try:
            retry_while_kept(record, self._abandoned)
        except DatabaseReplacedError:
            # No commit of this process can land any more: the store said why, once; the tasks stay as the
            # database holds them (Doing: run again by the next writer).
            self._drop(started)
            self._release(batch)
            return
        except DatabaseError as e:
            self._drop(started)
            # The unit was rolled back: record each outcome on its own, so
            # that one that cannot be committed fails only its task.
            log.error("cannot commit the outcomes of tasks %s (%s); recording them one by one",
                      [r.tid for r in batch], e)
            for run in batch:
                self._commit_alone(run)
            return
        except BaseException:
            self._drop(started)
            raise

    def _handed_on(self, batch: list[Run], started: list[Run]) -> bool:
        """_handed_on asks the runner to hand on what the batch made runnable; it never raises an Exception.

        What it claimed before a failure is committed with the outcomes and started; the outcomes are
        recorded whatever happens (the loop then passes, as without it).
        """
        if self._hand_on is None:
            return False
        try:
            if len(batch) == 1:  # (a chain's step: no list comprehension made and called)
                return self._hand_on(started, (batch[0].tid,) if batch[0].own_done else ())
            return self._hand_on(started, [run.tid for run in batch if run.own_done])
        except DatabaseError:
            raise  # the store rolled the transaction back: the outcomes are recorded again (or one by one)
        except Exception:
            log.exception("internal error: cannot hand on the tasks after those of outcomes %s", [r.tid for r in batch])
            return False

    def _wake(self, handed_on: bool) -> None:
        """_wake asks for the ensure pass the outcomes asked for, unless what they made runnable was handed on."""
        if self._want_pass and not handed_on:
            self._st.ensure_before(0)
        self._want_pass = False

    def _drop(self, started: list[Run]) -> None:
        """_drop forgets the runs claimed in a unit of work that was not committed (their tasks run later)."""
        if not started:
            return
        with self._r.lock:
            for run in started:
                if self._r.runs.get(run.tid) is run:
                    del self._r.runs[run.tid]
            self._r.idle.notify_all()
        started.clear()

    def _retry_while_kept(self, fn: Callable[[], None]) -> None:
        """_retry_while_kept runs fn until it is not refused by a busy or full database (or the runner gives up)."""
        retry_while_kept(fn, self._abandoned)

    def _abandoned(self) -> bool:
        return self._r.abandoned

    def _commit_alone(self, run: Run) -> None:
        """_commit_alone records one outcome in its own transaction; failing that, fails its task."""
        recorded = False

        def record() -> None:
            nonlocal recorded
            try:
                with self._st:
                    if not recorded:
                        recorded = True
                        self._want_pass = False
                        self._record_or_fail(run)
                        self._wake(False)
                    self._release([run])
            except DatabaseConflictError:
                recorded = False
                self._hold([run])
                raise

        try:
            self._retry_while_kept(record)
            return
        except DatabaseReplacedError:
            self._release([run])  # as in _commit_batch: nothing more is written by this process
            return
        except DatabaseError as e:
            error: BaseException = e
        try:
            with self._st, self.hooks_guarded():
                self._fail_unrecorded(run, f"cannot record the outcome of its handler: {error_message(error)}")
                self._release([run])
        except Exception as e:
            log.error("cannot record that task %s (%s) failed either (%s); it is left alone until the "
                      "database changes", run.tid, run.kind, e)
            self._release([run])
            self._quarantine(run.tid)
        if run.own_done:
            self._st.ensure_before(0)  # what its handler's Done made runnable: a pass claims it

    def hooks_guarded(self) -> HooksGuarded:
        """hooks_guarded collects what status hooks raise (recording outcomes, a pass) instead of raising it."""
        return HooksGuarded(self._w)

    def _record_or_fail(self, run: Run) -> None:
        """_record_or_fail applies one outcome; a failure to do so fails the task instead.

        What user code raises while the outcome is recorded (a status hook,
        a retry policy, str() of the handler's exception), BaseException
        included, is that code's failure: the task ends in Error saying so,
        and the other outcomes of the batch are recorded.
        """
        with self.hooks_guarded() as failures:  # (a class, not a generator: entered once an outcome)
            start = len(failures)
            try:
                self._record(run)
                hook_failed = failures[start:]
                if not hook_failed:
                    return
                fn, _, exc = hook_failed[0]
                reason = f"its status hook {callable_name(fn)} raised {exception_text(exc)}"
                force = True  # it may be Done already: the hook's failure puts it in Error
            except DatabaseConflictError:
                raise  # another host, or a server restart: the unit of work is rolled back and recorded again
            except BaseException as e:
                log.error("cannot record the outcome of task %s (%s): %s", run.tid, run.kind, traceback_text(e))
                reason = f"cannot record the outcome of its handler: {error_message(e)}"
                force = False
            del failures[start:]
            try:
                self._fail_unrecorded(run, reason, force=force)
            except BaseException as e:
                log.error("cannot fail task %s (%s) either (%s); it is left alone", run.tid, run.kind,
                          exception_text(e))
                self._quarantine(run.tid)
            finally:
                del failures[start:]  # what the hooks raise again while it fails is said above

    def _fail_unrecorded(self, run: Run, reason: str, *, force: bool = False) -> None:
        """_fail_unrecorded puts a task whose outcome cannot be recorded in Error, saying why.

        force: also when it is ready already (a hook failed on its move to Done).
        """
        w = self._w
        rec = w.records.trec(run.tid)
        if rec.status is Status.ERROR or (rec.status.ready and not force):
            return
        self.failed(rec, RuntimeError(reason), change_of(rec), run.ran)

    def _record(self, run: Run) -> None:
        """_record is the dispatch ladder: one outcome, one verb of the ledger."""
        w = self._w
        if run.own_done:
            w.changeset.unblocked.add(Status.DONE)  # its handler's Done: handed on here, or the commit wakes for it
        try:
            rec = w.records.trec(run.tid)
        except NotFoundError:
            log.warning("task %s (%s) finished but no longer exists", run.tid, run.kind)
            return
        if self._leases is not None and run.phase != "cleanup" and not self._leases.still_ours(run.tid):
            # Another runner reaped it (this one's lease ran out): it runs there again.
            log.warning("task %s (%s) finished after its lease ran out; its outcome is dropped and it runs "
                        "again elsewhere", run.tid, run.kind)
            return
        exc = run.outcome
        if run.phase == "cleanup":
            if exc is not None:
                log.debug("cleaning task %s: %s", run.tid, error_message(exc))
            self._ledger.cleaned(rec, exc is None)
            return
        ran = run.ran = Ran(run.phase, run.elapsed, rec.attempts + 1)
        if self._r.some_blocked or self._r.starved:
            self._want_pass = True  # blocked or waiting tasks may start now
        if exc is None:  # (asked first: a chain's every step)
            if self._ledger.finish(rec, ran):
                self._want_pass = True  # what waits for it may run now
            return
        scheduled = False
        if not isinstance(exc, (Retry, Wait)):
            if self._r.stopping:
                exc = Retry()  # errors while stopping may come from the stop itself
            elif is_busy(exc):
                # Only the database failed the handler (its own write was kept
                # and is written by a later commit): run it again, later.
                exc = busy_retry(w, rec, exc)
                scheduled = True
            elif run.pair.retry is not None and isinstance(exc, Exception):
                exc = policy_retry(w, run.pair.retry, rec, exc)
                scheduled = isinstance(exc, Retry)
        undoable = run.pair.undo is not None
        if isinstance(exc, Retry):
            # A policy's retry is due at its time even when that is now;
            # a handler's Retry(after=0) waits for the next ensure (snapd).
            when = w.now() + timedelta(seconds=exc.after) if exc.after > 0 or scheduled else None
            note = str(exc.reason) if exc.reason and exc is run.outcome else ""
            self._ledger.retry_at(rec, ran, when, undoable=undoable, asked=isinstance(run.outcome, Retry), note=note)
            log.debug("task %s (%s) of %s will be retried: %s", rec.id, rec.kind, change_of(rec),
                      exc.reason or "retry")
        elif isinstance(exc, Wait):
            self._ledger.park(rec, ran, exc.waited_status, undoable=undoable, note=str(exc.reason or ""),
                              event=exc if isinstance(exc, EventWait) else None)
        else:
            self.failed(rec, exc, change_of(rec), ran)

    def failed(self, rec: TaskRec, exc: BaseException, chg: str, ran: Ran | None = None) -> None:
        """failed puts a task in Error, logs why, and aborts its lanes (snapd's rules); ran: the run that failed."""
        fail_task(self._ledger, self._r, rec, exc, chg, ran)
