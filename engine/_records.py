# SPDX-License-Identifier: GPL-3.0-or-later
"""In-memory copies of rows, and the bookkeeping of what must be written.

A record is the State's private copy of one row; the public Change and Task
objects are handles that look their record up on every access. Records are
loaded on demand and written back when the state lock is released.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, Generic, TypeVar

from ._time import from_text, opt_from_text, opt_to_text, to_text
from ._values import dump_value
from .errors import DatabaseCorruptError
from .status import Status

LOG_KEEP = 10

_STATUS = {s.value: s for s in Status}


def status_of(value: str, what: str) -> Status:
    """status_of parses a stored status, naming the row when it is unknown."""
    try:
        return _STATUS[value]
    except KeyError:

        raise DatabaseCorruptError(f"cannot load {what}: unknown status {value!r} in the database") from None


def dump_data(data: dict[str, str]) -> str:
    """dump_data joins per-key JSON texts into one JSON object text (keys are valid Unicode: check_key)."""
    if not data:
        return "{}"
    string = encode_basestring
    return "{" + ",".join([f"{string(k)}:{v}" for k, v in data.items()]) + "}"


def load_data(text: str, what: str) -> dict[str, str]:
    """load_data splits a stored JSON object into per-key JSON texts."""
    if text == "{}":
        return {}
    try:
        obj = json.loads(text)
    except ValueError as e:

        raise DatabaseCorruptError(f"cannot load {what}: its data is not valid JSON ({e})") from None
    if not isinstance(obj, dict):

        raise DatabaseCorruptError(f"cannot load {what}: its data is not a JSON object")
    # The keys of a JSON object are str. Each value is stored as its own JSON
    # text: the common leaves directly, the rest through dump_value.
    values: dict[str, str] = {}
    string = encode_basestring
    for k, v in obj.items():
        t = type(v)
        if t is int:
            values[k] = int.__repr__(v)
        elif t is str and v.isascii():
            values[k] = string(v)
        elif v is None:
            values[k] = "null"
        elif t is bool:
            values[k] = "true" if v else "false"
        else:
            values[k] = dump_value(k, v)
    return values


#: The columns of store.TASK_COLUMNS and store.CHANGE_COLUMNS, and how each is read.
TASK_FIELDS = (
    ("id", None), ("change_id", None), ("kind", None), ("summary", None), ("status", None),
    ("waited_status", None), ("clean", None), ("progress_label", None), ("progress_done", "int"),
    ("progress_total", "int"), ("data", None), ("spawn_time", "time"), ("ready_time", "time"),
    ("at_time", "time"), ("doing_time", "float"), ("undoing_time", "float"), ("attempts", "int"),
    ("retry_attempts", "int"), ("retry_since", "time"),
)
CHANGE_FIELDS = (
    ("id", None), ("kind", None), ("summary", None), ("status", None), ("explicit_status", None),
    ("clean", None), ("data", None), ("spawn_time", "time"), ("ready_time", "time"),
)


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{value!r} is not an integer")


def _not_text(value: Any) -> str:
    raise TypeError(f"{value!r} is not text")


def _damaged(what: str, row: tuple[Any, ...], fields: tuple[tuple[str, str | None], ...],
             error: BaseException) -> Exception:
    """_damaged builds the error for a row that cannot be read, naming the column at fault."""

    for (name, kind), value in zip(fields, row, strict=False):
        try:
            if kind == "time" and value is not None:
                from_text(value)
            elif kind == "int" and value is not None:
                _int(value)
            elif kind == "float":
                float(value)
        except (TypeError, ValueError, OverflowError):
            return DatabaseCorruptError(f"cannot load {what} {row[0]}: its {name} {value!r} cannot be read")
    return DatabaseCorruptError(f"cannot load {what} {row[0]}: {error}")


class Data:
    """Data is the lazily parsed key/value bag of a change or task."""

    __slots__ = ("text", "values")

    def __init__(self, text: str = "{}") -> None:
        #: text is the JSON object text while it matches values (None: values changed since).
        self.text: str | None = text
        self.values: dict[str, str] | None = None if text != "{}" else {}

    def items(self, what: str) -> dict[str, str]:
        """items returns the parsed mapping of keys to JSON texts, to read."""
        if self.values is None:
            self.values = load_data(self.text or "{}", what)
        return self.values

    def mutable(self, what: str) -> dict[str, str]:
        """mutable returns the mapping to change: the text is made again at the next dump."""
        if self is EMPTY_DATA:
            raise RuntimeError(f"internal error: the data of {what} is shared: give it its own (own_data)")
        values = self.items(what)
        self.text = None
        return values

    def check(self, what: str) -> None:
        """check raises DatabaseCorruptError if the stored text is not a JSON object (nothing is kept)."""
        if self.values is None and self.text not in (None, "{}"):
            try:
                ok = isinstance(json.loads(self.text or "{}"), dict)
            except ValueError:
                ok = False
            if not ok:
                load_data(self.text or "{}", what)  # raises, saying what is wrong

    def dump(self) -> str:
        """dump returns the JSON object text to store, made again only when the values changed."""
        if self.text is None:
            self.text = dump_data(self.values or {})
        return self.text


#: EMPTY_DATA is the data of every task that holds none (new tasks, most rows): shared, never changed; a task
#: gets its own Data when a value is set (own_data). One object and one dict fewer per task.
EMPTY_DATA = Data()


def own_data(rec: TaskRec) -> Data:
    """own_data is the task's Data to change: its own, made now if it shared EMPTY_DATA."""
    data = rec.data
    if data is EMPTY_DATA:
        data = rec.data = Data()
    return data


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
        "stored",
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
        self.data = EMPTY_DATA
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
        # None until loaded; new tasks start complete and empty: a shared empty tuple each, a list once something
        # is added (engine.cache's own_* accessors): four lists fewer per task to allocate and for the garbage
        # collector to track.
        self.wait_ids: Sequence[int] | None = ()
        self.halt_ids: Sequence[int] | None = ()
        self.lanes: Sequence[int] | None = ()
        self.log: Sequence[tuple[str, str, str]] | None = ()
        # The public Task of the record (engine.task), made on first use.
        self.handle: Any = None
        # The row as the database holds it (TASK_COLUMNS order), kept while the task is unready once
        # loaded or rewritten, or None: a single writer rewrites only the columns that differ from it
        # (engine.changeset.ChangeSet.task_changes).
        self.stored: tuple[Any, ...] | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TaskRec:
        """from_row builds a record from a row in store.TASK_COLUMNS order.

        A row that cannot be read (a hand-edited time, count or status)
        raises DatabaseCorruptError naming the task and the column.
        """
        try:
            return cls._from_row(row)
        except (TypeError, ValueError, OverflowError) as e:
            raise _damaged("task", row, TASK_FIELDS, e) from None

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> TaskRec:
        rec = cls.__new__(cls)
        (rec.id, rec.change_id, rec.kind, rec.summary, status, waited, clean, label, done, total, data,
         spawn, ready, at, doing, undoing, attempts, retry_attempts, retry_since) = row
        what = f"task {rec.id}"
        rec.status = status_of(status, what)
        rec.waited_status = status_of(waited, what)
        rec.clean = bool(clean)
        rec.progress = (str(label or ""), _int(done), _int(total)) \
            if total is not None and done is not None else None
        text = data if isinstance(data, str) else "{}" if data is None else _not_text(data)
        rec.data = EMPTY_DATA if text == "{}" else Data(text)
        rec.spawn_time = from_text(spawn)
        rec.ready_time = opt_from_text(ready)
        rec.spawn_text = spawn
        rec.ready_text = ready
        rec.at_time = opt_from_text(at)
        rec.doing_time = float(doing)
        rec.undoing_time = float(undoing)
        rec.attempts = _int(attempts)
        rec.retry_attempts = _int(retry_attempts)
        rec.retry_since = opt_from_text(retry_since)
        if not isinstance(rec.kind, str) or not isinstance(rec.summary, str):
            raise TypeError("its kind and summary must be text")
        rec.wait_ids = rec.halt_ids = rec.lanes = rec.log = None
        rec.handle = None
        rec.stored = None if rec.status.ready else row if type(row) is tuple else tuple(row)
        return rec

    def row(self) -> tuple[Any, ...]:
        """row returns the values in store.TASK_COLUMNS order (every task written, each time: kept plain)."""
        label, done, total = self.progress if self.progress is not None else (None, None, None)
        data, at, since = self.data, self.at_time, self.retry_since
        return (
            self.id, self.change_id, self.kind, self.summary, self.status.text, self.waited_status.text,
            self.clean, label, done, total, data.text if data.text is not None else data.dump(), self.spawn_text,
            self.ready_text, None if at is None else to_text(at), self.doing_time, self.undoing_time,
            self.attempts, self.retry_attempts, None if since is None else to_text(since),
        )

    def new_row(self) -> tuple[Any, ...] | None:
        """new_row is the row in store.NEW_TASK_COLUMNS order of a task as new_task made it, or None.

        None: a column beyond those holds something else (a status, data,
        progress set before the first commit), and row() is written.
        """
        if self.is_fresh():
            return (self.id, self.change_id, self.kind, self.summary, self.spawn_text)
        return None

    def is_fresh(self) -> bool:
        """is_fresh says whether every column beyond NEW_TASK_COLUMNS holds what new_task gives it."""
        return (self.status is Status.DO and self.waited_status is Status.DONE and not self.clean
                and self.progress is None and self.data.text == "{}" and self.ready_text is None
                and self.at_time is None and not self.doing_time and not self.undoing_time and not self.attempts
                and not self.retry_attempts and self.retry_since is None)


#: FRESH_ROW as TaskRec.stored says that the database holds the task's row as new_task made it, in a change
#: (engine.changeset.ChangeSet.stored): fresh_row() rebuilds it when it is compared, so that a big fan-out's
#: first rewrite (its claim) is an UPDATE of the status alone, not of the whole row, and no row is kept per
#: task meanwhile. (A unique object: compared by identity.)
FRESH_ROW: tuple[Any, ...] = ("fresh row",)


def fresh_row(rec: TaskRec) -> tuple[Any, ...]:
    """fresh_row is the whole row (store.TASK_COLUMNS order) that new_row() inserted for rec, in its change.

    Its id, change (set once: FRESH_ROW is noted only for a task inserted in its change), kind, summary and
    spawn time never change; every other column holds what new_task gives it.
    """
    return (rec.id, rec.change_id, rec.kind, rec.summary, "Do", "Done", False, None, None, None, "{}",
            rec.spawn_text, None, None, 0.0, 0.0, 0, 0, None)


def new_task_rows(recs: list[TaskRec]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """new_task_rows splits the rows of new tasks: full rows (insert_tasks), and new_row()s (insert_new_tasks)."""
    full, fresh = [], []
    for rec in recs:
        row = rec.new_row()
        if row is None:
            full.append(rec.row())
        else:
            fresh.append(row)
    return full, fresh


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
        # The public Change of the record (engine.change), made on first use.
        self.handle: Any = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ChangeRec:
        """from_row builds a record from a row in store.CHANGE_COLUMNS order.

        A row that cannot be read raises DatabaseCorruptError naming the
        change and the column.
        """
        try:
            return cls._from_row(row)
        except (TypeError, ValueError, OverflowError) as e:
            raise _damaged("change", row, CHANGE_FIELDS, e) from None

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> ChangeRec:
        rec = cls.__new__(cls)
        rec.id, rec.kind, rec.summary, status, explicit, clean, data, spawn, ready = row
        what = f"change {rec.id}"
        # The stored status is derived (the engine rewrites it): an unknown
        # one is rewritten at the next commit that touches the change.
        rec.db_status = _STATUS.get(status, Status.DEFAULT) if isinstance(status, str) else Status.DEFAULT
        rec.observed = rec.db_status
        rec.explicit = status_of(explicit, what) if explicit is not None else None
        rec.clean = bool(clean)
        rec.data = Data(data if isinstance(data, str) else "{}" if data is None else _not_text(data))
        rec.spawn_time = from_text(spawn)
        rec.ready_time = opt_from_text(ready)
        if not isinstance(rec.kind, str) or not isinstance(rec.summary, str):
            raise TypeError("its kind and summary must be text")
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
        todo = self.todo
        items = list(todo)
        if self.done:
            self.done.update(todo)
            todo.clear()
        else:  # (most often: the sets swap, no copy)
            self.todo, self.done = self.done, todo
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
