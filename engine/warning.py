# SPDX-License-Identifier: GPL-3.0-or-later
"""Warnings: messages for the user, shown again after a while, then expired."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import Pending
from ._values import clean_text

if TYPE_CHECKING:
    from ._work import Work
    from .store import Store

log = logging.getLogger("engine.state")

#: DEFAULT_REPEAT_AFTER is how long a shown warning stays quiet (snapd: 24 h).
DEFAULT_REPEAT_AFTER = timedelta(hours=24)
#: DEFAULT_EXPIRE_AFTER is how long a warning lives after it was last added (snapd: 28 days).
DEFAULT_EXPIRE_AFTER = timedelta(days=28)


@dataclass
class StateWarning:
    """StateWarning is one warning; str() gives its message."""

    message: str
    first_added: datetime
    last_added: datetime
    last_shown: datetime | None
    expire_after: timedelta
    repeat_after: timedelta

    def __str__(self) -> str:
        return self.message

    def expired_before(self, now: datetime) -> bool:
        """expired_before returns whether the warning expired before now."""
        return self.last_added + self.expire_after < now

    def show_after(self, t: datetime) -> bool:
        """show_after returns whether the warning is due to be shown at t."""
        if self.last_shown is None:
            return self.first_added <= t
        return self.last_shown + self.repeat_after < t

    def row(self) -> tuple[Any, ...]:
        """row returns the values in engine.store.statements.WARNING_COLUMNS order."""
        return (self.message, _time.to_text(self.first_added), _time.to_text(self.last_added),
                _time.opt_to_text(self.last_shown), self.expire_after.total_seconds(),
                self.repeat_after.total_seconds())


class WarningBook:
    """WarningBook holds a State's warnings, loaded on first use."""

    def __init__(self, w: Work) -> None:
        self._w = w
        self._loaded: dict[str, StateWarning] | None = None
        self.dirty: Pending[str] = Pending()
        self.deleted: Pending[str] = Pending()

    @property
    def pending(self) -> bool:
        """pending says whether anything is left to write."""
        return bool(self.dirty) or bool(self.deleted)

    def pendings(self) -> tuple[Pending[str], Pending[str]]:
        """pendings returns the write bookkeeping, for commit and rollback."""
        return self.dirty, self.deleted

    def forget(self) -> None:
        """forget drops the loaded warnings; they reload on next use."""
        self._loaded = None

    def _all(self) -> dict[str, StateWarning]:
        if self._loaded is None:
            self._loaded = {}
            for message, first, last, shown, expire, repeat in self._w.store.warning_rows():
                try:
                    self._loaded[message] = StateWarning(
                        message, _time.from_text(first), _time.from_text(last), _time.opt_from_text(shown),
                        timedelta(seconds=expire), timedelta(seconds=repeat))
                except (TypeError, ValueError, OverflowError) as e:
                    log.error("skipping warning %r: its row cannot be read (%s)", message, e)
        return self._loaded

    def add(self, message: str, repeat_after: float | timedelta | None,
            expire_after: float | timedelta | None) -> None:
        """add records message now, creating the warning if it is new."""
        if isinstance(message, str):
            message = clean_text(message, "warning message")
        if not isinstance(message, str) or not message or message.strip() != message:
            raise ValueError(f"cannot add warning {message!r}: the message must be non-empty text "
                             "without leading or trailing space")
        repeat = DEFAULT_REPEAT_AFTER if repeat_after is None else \
            timedelta(seconds=_time.seconds(repeat_after, "repeat_after"))
        expire = DEFAULT_EXPIRE_AFTER if expire_after is None else \
            timedelta(seconds=_time.seconds(expire_after, "expire_after"))
        if repeat <= timedelta(0) or expire <= timedelta(0):
            raise ValueError(f"cannot add warning {message!r}: repeat_after and expire_after must be positive")
        now = self._w.now()
        warnings = self._all()
        w = warnings.get(message)
        if w is None:
            w = warnings[message] = StateWarning(message, now, now, None, expire, repeat)
        w.last_added = now
        self.dirty.add(message)
        # Warnings are notices too (snapd): clients waiting on notices see them come.
        self._w.notices.add("warning", message, repeat_after=repeat, expire_after=expire, check_key=False)

    def all(self) -> list[StateWarning]:
        """all returns the unexpired warnings by last_added."""
        now = self._w.now()
        return sorted((w for w in self._all().values() if not w.expired_before(now)), key=lambda w: w.last_added)

    def pending_warnings(self) -> list[StateWarning]:
        """pending_warnings returns the warnings due now by last_added."""
        now = self._w.now()
        return sorted((w for w in self._all().values() if w.show_after(now) and not w.expired_before(now)),
                      key=lambda w: w.last_added)

    def okay(self, t: datetime) -> int:
        """okay marks the warnings due at t as shown."""
        n = 0
        for w in self._all().values():
            if w.show_after(t):
                w.last_shown = t
                self.dirty.add(w.message)
                n += 1
        return n

    def prune(self, now: datetime) -> None:
        """prune deletes expired warnings."""
        warnings = self._all()
        for message in [m for m, w in warnings.items() if w.expired_before(now)]:
            del warnings[message]
            self.deleted.add(message)

    def flush(self, store: Store) -> None:
        """flush writes changed and deleted warnings."""
        if not self.pending:
            return
        warnings = self._all()
        deleted = self.deleted.take()
        rows = [warnings[m].row() for m in self.dirty.take() if m in warnings]
        store.save_warnings(rows, deleted)
