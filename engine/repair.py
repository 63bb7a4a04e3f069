# SPDX-License-Identifier: GPL-3.0-or-later
"""Repair of failed changes: retrying one from where it failed, and selecting changes for bulk operations.

Change.retry moves the tasks of a ready change that failed back to Do: the
tasks in Error, those held (Hold: their lane was aborted, or they waited on
a failed task) and those undone (Undone: their work was undone when the
lane aborted); what is Done stays Done. The change is unready again, and
the runner runs the retried tasks in their wait-for order, each with a
fresh retry budget. Every retried task logs the new attempt, and the change
counts its attempts (Change.attempt). State.select_changes picks changes by
status, kind, age and label, for abort or retry in one unit of work (one
transaction). docs/requests.md tells both with examples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import ChangeConflictError, EngineError
from .status import Status

if TYPE_CHECKING:
    from ._work import Work

log = logging.getLogger("engine.state")


class Affecting(Protocol):
    """Affecting is what a retry asks of the State: the unready changes that affect some keys."""

    def affecting(self, keys: Iterable[str] | str, *, ignore: Any = None) -> list[Any]:
        """affecting are the unready changes (but ignore) that affect any of keys."""


class Repaired(Protocol):
    """Repaired is what repair reads and sets of a change (engine.change.Change is the one; it sits above)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def spawn_time(self) -> datetime: ...
    @property
    def attempt(self) -> int: ...
    @property
    def state(self) -> Affecting: ...

    def affects(self) -> list[str]: ...

    def has(self, key: str) -> bool: ...

    def get(self, key: str, default: Any = ...) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


C = TypeVar("C", bound=Repaired)

#: The change data key holding how many times a change was attempted (1 + its retries); Change.attempt reads it.
ATTEMPT_KEY = "attempt"
#: The statuses of the tasks a retry runs again.
RETRIED = (Status.ERROR, Status.HOLD, Status.UNDONE)


def retry_change(w: Work, chg: Repaired) -> list[str]:
    """retry_change runs the failed part of a ready change again; it returns the ids of the tasks retried.

    A change that is not ready, or has no task in Error, is refused with
    EngineError; one whose affected keys an unready change affects with
    ChangeConflictError (retrying makes it unready again).
    """
    rec = w.records.crec(int(chg.id))
    if rec.ready_time is None:
        raise EngineError(f"cannot retry change {chg.id}: it is not ready (status {chg.status})")
    recs = w.records.change_trecs(rec)
    if not any(t.status is Status.ERROR for t in recs):
        raise EngineError(f"cannot retry change {chg.id}: no task of it failed (status {chg.status})")
    keys = chg.affects()
    if keys:
        others = chg.state.affecting(keys, ignore=chg)
        if others:
            other = others[0]
            raise ChangeConflictError(other.id, f"cannot retry change {chg.id}: change {other.id} ({other.kind}) "
                                                "is in progress for what it affects", change_kind=other.kind)
    attempt = chg.attempt + 1
    w.own_change(rec)
    retried = []
    for t in recs:
        if t.status not in RETRIED:
            continue
        was = t.status
        w.set_task_status(t, Status.DO)
        t.ready_time = None
        t.ready_text = None
        t.at_time = None
        t.retry_attempts = 0  # a fresh budget under its retry policy
        t.retry_since = None
        t.clean = False
        w.dirty_task(t)
        w.add_log(t, "INFO", f"Retrying (attempt {attempt} of the change; was {was.value})")
        retried.append(str(t.id))
    rec.ready_time = None
    rec.clean = False
    rec.explicit = None
    chg.set(ATTEMPT_KEY, attempt)
    w.dirty_change(rec)
    w.touch(rec.id)
    store = w.store
    store.begin_write()
    store.reopen_change(rec.id)  # the row, as other hosts see it at the commit's settling (engine.shared)
    w.note_runnable()
    log.info("retrying change %s (%s), attempt %d: tasks %s", chg.id, chg.kind, attempt, ", ".join(retried))
    return retried


def select_changes(w: Work, changes: Iterable[C], *, status: Any = None, kind: Any = None,
                   before: datetime | None = None, label: tuple[str, Any] | None = None) -> list[C]:
    """select_changes filters changes: any of the statuses, any of the kinds, spawned before a time, and
    whose data holds label's value under label's key; None matches anything."""
    statuses = _set(status, Status, "status")
    kinds = _set(kind, str, "kind")
    out = []
    for chg in changes:
        if statuses is not None and chg.status not in statuses:
            continue
        if kinds is not None and chg.kind not in kinds:
            continue
        if before is not None and chg.spawn_time >= before:
            continue
        if label is not None and (not chg.has(label[0]) or chg.get(label[0]) != label[1]):
            continue
        out.append(chg)
    return out


def _set(value: Any, kind: type, what: str) -> set[Any] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, Status)) else list(value)
    out = set()
    for v in items:
        if kind is Status and isinstance(v, str):
            try:
                v = Status(v)
            except ValueError:
                raise ValueError(f"cannot select changes by status {v!r}: it is not a status") from None
        if not isinstance(v, kind):
            raise TypeError(f"cannot select changes by {what} {v!r}: it must be a {kind.__name__}")
        out.add(v)
    return out
