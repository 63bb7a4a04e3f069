# SPDX-License-Identifier: GPL-3.0-or-later
"""Ledger: what a handler's outcome does to its task, one verb per outcome.

The recorder (engine.outcomes) decides what an outcome is (a return, a
Retry, a Wait, a retry policy's answer, an error); the Ledger writes all
that outcome implies into the unit of work in one call: finish (Done or
Undone), retry_at, park (Wait, or Hold), fail (Error). Each also records
the run itself (its time on the task, the end of its lease, its timing),
once (Ran), and the move of an aborted task to Undo instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ._values import clean_text
from .events import EventWait, park
from .status import Status
from .statusrules import abort_lanes

if TYPE_CHECKING:
    from ._records import TaskRec
    from .session import StateFace
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.taskrunner")
# (Status's members as names: Enum's class attribute lookup costs some 80 ns, several times a step.)
_DOING, _DONE, _UNDOING, _UNDONE, _ABORT, _UNDO = (Status.DOING, Status.DONE, Status.UNDOING, Status.UNDONE,
                                                  Status.ABORT, Status.UNDO)


@dataclass
class Ran:
    """Ran is one run of a handler, as its task records it: its phase, how long, which attempt."""

    phase: Literal["do", "undo"]
    elapsed: float
    #: attempt is the number the timing gives the run (the task's attempts before it, plus one).
    attempt: int
    #: started: its time on the task and the end of its lease are recorded; noted: its timing is (each once,
    #: whichever verbs record the outcome: fail after a verb that raised).
    started: bool = False
    noted: bool = False


class Ledger:
    """Ledger writes the outcomes of handlers into a State's unit of work (lock held)."""

    def __init__(self, w: UnitOfWork) -> None:
        self._w = w

    def finish(self, rec: TaskRec, ran: Ran) -> bool:
        """finish records a handler that returned: Doing becomes Done, Undoing Undone, Abort Undo.

        It returns whether what waits for the task may run now and no work
        hook wakes the loop for it (the recorder then asks for a pass).
        """
        w = self._w
        self._start(rec, ran)
        status = rec.status
        if status is _DOING:
            w.set_task_status(rec, _DONE)
            status = _DONE
        elif status is _UNDOING:
            w.set_task_status(rec, _UNDONE)
            status = _UNDONE
        wake = False
        if status is _ABORT:
            w.set_task_status(rec, _UNDO)  # it finished its do: undo it now
            w.state.ensure_before(0)
        elif (status is _DONE and w.records.halt_ids(rec)) \
                or (status is _UNDONE and w.records.wait_ids(rec)):
            wake = w.work_hook is None  # with a work hook, the commit wakes the loop
        self._end(rec, ran)
        return wake

    def retry_at(self, rec: TaskRec, ran: Ran, when: datetime | None, *, undoable: bool, asked: bool = False,
                 note: str = "") -> None:
        """retry_at records a run to be tried again: at when (None: at the next ensure pass), or undone if aborted.

        asked: the handler raised Retry (one more attempt counted); note is
        the line its log gets.
        """
        w = self._w
        self._start(rec, ran)
        if asked:
            rec.attempts += 1
        if rec.status is Status.ABORT:
            self._undo(rec, undoable)
        elif when is not None and not rec.status.ready:
            rec.at_time = when
            w.state.ensure_before(max(0.0, (when - w.now()).total_seconds()))
        if note:
            w.add_log(rec, "INFO", clean_text(note, f"log line of task {rec.id}"))
        self._end(rec, ran)

    def park(self, rec: TaskRec, ran: Ran, waited: Status, *, undoable: bool, note: str = "",
             event: EventWait | None = None) -> None:
        """park records a run that left its task waiting (Wait, then waited), or undone if aborted.

        event: the task waits for that event (engine.events), recorded with the status.
        """
        w = self._w
        self._start(rec, ran)
        if rec.status is Status.ABORT:
            self._undo(rec, undoable)
        else:
            if note:
                w.add_log(rec, "INFO", clean_text(note, f"log line of task {rec.id}"))
            if not isinstance(waited, Status) or waited in (Status.DEFAULT, Status.WAIT):
                raise ValueError(f"cannot set task {rec.id} to wait for {waited!r}: "
                                 "give the status it takes after the wait, not Default or Wait")
            if rec.waited_status is not waited:
                rec.waited_status = waited
            w.set_task_status(rec, Status.WAIT)
            if event is not None:
                park(w, rec, event)
        self._end(rec, ran)

    def fail(self, rec: TaskRec, message: str, ran: Ran | None = None) -> list[int]:
        """fail puts a task in Error with message in its log, and aborts its lanes (snapd's rules).

        It returns the tasks of its change that are in Abort now (their
        running handlers are to be stopped) when some task of the change is
        not ready (then an ensure pass is asked for), else [].
        """
        w = self._w
        if ran is not None:
            self._start(rec, ran)
        aborted: list[int] = []
        if rec.change_id is not None:
            crec = w.records.crec(rec.change_id)
            abort_lanes(w, crec, list(w.records.lanes(rec) or [0]), set(), set())
            recs = w.records.change_trecs(crec)
            if any(not t.status.ready for t in recs):
                aborted = [t.id for t in recs if t.status is Status.ABORT]
                w.state.ensure_before(0)
        w.set_task_status(rec, Status.ERROR)
        w.add_log(rec, "ERROR", message)
        if ran is not None:
            self._end(rec, ran)
        return aborted

    def cleaned(self, rec: TaskRec, ok: bool) -> None:
        """cleaned records a cleanup run: the task is clean unless its cleanup failed (ok False)."""
        w = self._w
        w.end_lease(rec.id)
        if ok:
            w.task_handle(rec).set_clean()

    def undo(self, rec: TaskRec, undoable: bool) -> None:
        """undo moves an aborted or failed-elsewhere task to Undo (Hold when it cannot be undone)."""
        self._undo(rec, undoable)

    def _undo(self, rec: TaskRec, undoable: bool) -> None:
        w = self._w
        if rec.status is Status.ABORT and not undoable:
            # Stopped in flight and cannot be undone: hold it, so it does not look finished.
            w.set_task_status(rec, Status.HOLD)
            if w.records.wait_ids(rec):
                w.state.ensure_before(0)
        else:
            w.set_task_status(rec, Status.UNDO)
            w.state.ensure_before(0)

    def _start(self, rec: TaskRec, ran: Ran) -> None:
        """_start records the run's time on the task and the end of its lease (once)."""
        if ran.started:
            return
        ran.started = True
        w = self._w
        w.end_lease(rec.id)
        if ran.phase == "do":
            rec.doing_time += ran.elapsed
        else:
            rec.undoing_time += ran.elapsed
        w.dirty_task(rec)

    def _end(self, rec: TaskRec, ran: Ran) -> None:
        """_end records the run's timing (once), with its outcome (engine.timings)."""
        if ran.noted:
            return
        ran.noted = True
        self._w.timings.task_run(rec, ran.phase, ran.attempt, ran.elapsed)


class HooksGuarded:
    """HooksGuarded collects what status hooks raise while outcomes are recorded (OutcomeRecorder.hooks_guarded).

    A class, not a generator context manager: it is entered twice a step of a chain.
    """

    __slots__ = ("_outer", "_w")

    def __init__(self, w: UnitOfWork) -> None:
        self._w = w
        self._outer: list[tuple[Any, Any, BaseException]] | None = None

    def __enter__(self) -> list[tuple[Any, Any, BaseException]]:
        w = self._w
        outer = self._outer = w.hook_failures
        failures = outer if outer is not None else []
        w.hook_failures = failures
        return failures

    def __exit__(self, *exc: object) -> None:
        self._w.hook_failures = self._outer


class Writing:
    """Writing is `with state:` for a unit of work that writes: its write transaction opens with the lock.

    (State.lock(begin=True): the check for another connection's commit is then made inside it.)
    """

    __slots__ = ("_st",)

    def __init__(self, st: StateFace) -> None:
        self._st = st

    def __enter__(self) -> None:
        self._st.lock(begin=True)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._st.__exit__(exc_type, exc, tb)
