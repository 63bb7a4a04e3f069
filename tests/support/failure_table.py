# SPDX-License-Identifier: GPL-3.0-or-later
"""The pieces of the managers' failure tables: a recording backend and a handler made to fail.

A line of a table names what fails as "kind:phase" ("mount-snap:do", "auto-connect:undo"):
that handler of that task kind raises before it does anything. The backend's operations
are written down as the handlers call them, in order, one short string each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine import Status, Task, TaskRunner, Tomb

D, U, E, H = Status.DONE, Status.UNDONE, Status.ERROR, Status.HOLD

Handler = Callable[[Task, Tomb], Any]


def record(backend: Any, formats: dict[str, Callable[..., str]], ops: list[str]) -> None:
    """record wraps the named operations of backend (on the instance every handler holds) to append to ops."""
    inside = threading.local()  # an operation that calls another (put_back calls remove) is one operation

    for op, write in formats.items():
        real = getattr(backend, op)

        def recorded(*args: Any, _real: Callable[..., Any] = real, _write: Callable[..., str] = write,
                     **kw: Any) -> Any:
            if getattr(inside, "op", False):
                return _real(*args, **kw)
            ops.append(_write(*args, **kw))
            inside.op = True
            try:
                return _real(*args, **kw)
            finally:
                inside.op = False

        setattr(backend, op, recorded)


def inject(runner: TaskRunner, failure: str, do: Handler, undo: Handler | None) -> None:
    """inject registers kind's handlers again with the one of failure ("kind:do" or "kind:undo") raising."""
    kind, phase = failure.split(":")
    assert phase in ("do", "undo"), failure

    def failing(task: Task, tomb: Tomb) -> None:
        raise RuntimeError(f"{failure}-error injected")

    runner.add_handler(kind, failing if phase == "do" else do, failing if phase == "undo" else undo)


def line_id(failures: tuple[str, ...]) -> str:
    """line_id names a table line by what fails in it."""
    return " + ".join(f"{f}-error" for f in failures)


def first_of_each(tasks: list[tuple[str, Status]]) -> dict[str, Status]:
    """first_of_each is the status of the first task of each kind (a table names a kind by its first task)."""
    got: dict[str, Status] = {}
    for kind, status in tasks:
        got.setdefault(kind, status)
    return got


def check_rules(runner: TaskRunner, tasks: list[tuple[str, Status]], failing: str) -> None:
    """check_rules: the failing kind's task is in Error, the tasks after it never ran (Hold), the ones
    before it are undone (or Done when their kind has no undo, or Error when their undo failed)."""
    kinds = [k for k, _ in tasks]
    at = kinds.index(failing)
    assert tasks[at][1] == E
    for kind, status in tasks[at + 1:]:
        assert status == H, f"{kind} ran after {failing} failed: {status}"
    for kind, status in tasks[:at]:
        assert status in (U, D, E), f"{kind} was left {status} by the undo"
        if status == D:
            assert not runner.task_kind_has_undo(kind), f"{kind} has an undo and was not undone"
