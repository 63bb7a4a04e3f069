# SPDX-License-Identifier: GPL-3.0-or-later
"""In-memory copies of rows, and the bookkeeping of what must be written.

A record is the State's private copy of one row; the public Change and Task
objects are handles that look their record up on every access. Records are
loaded on demand and written back when the state lock is released.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._time import from_text, opt_from_text, opt_to_text, to_text
from .status import Status

if TYPE_CHECKING:
    from .change import Change
    from .task import Task

LOG_KEEP = 10

_STATUS = {s.value: s for s in Status}


def status_of(value: str, what: str) -> Status:
    """status_of parses a stored status, naming the row when it is unknown."""
    try:
        return _STATUS[value]
    except KeyError:
        from .errors import DatabaseCorruptError

        raise DatabaseCorruptError(f"cannot load {what}: unknown status {value!r} in the database") from None


def dump_value(key: str, value: Any) -> str:
    """dump_value serialises a value for storage, naming key when it cannot."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot store {key!r}: value is not JSON-serialisable ({e})") from None


def dump_data(data: dict[str, str]) -> str:
    """dump_data joins per-key JSON texts into one JSON object text."""
    if not data:
        return "{}"
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v}" for k, v in data.items()) + "}"


def load_data(text: str, what: str) -> dict[str, str]:
    """load_data splits a stored JSON object into per-key JSON texts."""
    if text == "{}":
        return {}
    try:
        obj = json.loads(text)
    except ValueError as e:
        from .errors import DatabaseCorruptError

        raise DatabaseCorruptError(f"cannot load {what}: its data is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        from .errors import DatabaseCorruptError

        raise DatabaseCorruptError(f"cannot load {what}: its data is not a JSON object")
    return {str(k): dump_value(str(k), v) for k, v in obj.items()}


class Data:
    """Data is the lazily parsed key/value bag of a change or task."""

    __slots__ = ("text", "values")

    def __init__(self, text: str = "{}") -> None:
        self.text: str | None = text
        self.values: dict[str, str] | None = None if text != "{}" else {}

    def items(self, what: str) -> dict[str, str]:
        """items returns the parsed mapping of keys to JSON texts."""
        if self.values is None:
            self.values = load_data(self.text or "{}", what)
        return self.values

    def dump(self) -> str:
        """dump returns the JSON object text to store."""
        if self.values is None:
            return self.text or "{}"
        return dump_data(self.values)


class TaskRec:
    """TaskRec is the State's copy of one tasks row and its edges."""

    __slots__ = (
        "at_time",
        "attempts",
        "change_id",
        "clean",
        "data",
        "doing_time",
        "halt_ids",
        "handle",
        "id",
        "kind",
        "lanes",
        "log",
        "progress",
        "ready_text",
        "ready_time",
        "retry_attempts",
        "retry_since",
        "spawn_text",
        "spawn_time",
        "status",
        "summary",
        "undoing_time",
        "wait_ids",
        "waited_status",
    )

    def __init__(self, tid: int, kind: str, summary: str, spawn_time: datetime) -> None:
        self.id = tid
        self.change_id: int | None = None
        self.kind = kind
        self.summary = summary
        self.status = Status.DO
        self.waited_status = Status.DONE
        self.clean = False
        self.progress: tuple[str, int, int] | None = None
        self.data = Data()
        self.spawn_time = spawn_time
        self.ready_time: datetime | None = None
        # The stored texts of the times above, formatted once.
        self.spawn_text = to_text(spawn_time)
        self.ready_text: str | None = None
        self.at_time: datetime | None = None
        self.doing_time = 0.0
        self.undoing_time = 0.0
        self.attempts = 0
        self.retry_attempts = 0
        self.retry_since: datetime | None = None
        # None until loaded; new tasks start complete and empty.
        self.wait_ids: list[int] | None = []
        self.halt_ids: list[int] | None = []
        self.lanes: list[int] | None = []
        self.log: list[tuple[str, str, str]] | None = []
        self.handle: Task | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TaskRec:
        """from_row builds a record from a row in store.TASK_COLUMNS order."""
        rec = cls.__new__(cls)
        (rec.id, rec.change_id, rec.kind, rec.summary, status, waited, clean, label, done, total, data,
         spawn, ready, at, rec.doing_time, rec.undoing_time, rec.attempts, rec.retry_attempts, retry_since) = row
        what = f"task {rec.id}"
        rec.status = status_of(status, what)
        rec.waited_status = status_of(waited, what)
        rec.clean = bool(clean)
        rec.progress = (label or "", int(done), int(total)) if total is not None and done is not None else None
        rec.data = Data(data or "{}")
        rec.spawn_time = from_text(spawn)
        rec.ready_time = opt_from_text(ready)
        rec.spawn_text = spawn
        rec.ready_text = ready
        rec.at_time = opt_from_text(at)
        rec.retry_since = opt_from_text(retry_since)
        rec.wait_ids = rec.halt_ids = rec.lanes = rec.log = None
        rec.handle = None
        return rec

    def row(self) -> tuple[Any, ...]:
        """row returns the values in store.TASK_COLUMNS order."""
        label, done, total = self.progress if self.progress is not None else (None, None, None)
        return (
            self.id, self.change_id, self.kind, self.summary, self.status.value, self.waited_status.value,
            self.clean, label, done, total, self.data.dump(), self.spawn_text,
            self.ready_text, opt_to_text(self.at_time), self.doing_time, self.undoing_time,
            self.attempts, self.retry_attempts, opt_to_text(self.retry_since),
        )


class ChangeRec:
    """ChangeRec is the State's copy of one changes row and its aggregates."""

    __slots__ = (
        "clean",
        "counts",
        "data",
        "db_status",
        "explicit",
        "handle",
        "id",
        "kind",
        "observed",
        "ready_time",
        "spawn_time",
        "summary",
        "task_ids",
        "unclean",
    )

    def __init__(self, cid: int, kind: str, summary: str, spawn_time: datetime) -> None:
        self.id = cid
        self.kind = kind
        self.summary = summary
        self.explicit: Status | None = None
        self.clean = False
        self.data = Data()
        self.spawn_time = spawn_time
        self.ready_time: datetime | None = None
        # The status last written to the row (None: not written yet).
        self.db_status: Status | None = None
        # The status last reported to change-status hooks (None: not tracked
        # since it last moved; computed afresh before the next report).
        self.observed: Status | None = Status.DEFAULT
        # Task count by status, unclean task count and task ids (None until loaded).
        self.counts: dict[Status, int] | None = {}
        self.unclean = 0
        self.task_ids: list[int] | None = []
        self.handle: Change | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ChangeRec:
        """from_row builds a record from a row in store.CHANGE_COLUMNS order."""
        rec = cls.__new__(cls)
        rec.id, rec.kind, rec.summary, status, explicit, clean, data, spawn, ready = row
        what = f"change {rec.id}"
        rec.db_status = status_of(status, what)
        rec.observed = rec.db_status
        rec.explicit = status_of(explicit, what) if explicit is not None else None
        rec.clean = bool(clean)
        rec.data = Data(data or "{}")
        rec.spawn_time = from_text(spawn)
        rec.ready_time = opt_from_text(ready)
        rec.counts = None
        rec.unclean = 0
        rec.task_ids = None
        rec.handle = None
        return rec

    def row(self, status: Status) -> tuple[Any, ...]:
        """row returns the values in store.CHANGE_COLUMNS order."""
        return (
            self.id, self.kind, self.summary, status.value,
            self.explicit.value if self.explicit is not None else None,
            self.clean, self.data.dump(), to_text(self.spawn_time), opt_to_text(self.ready_time),
        )


K = TypeVar("K", bound=Hashable)


class Pending(Generic[K]):
    """Pending tracks items to write, and those written but not yet committed.

    Items move from todo to done when flushed; a commit forgets both, a
    failed commit puts done back into todo so that nothing is lost.
    """

    __slots__ = ("done", "todo")

    def __init__(self) -> None:
        self.todo: dict[K, None] = {}
        self.done: dict[K, None] = {}

    def add(self, item: K) -> None:
        """add records an item to write."""
        self.todo[item] = None

    def update(self, items: Iterable[K]) -> None:
        """update records several items to write."""
        self.todo.update(dict.fromkeys(items))

    def take(self) -> list[K]:
        """take returns the items to write now and marks them written."""
        items = list(self.todo)
        self.done.update(self.todo)
        self.todo.clear()
        return items

    def committed(self) -> None:
        """committed forgets what the last commit wrote."""
        self.done.clear()

    def failed(self) -> None:
        """failed schedules what the failed transaction wrote to be written again."""
        if self.done:
            merged = dict(self.done)
            merged.update(self.todo)
            self.todo = merged
            self.done = {}

    def clear(self) -> None:
        """clear forgets everything (after a rollback)."""
        self.todo.clear()
        self.done.clear()

    def __bool__(self) -> bool:
        return bool(self.todo)

    def __contains__(self, item: object) -> bool:
        return item in self.todo or item in self.done
