# SPDX-License-Identifier: GPL-3.0-or-later
"""Notices: occurrences of events aggregated by type and key, which clients wait on (snapd's notices).

A notice is identified by its type ("change-update", "warning", or one of
the application's) and its key (a change id, a warning message ...).
Adding one that exists counts an occurrence: its last occurrence, last data
and count change, and its "last repeated" time moves on unless the
notice asked not to repeat within repeat_after. Waiters ask for the notices
repeated after a time, so an occurrence that does not repeat wakes nobody.
A notice expires expire_after (7 days by default) after its last
occurrence; State.prune deletes it then. Notices are rows of the notices
table, written by the commit of the unit of work that added them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import Pending
from ._values import clean_text

if TYPE_CHECKING:
    from ._work import Work
    from .store import Store

log = logging.getLogger("engine.state")

#: DEFAULT_EXPIRE_AFTER is how long a notice lives after its last occurrence (snapd: 7 days).
DEFAULT_EXPIRE_AFTER = timedelta(days=7)
#: MAX_KEY_LENGTH is the longest key, in UTF-8 bytes, add_notice takes (snapd's limit; warnings have none).
MAX_KEY_LENGTH = 256
#: The notice types the engine records itself.
CHANGE_UPDATE = "change-update"
WARNING = "warning"

_TYPE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")
#: How many notices the book keeps in memory between units of work (the rest are read again when added).
_KEEP = 1024


@dataclass
class Notice:
    """Notice is one aggregated notice: every occurrence of an event of one type and key."""

    #: id is the notice's own id ("1", "2", ... its own sequence), given at its first occurrence.
    id: str
    type: str
    key: str
    first_occurred: datetime
    last_occurred: datetime
    #: last_repeated is when the notice last counted as new: waiters' "after" compares with it.
    last_repeated: datetime
    occurrences: int
    #: last_data is the data given with the last occurrence (str to str).
    last_data: dict[str, str] = field(default_factory=dict)
    #: repeat_after: occurrences within it of last_repeated do not repeat the notice (0: all do).
    repeat_after: timedelta = timedelta(0)
    expire_after: timedelta = DEFAULT_EXPIRE_AFTER

    def __str__(self) -> str:
        return f"notice {self.id} ({self.type}:{self.key})"

    def expired(self, now: datetime) -> bool:
        """expired says whether the notice expired at now (expire_after after its last occurrence)."""
        return self.last_occurred + self.expire_after < now

    def to_json(self) -> dict[str, Any]:
        """to_json is the notice as snapd's API shows it (durations in Go's notation, e.g. "168h0m0s")."""
        out: dict[str, Any] = {
            "id": self.id, "user-id": None, "type": self.type, "key": self.key,
            "first-occurred": _time.to_text(self.first_occurred),
            "last-occurred": _time.to_text(self.last_occurred),
            "last-repeated": _time.to_text(self.last_repeated),
            "occurrences": self.occurrences,
        }
        if self.last_data:
            out["last-data"] = dict(self.last_data)
        if self.repeat_after:
            out["repeat-after"] = go_duration(self.repeat_after)
        out["expire-after"] = go_duration(self.expire_after)
        return out

    def row(self) -> tuple[Any, ...]:
        """row is the notice in engine.store.statements.NOTICE_COLUMNS order."""
        return (int(self.id), self.type, self.key, _time.to_text(self.first_occurred),
                _time.to_text(self.last_occurred), _time.to_text(self.last_repeated), self.occurrences,
                json.dumps(self.last_data, sort_keys=True), self.repeat_after.total_seconds(),
                self.expire_after.total_seconds(), _time.to_text(self.last_occurred + self.expire_after))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Notice:
        """from_row reads a row of the notices table (ValueError, TypeError: it cannot be read)."""
        nid, type, key, first, last, repeated, occurrences, data, repeat, expire, _ = row
        parsed = json.loads(data or "{}")
        if not isinstance(parsed, dict):
            raise ValueError("last_data is not a JSON object")
        return cls(str(nid), str(type), str(key), _time.from_text(first), _time.from_text(last),
                   _time.from_text(repeated), int(occurrences), {str(k): str(v) for k, v in parsed.items()},
                   timedelta(seconds=float(repeat or 0)), timedelta(seconds=float(expire)))


def go_duration(d: timedelta) -> str:
    """go_duration writes a duration as Go's time.Duration.String() does for whole and fractional seconds."""
    total = d.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.6f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{sign}{int(minutes)}m{text}"
    return sign + text


def check_type(type: object) -> str:
    """check_type returns a valid notice type or raises ValueError naming what is wrong."""
    if not isinstance(type, str) or not _TYPE.match(type) or len(type) > 64:
        raise ValueError(f"cannot add notice of type {type!r}: a type is lowercase words of letters and digits "
                         "joined by '-' (at most 64 characters), e.g. 'change-update'")
    return type


def check_data(type: str, data: Mapping[str, str] | None) -> dict[str, str]:
    """check_data returns a notice's data as a dict of str to str or raises TypeError naming what is wrong."""
    if data is None:
        return {}
    if not isinstance(data, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise TypeError(f"cannot add {type} notice: data must map str to str, not {data!r}")
    return {clean_text(k, "notice data key"): clean_text(v, "notice data value") for k, v in data.items()}


class NoticeBook:
    """NoticeBook is a unit of work's notices: those added in it, and those it read to aggregate."""

    def __init__(self, w: Work) -> None:
        self._w = w
        self._known: dict[tuple[str, str], Notice] = {}
        self.dirty: Pending[tuple[str, str]] = Pending()
        self.deleted: Pending[int] = Pending()
        self._last_time: datetime | None = None
        # The notices whose row exists (read from it, or written by a commit): an occurrence updates it in place.
        self._stored: set[tuple[str, str]] = set()
        #: repeated says that a notice was added or repeated since the last commit (waiters wake after it).
        self.repeated = False

    @property
    def pending(self) -> bool:
        """pending says whether anything is left to write."""
        return bool(self.dirty) or bool(self.deleted)

    def pendings(self) -> tuple[Pending[tuple[str, str]], Pending[int]]:
        """pendings returns the write bookkeeping, for commit and rollback."""
        return self.dirty, self.deleted

    def forget(self) -> None:
        """forget drops what was read; it is read again on next use."""
        self._known.clear()
        self._stored.clear()
        self.repeated = False

    def _now(self) -> datetime:
        # Two occurrences never share a time: a waiter that saw one asks for what came after it.
        now = self._w.now()
        last = self._last_time
        if last is not None and now <= last:
            now = last + timedelta(microseconds=1)
        self._last_time = now
        return now

    def _get(self, type: str, key: str, new: bool, now: datetime) -> Notice | None:
        n = self._known.get((type, key))
        if n is not None and n.expired(now):
            n = None  # gone for everyone: it starts again (its row is replaced, with a new id)
        if n is not None or new:
            return n
        row = self._w.store.notice_row(type, key)
        if row is None:
            return None
        try:
            n = Notice.from_row(row)
        except (TypeError, ValueError, OverflowError) as e:
            log.error("replacing %s notice %r: its row cannot be read (%s)", type, key, e)
            return None
        if n.expired(now):
            return None
        self._known[(type, key)] = n
        self._stored.add((type, key))
        return n

    def add(self, type: str, key: str, data: Mapping[str, str] | None = None,
            repeat_after: float | timedelta | None = None, expire_after: float | timedelta | None = None,
            *, new: bool = False, check_key: bool = True) -> str:
        """add records an occurrence of the notice of type and key; it returns the notice's id.

        new says the notice cannot exist yet (a change just spawned): no look-up.
        """
        check_type(type)
        if not isinstance(key, str) or not key:
            raise ValueError(f"cannot add {type} notice with key {key!r}: the key must be non-empty text")
        key = clean_text(key, "notice key")
        if check_key and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_LENGTH:
            raise ValueError(f"cannot add {type} notice: its key is longer than {MAX_KEY_LENGTH} bytes")
        values = check_data(type, data)
        repeat = timedelta(0) if repeat_after is None else \
            timedelta(seconds=_time.seconds(repeat_after, "repeat_after"))
        expire = DEFAULT_EXPIRE_AFTER if expire_after is None else \
            timedelta(seconds=_time.seconds(expire_after, "expire_after"))
        if repeat < timedelta(0) or expire <= timedelta(0):
            raise ValueError(f"cannot add {type} notice {key!r}: repeat_after must not be negative and "
                             "expire_after must be positive")
        now = self._now()
        n = self._get(type, key, new, now)
        if n is None:
            n = Notice(str(self._w.next_id("notice")), type, key, now, now, now, 1, values, repeat, expire)
            self._known[(type, key)] = n
            self._stored.discard((type, key))  # (an expired one's row is replaced)
            self.repeated = True
        else:
            n.occurrences += 1
            if not repeat or now > n.last_repeated + repeat:
                n.last_repeated = now
                self.repeated = True
            n.last_occurred = now
            n.last_data = values
            n.repeat_after = repeat
            n.expire_after = expire
        self.dirty.add((type, key))
        return n.id

    def matching(self, after: datetime | None, types: Iterable[str] | None,
                 keys: Iterable[str] | None) -> list[Notice]:
        """matching returns the unexpired notices repeated after a time, of types and keys, oldest repeat first."""
        self._w.flush()
        now = self._w.now()
        since = "" if after is None else _time.to_text(_time.utc(after, "after"))
        tset = set(types) if types else None
        kset = set(keys) if keys else None
        out = []
        for row in self._w.store.notice_rows(since, _time.to_text(now)):
            if (tset is not None and row[1] not in tset) or (kset is not None and row[2] not in kset):
                continue
            try:
                out.append(Notice.from_row(row))
            except (TypeError, ValueError, OverflowError) as e:
                log.error("skipping notice %s: its row cannot be read (%s)", row[0], e)
        return out

    def prune(self, now: datetime) -> None:
        """prune deletes the notices that expired."""
        self._w.flush()
        ids = self._w.store.expired_notices(_time.to_text(now))
        if ids:
            gone = set(ids)
            for k in [k for k, n in self._known.items() if int(n.id) in gone]:
                del self._known[k]
            self.deleted.update(ids)
            log.debug("pruning %d expired notices", len(ids))

    def flush(self, store: Store) -> None:
        """flush writes the notices added and deletes the pruned ones."""
        if not self.pending:
            return
        deleted = self.deleted.take()
        rows, updates = [], []
        for k in self.dirty.take():
            n = self._known.get(k)
            if n is None:
                continue
            row = n.row()
            if k in self._stored:
                updates.append((*row[4:], row[0]))
            else:
                rows.append(row)
        store.save_notices(rows, deleted, updates)

    def committed(self) -> None:
        """committed keeps the book small once what it held is written."""
        self._stored.update(self._known)
        if len(self._known) > _KEEP and not self.dirty:
            self._known.clear()
            self._stored.clear()
