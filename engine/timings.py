# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings: how long each run of a task's handlers took, and each manager in slow ensure passes (snapd's timings).

The recorder notes every do and undo run as it records its outcome; the
runs are written in batches, one row of task_timing_batches per change a
batch has runs of (the view task_timings shows a row per run), by a commit
that happens anyway, once
BATCH_RUNS runs are waiting or BATCH_AGE seconds (the State's clock) have
passed since the oldest, and by the State's close and a clean stop (no commit
of their own, no cost per outcome). A crash loses at most those waiting,
never an outcome; readers in the same process see them at once. The state
engine notes the managers' durations of each ensure pass that took at least
ENSURE_THRESHOLD; those rows wait in memory for the next commit, whatever it
writes (an idle loop writes nothing). Both are bounded: the newest
TASK_RUNS_KEEP runs of each task, the newest ENSURE_KEEP ensure rows (trimmed
each time a tenth more were written, so up to 10% over). A
change's runs go with it when it is pruned.
"""

from __future__ import annotations

import json
import logging
import operator
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any

from . import _time
from .errors import DatabaseReplacedError, EngineError
from .status import Status
from .timingpack import RUN_FIELDS, Run, micros, packed, stamp, started, unpacked

if TYPE_CHECKING:
    from ._records import TaskRec
    from ._work import Work
    from .store import Store

log = logging.getLogger("engine.tracing")

#: TASK_RUNS_KEEP is how many runs of each task are kept (the newest).
TASK_RUNS_KEEP = 20
#: ENSURE_KEEP is how many rows of ensure passes are kept (the newest): 100 passes of 10 managers.
ENSURE_KEEP = 1000
#: ENSURE_THRESHOLD is how long an ensure pass must take, in all, for its managers' durations to be kept
#: (seconds; snapd keeps no span under 5 ms either). StateEngine.ensure_threshold overrides it.
ENSURE_THRESHOLD = 0.005

#: BATCH_RUNS is how many runs wait in memory at most before a commit writes them (a row of each change they are of:
#: a row costs the flush and its commit some 40 us, mostly whatever its length; at 64, 0.4 us more a run of W1).
BATCH_RUNS = 256
#: BATCH_AGE is how long the oldest run waits at most (seconds of the State's clock) before a commit writes the rows.
BATCH_AGE = 1.0
_BATCH_AGE_US = round(BATCH_AGE * 1e6)

#: How a run ended, by the task's status once its outcome was recorded.
_OUTCOMES = {
    Status.DONE: "done", Status.UNDONE: "undone", Status.ERROR: "error", Status.WAIT: "wait",
    Status.DOING: "retry", Status.UNDOING: "retry", Status.DO: "retry",
    Status.ABORT: "aborted", Status.UNDO: "aborted", Status.HOLD: "aborted",
}
#: The outcome of a run by its task's status, for every status (one another rule moved it to: in lower case).
_OUTCOME_OF = {status: _OUTCOMES.get(status) or status.value.lower() for status in Status}


@dataclass(frozen=True)
class TaskTiming:
    """TaskTiming is one run of a task's do or undo handler.

    outcome is how it ended: done, undone, retry (it runs again), wait,
    error, or aborted (its change was aborted while it ran); attempt is 1 +
    the task's attempts (retries) before this run.
    """

    task_id: str
    kind: str
    phase: str
    attempt: int
    outcome: str
    started: datetime
    duration: timedelta

    def to_json(self) -> dict[str, Any]:
        """to_json is the run as the API shows it (the duration in seconds)."""
        return {"task-id": self.task_id, "kind": self.kind, "phase": self.phase, "attempt": self.attempt,
                "outcome": self.outcome, "started": stamp(self.started),
                "duration": self.duration.total_seconds()}


@dataclass(frozen=True)
class EnsureTiming:
    """EnsureTiming is one kept ensure pass: when it started and how long each manager's ensure() took."""

    started: datetime
    managers: tuple[tuple[str, timedelta], ...]

    @property
    def duration(self) -> timedelta:
        """duration is the time of the whole pass (the managers' durations added up)."""
        return sum((d for _, d in self.managers), timedelta(0))

    def to_json(self) -> dict[str, Any]:
        """to_json is the pass as the API shows it (durations in seconds)."""
        return {"started": stamp(self.started), "duration": self.duration.total_seconds(),
                "managers": [{"name": name, "duration": d.total_seconds()} for name, d in self.managers]}


class TimingBook:
    """TimingBook holds the timings not written yet; a unit of work writes them with whatever else it commits.

    Task runs are noted with the state lock held (the recorder); ensure
    passes by the state engine's thread without it, under the book's own lock.
    """

    def __init__(self, w: Work) -> None:
        self._w = w
        self._mu = threading.Lock()
        #: runs are the task runs noted and not committed yet, as _Runs notes them.
        self.runs = _Runs(self)
        # Rows of ensure passes (under _mu): written by the next commit, lost if it fails (they are only timings).
        self._passes: list[tuple[str, str, str, float]] = []
        # Ensure rows written since the table was last trimmed: it is trimmed once a tenth of ENSURE_KEEP more.
        self._untrimmed = 0
        self._aside = False  # (aside)
        #: writer names this book's batches ("by" in task_timing_batches.runs): the tracing helper of an engine
        #: sharing a database with others (PostgreSQL) reads its own.
        self.writer = secrets.token_hex(8)
        #: tracer, when tracing is on (engine.tracing), makes a span of each run once its commit is done.
        self.tracer: Any = None
        #: on_held, when set (the Overlord's loop), is called (lock held) when committed runs start to wait.
        self.on_held: Callable[[], None] | None = None
        # The State's clock is the system's (a State's clock is set once, when it opens): a run's end is read as
        # time.time_ns(), a quarter of what UnitOfWork.now() and its datetime cost.
        self._system = getattr(w, "_clock", None) is _time.system_clock

    def pendings(self) -> tuple[Any, ...]:
        """pendings returns the write bookkeeping of task runs, for commit and rollback.

        They never ask for a commit of their own: due() says when a commit that happens anyway writes them.
        """
        return (self.runs,)

    def due(self, fresh: bool = False) -> bool:
        """due says whether the runs waiting are to be written now: BATCH_RUNS of them, the oldest BATCH_AGE
        seconds old (the State's clock), or write_all() was called (the State's close, a clean stop).

        The age is measured to the newest run noted (its end is the State's clock a moment ago); fresh reads
        the clock instead when no run was noted in this unit of work (a flush, an idle commit): a clock read
        in every pending() cost W2 several us a task.
        """
        runs = self.runs
        waiting = runs.held or runs.todo
        if not waiting or self._aside:
            return False
        if runs.force or len(runs.held) + len(runs.todo) >= BATCH_RUNS:
            return True
        now = runs.todo[-1][4] if runs.todo else micros(self._w.now()) if fresh else runs.held[-1][4]
        return now - waiting[0][4] >= _BATCH_AGE_US

    def aside(self, pending: Callable[[], bool]) -> bool:
        """aside is pending() with the runs waiting left aside: whether anything else is to be written."""
        self._aside = True
        try:
            return pending()
        finally:
            self._aside = False

    def write_now(self, commit: Callable[[], object], target: str) -> None:
        """write_now commits the runs waiting, if any, with commit (the State's close, nothing else pending)."""
        if not self.runs.held and not self.runs.todo:
            return
        self.write_all()
        try:
            commit()
        except DatabaseReplacedError:
            pass  # nothing more is written by this process: the store said why, once
        except EngineError as e:
            log.warning("cannot write the last timings to state database %s before closing: %s", target, e)

    def write_if_due(self) -> bool:
        """write_if_due is due() by the clock, for a commit with nothing else to write; if so the commit writes them."""
        if not self.due(fresh=True):
            return False
        self.write_all()
        return True

    def write_all(self) -> None:
        """write_all makes the next commit write every run waiting (the State's close, a clean stop)."""
        self.runs.force = True

    def task_run(self, rec: TaskRec, phase: str, attempt: int, elapsed: float) -> None:
        """task_run notes one run of rec's handler, once its outcome is applied (lock held).

        What is noted is what the run's row and span are made of later (flush,
        and the tracer's thread): nothing is formatted here, and its end is
        the system's clock in microseconds when the State's clock is the
        system's (a datetime would cost more than the rest of the note).
        Traced in this process (engine._otel), the task's kind rides along,
        and for a run that failed what the tracer notes (its error); the
        rest of its span (its change) is read once per batch (flush).
        """
        outcome = _OUTCOME_OF[rec.status]
        traced = None
        tracer = self.tracer
        if tracer is not None and tracer.notes:  # (the helper process's reads the rows instead)
            if outcome != "error":
                traced = rec.kind
            else:
                try:
                    traced = tracer.task_run(rec, outcome)
                except Exception as e:  # tracing must never fail the outcome it describes
                    log.error("cannot trace the run of task %s (%s): %s: %s", rec.id, rec.kind, type(e).__name__, e)
        self.runs.todo.append((rec.id, phase, attempt, outcome,
                               _time_ns() // 1000 if self._system else micros(self._w.now()), elapsed, traced,
                               rec.change_id, rec.kind))

    def ensure_pass(self, started: datetime, durations: list[tuple[str, float]]) -> None:
        """ensure_pass notes the managers' durations of one ensure pass (any thread, no lock needed)."""
        when = _time.to_text(started)
        pass_id = secrets.token_hex(8)
        with self._mu:
            self._passes += [(pass_id, when, name, seconds) for name, seconds in durations]
            if len(self._passes) > ENSURE_KEEP:  # no commit for long: the oldest go, as they would in the table
                del self._passes[:-ENSURE_KEEP]

    def flush(self, store: Store) -> None:
        """flush writes what was noted into the open write transaction: the ensure rows, and the runs if due."""
        runs = self.runs.take() if self.due(fresh=True) else []
        if not (runs or self._passes):
            return
        passes: list[tuple[str, str, str, float]] = []
        keep = None
        if self._passes:  # (those noted meanwhile go with the next commit)
            with self._mu:
                passes, self._passes = self._passes, []
            self._untrimmed += len(passes)
            if self._untrimmed >= max(1, ENSURE_KEEP // 10):
                keep, self._untrimmed = ENSURE_KEEP, 0
        by_change = self._by_change(runs)
        batches, trim = self._batches(by_change)
        store.save_timings(batches, passes, keep)
        for cid in trim:
            self._trim(store, cid)
        tracer = self.tracer
        if by_change and tracer is not None and tracer.notes:  # their spans, once this commit is done
            try:
                self.runs.spans = (tracer, tracer.batch(by_change))
            except Exception as e:  # tracing must never fail the commit it rides on
                log.error("cannot trace %d runs: %s: %s", len(runs), type(e).__name__, e)

    def _by_change(self, runs: list[Run]) -> dict[int | None, list[Run]]:
        """_by_change is runs by the change of their task (None: in none), as noted (the task's record may have left
        the cache since)."""
        if not runs:
            return {}
        cids = list(map(_CHANGE, runs))
        if cids.count(cids[0]) == len(cids):  # (most often: W1, W2)
            return {cids[0]: runs}
        by_change: dict[int | None, list[Run]] = {}
        for cid, run in zip(cids, runs, strict=True):
            by_change.setdefault(cid, []).append(run)
        return by_change

    def _batches(self, by_change: dict[int | None, list[Run]]) -> tuple[list[tuple[str, int]], list[int]]:
        """_batches are the batches of runs, one per change: its runs as JSON text (task_timing_batches.runs) and
        its id; and the changes in which a task may now have more than TASK_RUNS_KEEP runs.

        A batch holds an array per field (RUN_FIELDS, packed), each made in C: the runs of a flush cost
        under half of what a row per run did. The runs of a task in no change are dropped, and the
        statement that writes a batch drops it if its change is gone (pruned meanwhile, here or elsewhere).
        """
        batches, trim = [], []
        for cid, of in by_change.items():
            if cid is None:
                continue
            text, attempt = packed(of, self.writer)
            batches.append((text, cid))
            if attempt >= TASK_RUNS_KEEP:
                trim.append(cid)
        return batches, trim

    @staticmethod
    def _trim(store: Store, cid: int) -> None:
        """_trim keeps the newest TASK_RUNS_KEEP runs of each task of a change in its batches (rare: a task ran that
        many times), rewriting the batches that held older ones and deleting those left empty."""
        seen: dict[int, int] = {}
        updates, deleted = [], []
        for bid, text in reversed(store.timing_batches(cid)):
            batch = json.loads(text)
            names = (*RUN_FIELDS, "kind") if "kind" in batch else RUN_FIELDS
            runs = unpacked(batch, names)
            kept = []
            for run in reversed(runs):
                n = seen[run[0]] = seen.get(run[0], 0) + 1
                if n <= TASK_RUNS_KEEP:
                    kept.append(run)
            if not kept:
                deleted.append(bid)
            elif len(kept) < len(runs):
                columns = zip(*reversed(kept), strict=True)
                fields = {name: list(values) for name, values in zip(names, columns, strict=True)}
                kept_by = {"by": batch["by"]} if "by" in batch else {}
                updates.append((json.dumps({**kept_by, "since": batch["since"], **fields}, separators=(",", ":")),
                                bid))
        if updates or deleted:
            store.rewrite_timing_batches(updates, deleted)

    def task_timings(self, cid: int) -> list[TaskTiming]:
        """task_timings are the runs of a change's tasks, oldest first, those not written yet included."""
        out = [TaskTiming(str(tid), kind, phase, int(attempt), outcome, _time.from_text(started),
                          timedelta(seconds=float(duration)))
               for tid, kind, phase, attempt, outcome, started, duration in self._w.store.task_timings(cid)]
        waiting = self.runs.held + self.runs.todo
        if waiting:
            records = self._w.records
            for tid, phase, attempt, outcome, end, elapsed, _, of, _ in waiting:
                if of == cid:
                    out.append(TaskTiming(str(tid), records.trec(tid).kind, phase, attempt, outcome,
                                          started(end, elapsed), timedelta(seconds=elapsed)))
        count: dict[str, int] = {}  # the newest TASK_RUNS_KEEP of each task, as the batches' trim keeps
        for t in out:
            count[t.task_id] = count.get(t.task_id, 0) + 1
        skip = {tid: n - TASK_RUNS_KEEP for tid, n in count.items() if n > TASK_RUNS_KEEP}
        if skip:
            kept = []
            for t in out:
                if skip.get(t.task_id, 0) > 0:
                    skip[t.task_id] -= 1
                else:
                    kept.append(t)
            out = kept
        return out

    def ensure_timings(self, manager: str | None = None) -> list[EnsureTiming]:
        """ensure_timings are the kept ensure passes, oldest first (those not written yet included); with
        manager, only those in which that manager ran (its class name, in any case)."""
        rows = list(self._w.store.ensure_timings())
        with self._mu:
            rows += self._passes
        passes: dict[str, tuple[str, list[tuple[str, timedelta]]]] = {}
        for pass_id, begun, name, duration in rows:
            passes.setdefault(pass_id, (begun, []))[1].append((name, timedelta(seconds=float(duration))))
        out = [EnsureTiming(_time.from_text(begun), tuple(managers)) for begun, managers in passes.values()]
        if manager is not None:
            wanted = manager.lower()
            out = [p for p in out if any(name.lower() == wanted for name, _ in p.managers)]
        return out


_CHANGE = operator.itemgetter(7)


class _Runs:
    """_Runs are the runs noted and not written yet, oldest first, and those the open transaction wrote.

    todo are those noted in the unit of work under way (their outcomes not
    committed yet); held, those of committed outcomes waiting for a batch.
    A commit keeps the runs it did not write as held, and hands those it
    wrote, as the in-process tracer took them at the flush (a batch's
    changes read once), to the tracer; a failed commit keeps them all to
    write again (and to hand over then); a
    rolled back one forgets its own (they are noted again when their outcomes
    are recorded again) but keeps the held ones. Lists, not a Pending: a run
    is noted once and two identical rows are two runs.
    """

    __slots__ = ("book", "force", "held", "spans", "todo", "wrote_held", "wrote_todo")

    def __init__(self, book: TimingBook) -> None:
        self.book = book
        self.todo: list[Run] = []
        self.held: list[Run] = []
        self.wrote_held: list[Run] = []
        self.wrote_todo: list[Run] = []
        self.force = False
        #: spans are the runs the open transaction wrote, as the tracer took them for their spans (lock held), and
        #: that tracer: handed to it once the commit is done (engine._otelnotes).
        self.spans: tuple[Any, Any] | None = None

    def take(self) -> list[Run]:
        runs = self.held + self.todo
        self.wrote_held += self.held
        self.wrote_todo += self.todo
        self.held, self.todo = [], []
        return runs

    def committed(self) -> None:
        self.force = False
        if not self.todo and not self.wrote_held and not self.wrote_todo:
            return
        self.wrote_held, self.wrote_todo = [], []
        if self.todo:
            first = not self.held
            self.held += self.todo
            self.todo = []
            on_held = self.book.on_held
            if first and on_held is not None:
                on_held()
        if self.spans is not None:
            (tracer, batch), self.spans = self.spans, None
            try:
                tracer.submit(batch)
            except Exception as e:  # tracing must never fail the commit it follows
                log.error("cannot trace runs: %s: %s", type(e).__name__, e)

    def failed(self) -> None:
        self.spans = None  # (written again by the next commit, and taken again then)
        if self.wrote_held or self.wrote_todo:
            self.held = self.wrote_held + self.held
            self.todo = self.wrote_todo + self.todo
            self.wrote_held, self.wrote_todo = [], []

    def clear(self) -> None:
        # The held runs this transaction wrote go with it (only timings): written again, a row that made
        # the commit fail would make every later commit fail too.
        if self.wrote_held:
            log.warning("dropping the timings of %d task runs: the commit that wrote them was rolled back",
                        len(self.wrote_held))
        self.todo, self.wrote_held, self.wrote_todo = [], [], []
        self.spans = None

    def drop(self) -> None:
        """drop forgets every run waiting (the State refuses writes from now on: they can never be written)."""
        self.todo, self.held, self.wrote_held, self.wrote_todo = [], [], [], []
        self.spans = None

    def __bool__(self) -> bool:
        return bool(self.todo)
