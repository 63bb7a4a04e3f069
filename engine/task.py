# SPDX-License-Identifier: GPL-3.0-or-later
"""Task and TaskSet: units of work, their edges, lanes, log and progress."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from . import _time
from ._records import TaskRec, own_data
from ._values import INT64_MAX, MISSING, check_int64, check_key, clean_text, get_value, set_value
from .errors import EngineError
from .events import wait_event as _wait_event
from .status import Status

if TYPE_CHECKING:
    from ._work import Work
    from .change import Change
    from .state import State


class Task:
    """Task is one unit of work of a change, run by the TaskRunner.

    Obtain tasks from State.new_task, State.task or Change.tasks.
    """

    __slots__ = ("_tid", "_w")

    def __init__(self, w: Work, tid: int) -> None:
        self._w = w
        self._tid = tid

    def __repr__(self) -> str:
        return f"<Task {self._tid}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other._w is self._w and other._tid == self._tid

    def __hash__(self) -> int:
        return hash((id(self._w), "task", self._tid))

    def _rec(self) -> TaskRec:
        self._w.check()
        return self._w.records.trec(self._tid)

    @property
    def state(self) -> State:
        """state is the State the task belongs to (no lock needed)."""
        state: State = self._w.state
        return state

    @property
    def id(self) -> str:
        """id is the task's id, a string of decimal digits."""
        self._w.check()
        return str(self._tid)

    @property
    def kind(self) -> str:
        """kind names the handlers that run the task."""
        return self._rec().kind

    @property
    def summary(self) -> str:
        """summary describes the task for people."""
        return self._rec().summary

    @property
    def status(self) -> Status:
        """status is the task's status (a new task reads Do)."""
        return self._rec().status

    def set_status(self, status: Status) -> None:
        """set_status sets the task's status; Wait is set with set_to_wait.

        Done asked of an Abort task is ignored: the task will be undone.
        """
        rec = self._rec()
        if not isinstance(status, Status):
            raise TypeError(f"cannot set status of task {self._tid}: {status!r} is not a Status")
        if status is Status.WAIT:
            raise ValueError(f"cannot set task {self._tid} to Wait with set_status: use set_to_wait")
        if status is Status.DEFAULT:
            status = Status.DO
        if status is Status.DONE and rec.status is Status.ABORT:
            return
        self._w.set_task_status(rec, status)

    def set_to_wait(self, waited_status: Status) -> None:
        """set_to_wait parks the task in Wait; waited_status is what it becomes afterwards."""
        rec = self._rec()
        if not isinstance(waited_status, Status) or waited_status in (Status.DEFAULT, Status.WAIT):
            raise ValueError(f"cannot set task {self._tid} to wait for {waited_status!r}: "
                             "give the status it takes after the wait, not Default or Wait")
        if rec.status is Status.ABORT:
            return
        if rec.waited_status is not waited_status:
            rec.waited_status = waited_status
            self._w.dirty_task(rec)
        self._w.set_task_status(rec, Status.WAIT)

    def wait_event(self, key: str, timeout: float | timedelta | None = None,
                   on_timeout: Literal["error", "retry"] = "error") -> Any:
        """wait_event returns the data of the event of key delivered to this task, or parks the task until one is.

        Called by a handler: when no event of key was delivered to the task
        yet, it raises EventWait (let it out of the handler): the task goes
        to Wait until State.emit(key, data), then its handler runs again and
        this returns data. After timeout (the State's clock) the task fails
        ("error") or its handler runs again ("retry"). See docs/runner.md.
        """
        return _wait_event(self._w, self._tid, key, timeout, on_timeout)

    @property
    def waited_status(self) -> Status:
        """waited_status is the status the task takes once its wait is over."""
        return self._rec().waited_status

    def get(self, key: str, default: Any = MISSING) -> Any:
        """get returns the JSON value stored under key (NoStateError if missing)."""
        rec = self._rec()
        return get_value(rec.data.items(f"task {self._tid}"), check_key(key, f"task {self._tid}"), default)

    def set(self, key: str, value: Any) -> None:
        """set stores a JSON-serialisable value under key; None deletes the key."""
        rec = self._rec()
        set_value(own_data(rec).mutable(f"task {self._tid}"), key, value, f"task {self._tid}")
        self._w.dirty_task(rec)

    def has(self, key: str) -> bool:
        """has returns whether a value is stored under key."""
        return check_key(key, f"task {self._tid}") in self._rec().data.items(f"task {self._tid}")

    def keys(self) -> list[str]:
        """keys returns the keys under which values are stored on the task, sorted."""
        return sorted(self._rec().data.items(f"task {self._tid}"))

    def clear(self, key: str) -> None:
        """clear deletes the value stored under key."""
        self.set(key, None)

    def change(self) -> Change | None:
        """change returns the change the task belongs to, or None."""
        rec = self._rec()
        if rec.change_id is None:
            return None
        chg: Change = self._w.change_handle(self._w.records.crec(rec.change_id))
        return chg

    def log(self) -> list[str]:
        """log returns the last ten log lines, each '<time> INFO|ERROR <message>'."""
        rec = self._rec()
        return [f"{_log_time(t)} {level} {msg}" for t, level, msg in self._w.records.log_lines(rec)]

    def logf(self, fmt: str, *args: Any) -> None:
        """logf adds an INFO line to the task's log (printf-style formatting).

        Lone surrogates (from os.fsdecode'd file names) are stored as escapes.
        """
        rec = self._rec()
        self._w.add_log(rec, "INFO", _message(fmt, args, rec.id))

    def errorf(self, fmt: str, *args: Any) -> None:
        """errorf adds an ERROR line to the task's log (printf-style formatting)."""
        rec = self._rec()
        self._w.add_log(rec, "ERROR", _message(fmt, args, rec.id))

    def progress(self) -> tuple[str, int, int]:
        """progress returns (label, done, total); unset, it is done/total 0/1 while Do, else 1/1."""
        rec = self._rec()
        if rec.progress is None:
            return ("", 0, 1) if rec.status is Status.DO else ("", 1, 1)
        return rec.progress

    def set_progress(self, label: str, done: int, total: int) -> None:
        """set_progress records progress; nonsense (total <= 0, done > total) clears it.

        done and total are integers that fit in 64 bits; label is text.
        """
        rec = self._rec()
        what = f"progress of task {self._tid}"
        label = clean_text(label, f"{what}: label")
        done = check_int64(done, f"{what}: done")
        total = check_int64(total, f"{what}: total")
        rec.progress = None if total <= 0 or done > total or done < 0 else (label, done, total)
        self._w.dirty_task(rec)

    def wait_for(self, other: Task) -> None:
        """wait_for makes this task wait until other is Done."""
        rec = self._rec()
        w = self._w
        if other._w is not w:
            raise EngineError(f"cannot make task {self._tid} wait for task {other._tid} of another State")
        orec = w.records.trec(other._tid)
        waits = rec.wait_ids
        if orec.id not in (waits if waits is not None else w.records.wait_ids(rec)):
            w.add_edge(rec, orec)

    def wait_all(self, taskset: TaskSet) -> None:
        """wait_all makes this task wait for every task of taskset."""
        self._wait_all(taskset.tasks())

    def _wait_all(self, others: list[Task]) -> None:
        # wait_for of each, with what the task waits for as a set: a fan-in of n tasks is n steps, not n*n/2.
        rec = self._rec()
        w = self._w
        waits = rec.wait_ids
        have = set(waits if waits is not None else w.records.wait_ids(rec))
        for other in others:
            if other._w is not w:
                raise EngineError(f"cannot make task {self._tid} wait for task {other._tid} of another State")
            orec = w.records.trec(other._tid)
            if orec.id not in have:
                have.add(orec.id)
                w.add_edge(rec, orec)

    def wait_tasks(self) -> list[Task]:
        """wait_tasks returns the tasks this task waits for."""
        w = self._w
        return [w.task_handle(r) for r in w.records.trecs(list(w.records.wait_ids(self._rec())))]

    def halt_tasks(self) -> list[Task]:
        """halt_tasks returns the tasks that wait for this task."""
        w = self._w
        return [w.task_handle(r) for r in w.records.trecs(list(w.records.halt_ids(self._rec())))]

    def num_halt_tasks(self) -> int:
        """num_halt_tasks counts the tasks that wait for this task."""
        return len(self._w.records.halt_ids(self._rec()))

    def join_lane(self, lane: int) -> None:
        """join_lane adds the task to a lane; lanes abort independently on errors."""
        rec = self._rec()
        if isinstance(lane, bool) or not isinstance(lane, int) or not 0 < lane <= INT64_MAX:
            raise ValueError(f"cannot add task {self._tid} to lane {lane!r}: lanes are positive 64-bit integers")
        self._w.add_lane(rec, lane)

    def lanes(self) -> list[int]:
        """lanes returns the task's lanes, [0] for a task in no lane."""
        return list(self._w.records.lanes(self._rec()) or [0])

    def at(self, when: datetime | None) -> None:
        """at schedules the task no earlier than when; None clears the schedule."""
        rec = self._rec()
        if when is None:
            if rec.at_time is not None:
                rec.at_time = None
                self._w.dirty_task(rec)
            return
        when = _time.utc(when, "at time")
        if rec.status.ready:
            return
        rec.at_time = when
        self._w.dirty_task(rec)
        self._w.state.ensure_before(max(0.0, (when - self._w.now()).total_seconds()))

    @property
    def at_time(self) -> datetime | None:
        """at_time is when the task is scheduled to run, or None."""
        return self._rec().at_time

    @property
    def spawn_time(self) -> datetime:
        """spawn_time is when the task was created."""
        return self._rec().spawn_time

    @property
    def ready_time(self) -> datetime | None:
        """ready_time is when the task became ready, or None."""
        return self._rec().ready_time

    @property
    def doing_time(self) -> timedelta:
        """doing_time is the time spent in the do handler, accumulated."""
        return timedelta(seconds=self._rec().doing_time)

    @property
    def undoing_time(self) -> timedelta:
        """undoing_time is the time spent in the undo handler, accumulated."""
        return timedelta(seconds=self._rec().undoing_time)

    @property
    def attempts(self) -> int:
        """attempts counts the handler runs that asked for a retry or failed under a retry policy."""
        return self._rec().attempts

    def is_clean(self) -> bool:
        """is_clean returns whether the task's leftovers were cleaned up."""
        return self._rec().clean

    def set_clean(self) -> None:
        """set_clean marks the task cleaned; its change must be ready."""
        rec = self._rec()
        if rec.clean:
            return
        w = self._w
        crec = w.records.crec(rec.change_id) if rec.change_id is not None else None
        if crec is not None:
            if crec.ready_time is None:
                raise EngineError(f"cannot mark task {self._tid} clean: change {crec.id} is not ready")
            w.records.counts(crec)
        rec.clean = True
        w.dirty_task(rec)
        if crec is not None:
            crec.unclean -= 1
            if crec.unclean <= 0 and not crec.clean:
                crec.clean = True
                w.dirty_change(crec)


def _log_time(text: str) -> str:
    """_log_time shows a stored log time as RFC 3339; a hand-edited one as it is."""
    try:
        return _time.rfc3339(_time.from_text(text))
    except (TypeError, ValueError):
        return str(text)


def _message(fmt: str, args: tuple[Any, ...], tid: int) -> str:
    """_message formats a log line; text that is not valid Unicode is stored escaped."""
    if not isinstance(fmt, str):
        raise TypeError(f"cannot log on task {tid}: the format must be a str, not {type(fmt).__name__}")
    return clean_text(fmt % args if args else fmt, f"log line of task {tid}")


class TaskSet:
    """TaskSet is an ordered set of tasks with named edges (no lock needed to build one)."""

    __slots__ = ("_edges", "_members", "_tasks")

    def __init__(self, *tasks: Task) -> None:
        self._tasks: list[Task] = []
        # (The tasks as a set too: adding n tasks is n steps, not n*n/2 comparisons of Tasks.)
        self._members: set[Task] = set()
        self._edges: dict[str, Task] = {}
        self._add(tasks)

    def _add(self, tasks: Iterable[Task]) -> None:
        members = self._members
        for t in tasks:
            if t not in members:
                members.add(t)
                self._tasks.append(t)

    def __repr__(self) -> str:
        return f"<TaskSet {[t._tid for t in self._tasks]}>"

    def __len__(self) -> int:
        return len(self._tasks)

    def _check(self, extra: Iterable[Task] = ()) -> None:
        for t in (*self._tasks[:1], *extra):
            t._w.check()

    def add_task(self, task: Task) -> None:
        """add_task adds task to the set, once."""
        self._check((task,))
        self._add((task,))

    def add_all(self, other: TaskSet) -> None:
        """add_all adds every task of other to the set."""
        self._check(other._tasks[:1])
        self._add(other._tasks)

    def wait_for(self, other: Task) -> None:
        """wait_for makes every task of the set wait for other."""
        self._check((other,))
        for t in self._tasks:
            t.wait_for(other)

    def wait_all(self, other: TaskSet) -> None:
        """wait_all makes every task of the set wait for every task of other."""
        self._check(other._tasks[:1])
        # (Task by task: each one's waits come in other's order, each of other's halts in the set's order, as
        # snapd's request by request.)
        for t in self._tasks:
            t._wait_all(other._tasks)

    def join_lane(self, lane: int) -> None:
        """join_lane adds every task of the set to lane."""
        self._check()
        for t in self._tasks:
            t.join_lane(lane)

    def tasks(self) -> list[Task]:
        """tasks returns the tasks of the set, in order (a copy)."""
        self._check()
        return list(self._tasks)

    def mark_edge(self, task: Task, name: str) -> None:
        """mark_edge names task as an edge of the set, replacing any previous one."""
        if task is None:
            raise ValueError(f"cannot set edge {name!r} with no task")
        self._check((task,))
        self._edges[name] = task

    def edge(self, name: str) -> Task:
        """edge returns the task marked as name; KeyError if there is none."""
        self._check()
        try:
            return self._edges[name]
        except KeyError:
            raise KeyError(f"internal error: missing {name!r} edge in task set") from None

    def maybe_edge(self, name: str) -> Task | None:
        """maybe_edge returns the task marked as name, or None."""
        self._check()
        return self._edges.get(name)

    def add_all_with_edges(self, other: TaskSet) -> None:
        """add_all_with_edges adds other's tasks and edges; a clashing edge raises ValueError."""
        self._check(other._tasks[:1])
        for name, t in other._edges.items():
            if name in self._edges and self._edges[name] != t:
                raise ValueError(f"cannot add taskset: duplicated edge {name!r}")
        self.add_all(other)
        for name, t in other._edges.items():
            self._edges[name] = t


def record_of(task: Task) -> TaskRec:
    """record_of is the record behind a Task (lock held), for the engine's modules (engine.why, engine.change)."""
    return task._rec()


def task_id_of(task: Task) -> int:
    """task_id_of is a Task's id, read without its State's lock (for messages about a task of another State)."""
    return task._tid


def work_of(task: Task) -> Work:
    """work_of is the unit of work a Task belongs to, for the engine's modules (engine.why)."""
    return task._w


def task_handle(w: Work, rec: TaskRec) -> Task:
    """task_handle is the public Task of a record, typed (the unit of work makes and keeps it: engine.unitofwork)."""
    task: Task = w.task_handle(rec)
    return task
