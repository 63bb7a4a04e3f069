# SPDX-License-Identifier: GPL-3.0-or-later
"""Status values shared by changes and tasks."""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Status is the state of a change or a task; its value is stored as is."""

    #: DEFAULT is the computed status: a task reads it as DO, a change
    #: aggregates the statuses of its tasks.
    DEFAULT = "Default"
    #: HOLD means the task must not run, usually because of an error elsewhere.
    HOLD = "Hold"
    #: DO means the task is ready to start.
    DO = "Do"
    #: DOING means the task is running, or an attempt was made to run it.
    DOING = "Doing"
    #: DONE means the task was accomplished successfully.
    DONE = "Done"
    #: ABORT means the task must stop what it is doing and then be undone.
    ABORT = "Abort"
    #: UNDO means the task must be undone, usually because of an error elsewhere.
    UNDO = "Undo"
    #: UNDOING means the task is being undone, or an attempt was made to undo it.
    UNDOING = "Undoing"
    #: UNDONE means the task was done and then undone after an error elsewhere.
    UNDONE = "Undone"
    #: ERROR means the task failed while being done or undone.
    ERROR = "Error"
    #: WAIT means the task did its work but waits for an external event
    #: (a reboot, a person) before it moves to its waited status.
    WAIT = "Wait"

    #: ready says whether work with this status has completed its attempt (a plain attribute of each member,
    #: set below: read on every move of a task).
    ready: bool
    #: text is the same text as value, a plain attribute of each member (set below): every task row written reads
    #: it, where value is a property call.
    text: str

    # Members are singletons: hashing by identity (in C) is what Enum's hash by name (in Python) does, at a
    # fraction of the cost; statuses key the counts of every change and are hashed on every move.
    __hash__ = object.__hash__
    @property
    def value(self) -> str:
        """value is the text stored for the status (read directly: Enum's own descriptor costs more)."""
        stored: str = self._value_
        return stored

    def __str__(self) -> str:
        return str(self.value)


_READY = frozenset({Status.DONE, Status.UNDONE, Status.HOLD, Status.ERROR})
for _status in Status:  # precomputed: ready is read on every status change
    object.__setattr__(_status, "ready", _status in _READY)
    object.__setattr__(_status, "text", _status.value)

#: The statuses a task row may hold ("Default" is stored as "Do").
TASK_STATUSES = tuple(s.value for s in Status if s is not Status.DEFAULT)
#: The statuses stored for ready tasks, the complement of the unready index.
READY_VALUES = ("Done", "Undone", "Hold", "Error")


def parse_status(value: str) -> Status:
    """parse_status returns the Status whose value is value, or raises ValueError."""
    try:
        return Status(value)
    except ValueError:
        raise ValueError(f"unknown status {value!r}") from None
