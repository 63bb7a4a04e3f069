# SPDX-License-Identifier: GPL-3.0-or-later
"""Why a task is not running: one reason, computed from its row, its graph and (given) its runner.

why_not(task, runner) answers for a task that is not Done and whose
handler does not run now: waiting for tasks (which, in what status),
scheduled for a time, blocked by a predicate (which), held, its change
aborted, no handler for its kind, damaged... The reasons and the JSON shape
are in docs/runner.md and docs/daemon.md. Rules added with
add_why_not_rule (the runner's event waits and concurrency limits, say) see
the engine's answer and may replace it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import _time
from .errors import DatabaseCorruptError, NotFoundError
from .runs import HandlerPair, Runs
from .status import Status
from .task import record_of, work_of
from .usercode import callable_name, exception_text

if TYPE_CHECKING:
    from ._records import TaskRec
    from ._work import Work
    from .leases import Leases
    from .task import Task

log = logging.getLogger("engine.taskrunner")

#: The reasons why_not gives (WhyNot.reason); docs/runner.md tells each.
WAITING_FOR_TASKS = "waiting-for-tasks"
SCHEDULED = "scheduled"
BLOCKED = "blocked"
WAITING_FOR_WORKER = "waiting-for-worker"
RUNNABLE = "runnable"
INTERRUPTED = "interrupted"
NO_HANDLER = "no-handler"
WAITING = "waiting"
HELD = "held"
CHANGE_ABORTED = "change-aborted"
FAILED = "failed"
UNDONE = "undone"
NO_CHANGE = "no-change"
DAMAGED = "damaged"
#: Reserved for the runner's event waits and concurrency limits (rules add them).
WAITING_FOR_EVENT = "waiting-for-event"
WAITING_FOR_SLOT = "waiting-for-slot"

#: How many tasks a reason lists at most (a fan-in of thousands names the first ones and counts the rest).
MAX_TASKS = 20


@dataclass(frozen=True)
class TaskRef:
    """TaskRef names a task a reason is about: its id, kind, status and change (ids as strings)."""

    id: str
    kind: str
    status: Status
    change: str | None

    def to_json(self) -> dict[str, Any]:
        """to_json is the task as the API shows it in a reason: {"id", "kind", "status", "change"}."""
        return {"id": self.id, "kind": self.kind, "status": self.status.value, "change": self.change}

    def __str__(self) -> str:
        return f"task {self.id} ({self.kind}, {self.status.value})"


@dataclass(frozen=True)
class WhyNot:
    """WhyNot is why a task is not running: a reason word, a line for people, the tasks it is about.

    extra holds the fields some reasons add (at, retry, predicates,
    waited-status), as JSON values.
    """

    reason: str
    message: str
    tasks: tuple[TaskRef, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """to_json is the reason as GET /v2/changes/{id} shows it: {"reason", "message", "tasks", ...extra}."""
        out: dict[str, Any] = {"reason": self.reason, "message": self.message,
                               "tasks": [t.to_json() for t in self.tasks]}
        out.update(self.extra)
        return out

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class Runner(Protocol):
    """Runner is what why_not asks of a runner (engine.taskrunner.TaskRunner is the one): this module sits below it."""

    def why_not_tasks(self, tasks: Iterable[Task]) -> list[WhyNot | None]:
        """why_not_tasks is why_not for many tasks, with what this runner knows."""


#: WhyNotRule is fn(task, runner, why) -> WhyNot | None: called with the lock held for a task that is not
#: ready and not running, with the TaskRunner that asks (None without one) and the engine's answer (or the
#: previous rule's); it returns a WhyNot to give instead, or None to keep it. The runner is typed as the rule
#: declares it (a TaskRunner, usually): this module sits below engine.taskrunner and does not name it.
WhyNotRule = Callable[["Task", Any, WhyNot], "WhyNot | None"]

_rules: list[WhyNotRule] = []


def add_why_not_rule(rule: WhyNotRule) -> None:
    """add_why_not_rule adds a rule that may give another reason for tasks that are not ready and not running.

    The extension point for what the engine itself does not know (an event a
    task waits for, a concurrency slot): rules are asked in the order they
    were added, after the engine's own rules, each seeing the answer so far.
    """
    if not callable(rule):
        raise TypeError(f"cannot add why-not rule {rule!r}: it is not callable")
    if rule not in _rules:
        _rules.append(rule)


def remove_why_not_rule(rule: WhyNotRule) -> None:
    """remove_why_not_rule removes a rule added with add_why_not_rule (nothing if it is not there)."""
    if rule in _rules:
        _rules.remove(rule)


def why_not(task: Task, runner: Runner | None = None) -> WhyNot | None:
    """why_not says why task is not running, or None when it is Done or its handler runs now.

    Call it with the lock held. With the runner that would run the task, the
    answer also covers what only the runner knows: its handlers (no-handler),
    its blocked predicates (asked now, as a pass would), its busy workers,
    its running handlers and the rows it found damaged. Without one (a
    database read from a file), a Doing or Undoing task counts as running.
    """
    return why_not_tasks([task], runner)[0]


def why_not_tasks(tasks: Iterable[Task], runner: Runner | None = None) -> list[WhyNot | None]:
    """why_not_tasks is why_not for many tasks (a change's, say), reading what they share once."""
    if runner is not None:
        return runner.why_not_tasks(tasks)
    return reasons(tasks, None)


@dataclass(frozen=True)
class RunnerView:
    """RunnerView is what the reasons read of a TaskRunner (it makes one per question: TaskRunner.why_not_tasks)."""

    #: runner is the TaskRunner itself, for the rules (add_why_not_rule).
    runner: Runner
    runs: Runs
    leases: Leases | None
    size: int
    pair: Callable[[TaskRec], HandlerPair]
    blocked: list[Callable[[Task, list[Task]], bool]]
    #: Tasks and changes the runner leaves alone: rows it cannot read, outcomes it could not record.
    damaged_tasks: set[int]
    damaged_changes: set[int]
    quarantined: set[int]
    checked: dict[int, bool]


def reasons(tasks: Iterable[Task], view: RunnerView | None) -> list[WhyNot | None]:
    """reasons is why_not_tasks with what a runner knows (view), or without a runner (None)."""
    seen = _Seen()
    return [_why(task, view, seen) for task in tasks]


class _Seen:
    """_Seen is what the reasons of several tasks share: the failed tasks of each change."""

    def __init__(self) -> None:
        self.failed: dict[int, list[TaskRec]] = {}

    def failed_of(self, w: Work, cid: int) -> list[TaskRec]:
        failed = self.failed.get(cid)
        if failed is None:
            recs = w.records.change_trecs(w.records.crec(cid))
            failed = self.failed[cid] = [t for t in recs if t.status is Status.ERROR]
            w.records.load_graph(failed)
        return failed


def _why(task: Task, runner: RunnerView | None, seen: _Seen) -> WhyNot | None:
    w: Work = work_of(task)
    w.check()
    try:
        rec = record_of(task)
    except (DatabaseCorruptError, NotFoundError) as e:
        return WhyNot(DAMAGED, _line(e))
    if rec.status is Status.DONE:
        return None
    try:
        if _running(runner, rec):
            return None
        why = _engine_reason(w, task, rec, runner, seen)
    except (DatabaseCorruptError, NotFoundError) as e:
        why = WhyNot(DAMAGED, _line(e))
    if rec.status.ready or why.reason == DAMAGED:
        return why
    for rule in list(_rules):
        try:
            other = rule(task, None if runner is None else runner.runner, why)
        except Exception as e:  # user code: its failure is logged, and the answer so far stays
            log.error("task %s (%s): the why-not rule %s raised %s", rec.id, rec.kind, callable_name(rule),
                      exception_text(e))
            continue
        if other is not None:
            why = other
    return why


def _running(runner: RunnerView | None, rec: TaskRec) -> bool:
    """_running says whether the task's handler runs now: in this runner, or in another one under a live lease.

    Without a runner, a Doing or Undoing task counts as running.
    """
    if runner is None:
        return rec.status in (Status.DOING, Status.UNDOING)
    with runner.runs.lock:
        run = runner.runs.runs.get(rec.id)
    if run is not None:
        return run.phase != "cleanup"
    leases = runner.leases
    if leases is None or rec.status not in (Status.DOING, Status.UNDOING, Status.ABORT):
        return False
    owner = leases.store.runners_of([rec.id]).get(rec.id)
    return owner is not None and owner != leases.runner_id and not leases.store.lease_expired(rec.id)


def _engine_reason(w: Work, task: Task, rec: TaskRec, runner: RunnerView | None, seen: _Seen) -> WhyNot:
    status = rec.status
    if runner is not None:
        damaged = _damaged(rec, runner)
        if damaged is not None:
            return damaged
    if rec.change_id is None:
        return WhyNot(NO_CHANGE, "it is in no change: no runner runs it")
    if status is Status.ERROR:
        errors = [msg for _, level, msg in w.records.log_lines(rec) if level == "ERROR"]
        return WhyNot(FAILED, errors[-1] if errors else "it failed (no error was logged)")
    if status is Status.UNDONE:
        return WhyNot(UNDONE, "it was done, then undone")
    if status is Status.HOLD:
        return _held(w, rec, seen, "it will not run")
    if status is Status.WAIT:
        waited = rec.waited_status.value
        return WhyNot(WAITING, f"it did its work and waits for an external event (a reboot, a person); "
                               f"then it becomes {waited}", extra={"waited-status": waited})
    if status is Status.ABORT:
        return _held(w, rec, seen, "it is undone at the next ensure pass", aborted=True)
    if runner is not None and runner.pair(rec).do is None:
        return WhyNot(NO_HANDLER, f"no handler for its kind {rec.kind!r} in this runner: it waits for a runner "
                                  "that has one")
    undo = status in (Status.UNDO, Status.UNDOING)
    if status is Status.DO:
        blocking = [t for t in w.records.trecs(w.records.wait_ids(rec)) if t.status is not Status.DONE]
        if blocking:
            return _waiting(blocking, "waits for")
    elif status is Status.UNDO:
        if runner is not None and runner.pair(rec).undo is None:
            return WhyNot(RUNNABLE, "nothing to undo (its kind has no undo handler): it becomes Done at the next "
                                    "ensure pass")
        blocking = [t for t in w.records.trecs(w.records.halt_ids(rec)) if not t.status.ready]
        if blocking:
            return _waiting(blocking, "is undone after")
    now = w.now()
    if rec.at_time is not None and rec.at_time > now:
        retry = rec.attempts > 0 or rec.retry_attempts > 0
        what = "retried" if retry else "run"
        return WhyNot(SCHEDULED, f"it is {what} at {_time.to_text(rec.at_time)}",
                      extra={"at": _stamp(rec.at_time), "retry": retry})
    if status in (Status.DOING, Status.UNDOING):
        return WhyNot(INTERRUPTED, "it was running when its runner stopped: it runs again at the next ensure pass")
    if runner is not None:
        blocked = _blocked(task, rec, runner)
        if blocked is not None:
            return blocked
        with runner.runs.lock:
            busy = len(runner.runs.runs)
        if busy >= runner.size:
            return WhyNot(WAITING_FOR_WORKER, f"all {runner.size} workers of the runner are busy")
    verb = "undone" if undo else "started"
    return WhyNot(RUNNABLE, f"nothing holds it back: it is {verb} at the next ensure pass")


def _damaged(rec: TaskRec, runner: RunnerView) -> WhyNot | None:
    """_damaged is the reason of a task the runner leaves alone because a row cannot be read."""
    if rec.id in runner.damaged_tasks or rec.id in runner.quarantined:
        return WhyNot(DAMAGED, f"the runner leaves task {rec.id} alone until the database changes: its row "
                               "cannot be run (see the state's warnings)")
    cid = rec.change_id
    if cid is None or rec.status.ready:
        return None
    if cid in runner.damaged_changes or runner.checked.get(cid) is False:
        return WhyNot(DAMAGED, f"the runner leaves change {cid} alone until it is repaired: a row of it cannot "
                               "be read (see the state's warnings)")
    return None


def _held(w: Work, rec: TaskRec, seen: _Seen, then: str, aborted: bool = False) -> WhyNot:
    """_held is why a Hold (or stopped Abort) task will not run: a failed task in its lanes, else an abort."""
    assert rec.change_id is not None
    every = seen.failed_of(w, rec.change_id)
    lanes = set(w.records.lanes(rec) or [0])
    failed = [t for t in every if lanes.intersection(w.records.lanes(t) or [0])] or every
    if failed:
        names = _names(failed)
        reason = CHANGE_ABORTED if aborted else HELD
        return WhyNot(reason, f"{names} failed, so its lanes were aborted: {then}", _refs(failed))
    return WhyNot(CHANGE_ABORTED, f"its change was aborted: {then}")


def _waiting(blocking: list[TaskRec], verb: str) -> WhyNot:
    return WhyNot(WAITING_FOR_TASKS, f"it {verb} {_names(blocking)}", _refs(blocking))


def _blocked(task: Task, rec: TaskRec, runner: RunnerView) -> WhyNot | None:
    """_blocked asks the runner's blocked predicates about task, as a pass would."""
    preds = list(runner.blocked)
    if not preds:
        return None
    with runner.runs.lock:
        running = [run.task for run in runner.runs.runs.values()]
    holding = []
    for pred in preds:
        try:
            if pred(task, running):
                holding.append(callable_name(pred))
        except Exception as e:
            holding.append(callable_name(pred))
            log.debug("task %s: blocked predicate %s raised %s", rec.id, callable_name(pred), exception_text(e))
    if not holding:
        return None
    return WhyNot(BLOCKED, f"held back by the blocked predicate {', '.join(holding)}",
                  extra={"predicates": holding})


def _names(recs: list[TaskRec]) -> str:
    shown = [f"task {t.id} ({t.kind}, {t.status.value})" for t in recs[:MAX_TASKS]]
    if len(recs) > MAX_TASKS:
        shown.append(f"{len(recs) - MAX_TASKS} more")
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _ref(t: TaskRec) -> TaskRef:
    return TaskRef(str(t.id), t.kind, t.status, None if t.change_id is None else str(t.change_id))


def _refs(recs: list[TaskRec]) -> tuple[TaskRef, ...]:
    return tuple(_ref(t) for t in recs[:MAX_TASKS])


def _stamp(when: datetime) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}Z"


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())
