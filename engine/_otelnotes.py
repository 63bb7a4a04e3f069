# SPDX-License-Identifier: GPL-3.0-or-later
"""The tracer in the engine's process (engine._otel): the notes a run's span needs, and the thread runs are handed to.

Nothing here imports OpenTelemetry. A tracer notes what a run's span needs
beside the run's timing (task_run: a tuple, shared by the runs of a kind in
a change, under the state lock the recorder holds anyway); the commit that
writes the run's outcome hands the runs it wrote over (submit) to a thread
of the tracer's, which wakes once for all the runs of GATHER seconds or
GATHER_RUNS runs (a wake-up per commit, each a hand-over of the GIL, was
some 2,600 more context switches per 10,000 tasks) and passes them on
(TracerBase.hand): engine._otel makes their spans. (The tracing helper
process, engine._otelproc, needs none of it: it reads the runs from the
database's rows.) At most WAITING
runs wait for the thread: past that, runs are dropped and counted (a
warning when it starts, and one with their count when it ends), and the
runner never waits for tracing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._records import TaskRec
    from .timings import Run
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How long the tracing thread lets runs gather once woken, at most, in seconds (the SDK's batch processor
#: exports every 5 s by default anyway); GATHER_RUNS runs handed over cut it short (a batch processor's queue
#: holds 2,048 spans by default). W2 (a run every few ms) traced with 50 ms: 20 us of the thread's CPU a run.
GATHER = 0.25
GATHER_RUNS = 256
#: How many runs may wait for the tracing thread: past that, the runs handed over are dropped (and counted).
WAITING = 65_536
#: How many changes' notes are kept for their runs to share: past that, they are forgotten and made again.
_NOTES = 1024

#: What a run's span needs beyond its timing (engine.timings.Run), noted under the state lock: the task's kind,
#: the error's message (None unless the run failed), and its change as (id, kind, summary, spawn time, (ready
#: time, status's value) or None), or None for a task in no change.
Noted = tuple[str, "str | None", "tuple[Any, ...] | None"]


class TracerBase:
    """TracerBase notes runs for their spans and hands them to a thread of its own, which passes them on (hand).

    task_run notes a run (lock held); submit hands the runs a commit wrote
    to the thread.
    """

    #: notes says whether engine.timings notes each run for this tracer (task_run) and hands them over (submit).
    notes = True

    def __init__(self, w: UnitOfWork) -> None:
        self._w = w
        # The notes shared by runs (task_run, under the state lock): by change id and task kind.
        self._notes: dict[tuple[int, str], Noted] = {}
        # What the thread has to do, under _mu: the runs handed over, the flushes waiting, whether to end.
        self._mu = threading.Lock()
        self._runs: list[Run] = []
        self._flushes: list[threading.Event] = []
        self._closing = False
        #: ended says that the thread has ended (closed, or its helper process died): runs handed over are dropped.
        self.ended = False
        self._dropped = 0
        self._wake = threading.Event()
        self._hurry = threading.Event()  # a flush or close cuts the gathering short
        #: cpu_seconds is the CPU time the tracing thread has spent so far (bench.timings shows it per task).
        self.cpu_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="engine-tracing", daemon=True)

    def task_run(self, rec: TaskRec, outcome: str) -> Noted:
        """task_run is what the span of one run of rec's handler needs beyond its timing, read now (lock held).

        The runs of one kind in a change that is not ready, without an error,
        share one note (kept until _NOTES changes have notes).
        """
        cid = rec.change_id
        if cid is None:
            return (rec.kind, self._error(rec) if outcome == "error" else None, None)
        crec = self._w.records.crec(cid)
        if crec.ready_time is not None or outcome == "error":
            ready = None if crec.ready_time is None else (crec.ready_time, self._w.change_status(crec).value)
            return (rec.kind, self._error(rec) if outcome == "error" else None,
                    (cid, crec.kind, crec.summary, crec.spawn_time, ready))
        key = (cid, rec.kind)
        noted = self._notes.get(key)
        if noted is None:
            if len(self._notes) >= _NOTES:
                self._notes.clear()
            noted = self._notes[key] = (rec.kind, None, (cid, crec.kind, crec.summary, crec.spawn_time, None))
        return noted

    def _error(self, rec: TaskRec) -> str:
        errors = [msg for _, level, msg in self._w.records.log_lines(rec) if level == "ERROR"]
        return errors[-1] if errors else ""

    def submit(self, runs: list[Run]) -> None:
        """submit hands the runs a commit wrote to the tracing thread; only the first after it caught up wakes it,
        and the one that makes GATHER_RUNS hurries it. Past WAITING runs waiting, they are dropped."""
        with self._mu:
            if self.ended or len(self._runs) >= WAITING:
                self._dropped += len(runs)
                warn = self._dropped == len(runs) and not self.ended
                first = full = False
            else:
                warn = False
                first = not self._runs
                self._runs += runs
                full = len(self._runs) >= GATHER_RUNS
        if warn:
            log.warning("tracing is behind: %d runs wait for their spans; the spans of the next runs are dropped "
                        "until it catches up", WAITING)
        if first:
            self._wake.set()
        if full and not self._hurry.is_set():
            self._hurry.set()

    def flush(self, timeout: float | None = None) -> bool:
        """flush waits until the spans of the runs submitted so far are handed on (made and handed to the SDK in
        this process; made and exported by the helper process); False if they were not within timeout."""
        done = threading.Event()
        with self._mu:
            if self.ended:
                return False
            self._flushes.append(done)
        self._hurry.set()
        self._wake.set()
        return done.wait(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            # A busy runner's runs gather meanwhile: one wake-up (and GIL hand-over) per GATHER or GATHER_RUNS runs,
            # not per commit.
            self._hurry.wait(GATHER)
            with self._mu:
                self._hurry.clear()
                runs, self._runs = self._runs, []
                flushes, self._flushes = self._flushes, []
                closing = self._closing
                dropped, self._dropped = self._dropped, 0
                self._wake.clear()  # under _mu with the take: a run handed over after it wakes the thread again
            if dropped:
                log.warning("tracing dropped the spans of %d runs (it was behind)", dropped)
            try:
                going = self.hand(runs, bool(flushes), closing)
            except Exception as e:  # the thread must go on (or end cleanly) whatever its hand-over does
                log.error("cannot trace %d runs: %s: %s", len(runs), type(e).__name__, e)
                going = True
            if closing or not going:
                with self._mu:  # ended before the flushes are answered: a flush says whether its spans went
                    self.ended = True
                    flushes += self._flushes
                    self._flushes = []
            for done in flushes:
                done.set()
            if self.ended:
                return

    def hand(self, runs: list[Run], flush: bool, closing: bool) -> bool:
        """hand passes runs on (the tracing thread): flushed if asked, the last if closing; False ends the thread."""
        raise NotImplementedError

    def close(self) -> None:
        """close hands on what is left and ends the thread."""
        with self._mu:
            self._closing = True
        self._hurry.set()
        self._wake.set()
        self._thread.join()
