# SPDX-License-Identifier: GPL-3.0-or-later
"""Exceptions raised by the engine; EngineError is the base of all of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from ._time import seconds
from .status import Status


class EngineError(Exception):
    """internal error: unexpected engine failure"""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class NoStateError(EngineError, KeyError):
    """NoStateError means no value is stored under the requested key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no state entry for key {key!r}")

    def __str__(self) -> str:  # KeyError would quote the message again
        return str(self.args[0])


class NotFoundError(EngineError, LookupError):
    """NotFoundError means a change or task no longer exists in the database."""


class TaskDependencyCycleError(EngineError):
    """TaskDependencyCycleError lists the tasks whose wait-for edges form a cycle."""

    def __init__(self, ids: Sequence[str], message: str) -> None:
        self.ids = list(ids)
        super().__init__(message)


class ChangeError(EngineError):
    """ChangeError holds the errors logged on the failed tasks of a change."""

    def __init__(self, errors: Sequence[tuple[str, str]], message: str | None = None) -> None:
        self.errors = list(errors)
        lines = ["cannot perform the following tasks:"]
        lines += [f"- {summary} ({error})" for summary, error in self.errors]
        super().__init__(message or "\n".join(lines))


class ChangeConflictError(EngineError):
    """ChangeConflictError means a change would touch what an unready change already touches."""

    def __init__(self, change_id: str, message: str | None = None, *, change_kind: str | None = None,
                 subject: str | None = None) -> None:
        self.change_id = str(change_id)
        self.change_kind = change_kind
        self.subject = subject
        if message is None:
            what = f"change {self.change_id}" + (f" ({change_kind})" if change_kind else "")
            message = f"cannot start a change{' for ' + subject if subject else ''}: {what} is in progress"
        super().__init__(message)


class DatabaseError(EngineError):
    """DatabaseError means the state database cannot be opened or used."""


class DatabaseCorruptError(DatabaseError):
    """DatabaseCorruptError means the file is damaged or is not a state database."""


class SchemaVersionError(DatabaseError):
    """SchemaVersionError means the database was written by a newer version."""


class DatabaseBusyError(DatabaseError):
    """DatabaseBusyError means another process held the write lock for too long."""


class DatabaseConflictError(DatabaseBusyError):
    """DatabaseConflictError means the unit of work was rolled back for now: run it again.

    PostgreSQL: a deadlock or serialization failure against another host, or
    a connection lost mid-transaction (the server restarted). Unlike a busy
    SQLite database, nothing is kept: the next unit of work reads afresh.
    """


class DatabaseFullError(DatabaseError):
    """DatabaseFullError means the disk (or the database's size limit) is full."""

    def __init__(self, message: str | None = None, *, kept: bool = False) -> None:
        #: kept says whether the message already tells that the work was kept.
        self.kept = kept
        super().__init__(message)


def keeps_work(error: BaseException) -> bool:
    """keeps_work says whether a failed commit keeps its unit of work for the next commit.

    Only a busy or full database, or an interruption (KeyboardInterrupt,
    SystemExit) while writing, keep it: the work itself was sound. A unit
    of work that conflicted with another host (DatabaseConflictError) is
    rolled back instead: what it read may be stale.
    """
    if isinstance(error, DatabaseConflictError):
        return False
    return isinstance(error, (DatabaseBusyError, DatabaseFullError)) or not isinstance(error, Exception)


class DatabaseInUseError(DatabaseError):
    """DatabaseInUseError means another writer (an Overlord or a writing State) holds the database."""


class DatabaseReplacedError(DatabaseError):
    """DatabaseReplacedError means the path no longer names the file a writer opened (replaced, moved, deleted).

    The writer refuses that commit and every later one; its Overlord's loop stops.
    """


class ReadOnlyStateError(EngineError):
    """ReadOnlyStateError means the State may not write: it was opened read-only, or its overlord stopped."""


class EnsureError(EngineError):
    """EnsureError gathers the errors of every manager whose ensure failed."""

    def __init__(self, errors: Sequence[BaseException], what: str = "ensure") -> None:
        self.errors = list(errors)
        listed = "; ".join(f"{type(e).__name__}: {e}" for e in self.errors)
        super().__init__(f"state {what} errors: [{listed}]")


class Retry(EngineError):
    """Retry, raised by a handler, asks for the task to run again later."""

    def __init__(self, after: float | timedelta = 0, reason: str = "") -> None:
        self.after = max(0.0, seconds(after, "Retry after"))
        self.reason = reason
        super().__init__(f"task should be retried{': ' + reason if reason else ''}")


class Wait(EngineError):
    """Wait, raised by a handler, parks the task until an external event."""

    def __init__(self, reason: str = "", waited_status: Status = Status.DONE) -> None:
        if waited_status is Status.DEFAULT:
            waited_status = Status.DONE
        if waited_status is Status.WAIT:
            raise ValueError("cannot wait for status Wait")
        self.reason = reason
        self.waited_status = waited_status
        super().__init__(f"task set to wait{': ' + reason if reason else ''}")
