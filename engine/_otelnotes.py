# SPDX-License-Identifier: GPL-3.0-or-later
"""The tracer in the engine's process (engine._otel): what a run's span needs, and the thread runs are handed to.

Nothing here imports OpenTelemetry. A run's span is made from its timing
(engine.timings notes the task's kind with it, and for a run that failed
task_run's note: its error) and its change, read once per batch of runs
when the batch is written (batch, under the state lock the commit holds
anyway); the commit that writes the batch hands it over (submit) to a
thread of the tracer's, which wakes once for all the runs of GATHER seconds
or GATHER_RUNS runs (a wake-up per commit, each a hand-over of the GIL, was
some 2,600 more context switches per 10,000 tasks) and passes them on
(TracerBase.hand): engine._otel makes their spans. (The tracing helper
process, engine._otelproc, needs none of it: it reads the runs from the
database's rows.) At most WAITING
runs wait for the thread: past that, runs are dropped and counted (a
warning when it starts, and one with their count when it ends), and the
runner never waits for tracing. flush and close first commit the runs
waiting for a batch (engine.timings), as the helper's tracer does.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .errors import EngineError, NotFoundError

if TYPE_CHECKING:
    from ._records import TaskRec
    from .timingpack import Run
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How long the tracing thread lets runs gather once woken, at most, in seconds (the SDK's batch processor
#: exports every 5 s by default anyway); GATHER_RUNS runs handed over cut it short (a batch processor's queue
#: holds 2,048 spans by default). W2 (a run every few ms) traced with 50 ms: 20 us of the thread's CPU a run.
GATHER = 0.25
GATHER_RUNS = 256
#: How many runs may wait for the tracing thread: past that, the runs handed over are dropped (and counted).
WAITING = 65_536
#: What a run's span needs beyond its timing (engine.timings.Run), noted under the state lock (task_run, for a run
#: that failed: a run that did not has its task's kind noted instead): the task's kind and the error's message.
Noted = tuple[str, str]
#: The runs of a batch by change, each change as its span needs it: (id, kind, summary, spawn time, (ready time,
#: status's value) or None), or None for the runs of tasks in no change (TracerBase.batch: read once per batch); what
#: submit hands the thread, and hand passes on.
Batch = list[tuple[Any, list["Run"]]]


class TracerBase:
    """TracerBase notes runs for their spans and hands them to a thread of its own, which passes them on (hand).

    task_run notes a run (lock held); submit hands the runs a commit wrote
    to the thread.
    """

    #: notes says whether engine.timings notes each run for this tracer (task_run) and hands them over (submit).
    notes = True

    def __init__(self, w: UnitOfWork) -> None:
        self._w = w
        # What the thread has to do, under _mu: the batches handed over (and how many runs), the flushes waiting,
        # whether to end.
        self._mu = threading.Lock()
        self._runs: Batch = []
        self._count = 0
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
        """task_run is what the span of a run of rec's handler that failed needs beyond its timing, read now (lock
        held): its task's kind and its error (the last of its task's log)."""
        return (rec.kind, self._error(rec))

    def batch(self, runs: dict[int | None, list[Run]]) -> Batch:
        """batch is what the spans of runs written by the open transaction need (lock held): each change's record,
        read once (its ready time and status once ready). The runs of a change gone have none."""
        out: Batch = []
        records = self._w.records
        for cid, of in runs.items():
            if cid is None:
                out.append((None, of))
                continue
            try:
                crec = records.crec(cid)
            except NotFoundError:
                continue  # pruned meanwhile: its batch is not written either
            ready = None if crec.ready_time is None else (crec.ready_time, self._w.change_status(crec).value)
            out.append(((cid, crec.kind, crec.summary, crec.spawn_time, ready), of))
        return out

    def _error(self, rec: TaskRec) -> str:
        errors = [msg for _, level, msg in self._w.records.log_lines(rec) if level == "ERROR"]
        return errors[-1] if errors else ""

    def submit(self, batch: Batch) -> None:
        """submit hands the runs a commit wrote to the tracing thread; only the first after it caught up wakes it,
        and the one that makes GATHER_RUNS hurries it. Past WAITING runs waiting, they are dropped."""
        count = sum(len(of) for _, of in batch)
        with self._mu:
            if self.ended or self._count >= WAITING:
                self._dropped += count
                warn = self._dropped == count and not self.ended
                first = full = False
            else:
                warn = False
                first = not self._runs
                self._runs += batch
                self._count += count
                full = self._count >= GATHER_RUNS
        if warn:
            log.warning("tracing is behind: %d runs wait for their spans; the spans of the next runs are dropped "
                        "until it catches up", WAITING)
        if first:
            self._wake.set()
        if full and not self._hurry.is_set():
            self._hurry.set()

    def _write_runs(self) -> None:
        """_write_runs commits the runs waiting for a batch (engine.timings): their spans are made once written."""
        try:
            with self._w.state:
                self._w.timings.write_all()
        except EngineError:
            pass  # the State is closed or refuses writes: what was committed is what is traced

    def flush(self, timeout: float | None = None) -> bool:
        """flush commits the runs waiting for a batch and waits until the spans of the runs written so far are handed
        on (made and handed to the SDK); False if they were not within timeout."""
        self._write_runs()
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
                runs, self._runs, self._count = self._runs, [], 0
                flushes, self._flushes = self._flushes, []
                closing = self._closing
                dropped, self._dropped = self._dropped, 0
                self._wake.clear()  # under _mu with the take: a run handed over after it wakes the thread again
            if dropped:
                log.warning("tracing dropped the spans of %d runs (it was behind)", dropped)
            try:
                going = self.hand(runs, bool(flushes), closing)
            except Exception as e:  # the thread must go on (or end cleanly) whatever its hand-over does
                log.error("cannot trace %d runs: %s: %s", sum(len(of) for _, of in runs), type(e).__name__, e)
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

    def hand(self, runs: Batch, flush: bool, closing: bool) -> bool:
        """hand passes runs on (the tracing thread): flushed if asked, the last if closing; False ends the thread."""
        raise NotImplementedError

    def close(self) -> None:
        """close commits the runs waiting for a batch, hands on what is left and ends the thread."""
        self._write_runs()
        with self._mu:
            self._closing = True
        self._hurry.set()
        self._wake.set()
        self._thread.join()
