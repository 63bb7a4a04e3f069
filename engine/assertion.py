# SPDX-License-Identifier: GPL-3.0-or-later
"""Assertions: signed documents kept by (type, primary key), newest revision only.

The engine does not read signatures: it stores what a manager hands it (the
document's text, its headers and its revision) in the ``assertions`` table,
in the same unit of work as everything else written under the state lock,
and enforces the revision rule: a newer revision replaces the stored one, the
same document again is a no-op, an older revision (or the same revision with
other content) is refused. Checking signatures is the manager's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import Pending
from .errors import AssertionRevisionError

if TYPE_CHECKING:
    from ._work import Work
    from .store import Store

_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")

Key = tuple[str, str]


@dataclass(frozen=True)
class StoredAssertion:
    """StoredAssertion is one assertion as the state database holds it."""

    type: str
    primary_key: tuple[str, ...]
    revision: int
    text: str
    headers: Mapping[str, Any]
    added_time: datetime

    @property
    def authority_id(self) -> str | None:
        """authority_id is the "authority-id" header, when there is one."""
        value = self.headers.get("authority-id")
        return value if isinstance(value, str) else None

    def row(self) -> tuple[Any, ...]:
        """row returns the values in the order of engine.store.statements.ASSERTION_COLUMNS."""
        return (self.type, "/".join(self.primary_key), self.revision, self.authority_id,
                json.dumps(dict(self.headers), sort_keys=True, ensure_ascii=False, separators=(",", ":")),
                self.text, _time.to_text(self.added_time))


def _from_row(row: Sequence[Any]) -> StoredAssertion:
    typ, key, revision, _authority, headers, text, added = row
    return StoredAssertion(str(typ), tuple(str(key).split("/")), int(revision), str(text),
                           json.loads(headers), _time.from_text(added))


def _check_key(typ: str, primary_key: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(typ, str) or not _TYPE.match(typ):
        raise ValueError(f"cannot use assertion type {typ!r}: lowercase letters, digits and dashes only")
    if isinstance(primary_key, str) or not primary_key:
        raise ValueError(f"cannot use primary key {primary_key!r} of {typ}: give a non-empty sequence of strings")
    key = tuple(primary_key)
    for part in key:
        if not isinstance(part, str) or not part or "/" in part:
            raise ValueError(f"cannot use primary key {key!r} of {typ}: each part must be non-empty text "
                             "without '/'")
    return key


class AssertionBook:
    """AssertionBook holds a State's assertions: st.assertions; every method needs the state lock."""

    def __init__(self, w: Work) -> None:
        self._w = w
        # Looked-up and written assertions; None records a known absence.
        self._loaded: dict[Key, StoredAssertion | None] = {}
        self.dirty: Pending[Key] = Pending()

    # -- the unit of work's side ----------------------------------------------

    @property
    def pending(self) -> bool:
        """pending says whether anything is left to write."""
        return bool(self.dirty)

    def pendings(self) -> tuple[Pending[Key]]:
        """pendings returns the write bookkeeping, for commit and rollback."""
        return (self.dirty,)

    def forget(self) -> None:
        """forget drops what was loaded; it reloads on next use."""
        self._loaded.clear()

    def flush(self, store: Store) -> None:
        """flush writes the assertions put since the last flush."""
        if not self.dirty:
            return
        rows = [a.row() for k in self.dirty.take() if (a := self._loaded.get(k)) is not None]
        store.save_assertions(rows)

    # -- the public API ------------------------------------------------------------

    def get(self, type: str, primary_key: Sequence[str]) -> StoredAssertion | None:
        """get returns the stored assertion of type with primary_key, or None."""
        self._w.check()
        k = (type, "/".join(_check_key(type, primary_key)))
        if k not in self._loaded:
            row = self._w.store.assertion_row(*k)
            self._loaded[k] = _from_row(row) if row is not None else None
        return self._loaded[k]

    def find(self, type: str, headers: Mapping[str, str] | None = None) -> list[StoredAssertion]:
        """find returns the assertions of type whose headers have the given values, by primary key."""
        self._w.check()
        _check_key(type, ["x"])
        want = dict(headers or {})
        found = {(type, str(row[1])): _from_row(row) for row in self._w.store.assertion_rows(type)}
        # What this unit of work wrote (or loaded) wins over the database.
        for k, a in self._loaded.items():
            if k[0] == type and a is not None:
                found[k] = a
        out = [a for a in found.values() if all(a.headers.get(n) == v for n, v in want.items())]
        return sorted(out, key=lambda a: a.primary_key)

    def put(self, type: str, primary_key: Sequence[str], revision: int, text: str,
            headers: Mapping[str, Any] | None = None) -> bool:
        """put stores an assertion; it returns False when the same one is already stored.

        A newer revision replaces the stored one; an older revision, or the
        same revision with other text, raises AssertionRevisionError.
        """
        key = _check_key(type, primary_key)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError(f"cannot store {type} {'/'.join(key)}: revision must be an integer >= 0")
        if not isinstance(text, str) or not text:
            raise ValueError(f"cannot store {type} {'/'.join(key)}: its text is empty")
        values = dict(headers or {})
        try:
            json.dumps(values, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"cannot store {type} {'/'.join(key)}: headers are not JSON-serialisable ({e})") from None
        current = self.get(type, key)
        what = f"{type} {'/'.join(key)!r}"
        if current is not None:
            if current.revision == revision and current.text == text:
                return False
            if current.revision > revision:
                raise AssertionRevisionError(
                    f"cannot add {what}: revision {revision} is older than the stored revision {current.revision}",
                    current=current.revision, used=revision)
            if current.revision == revision:
                raise AssertionRevisionError(
                    f"cannot add {what}: revision {revision} is already stored with other content",
                    current=current.revision, used=revision)
        k = (type, "/".join(key))
        self._loaded[k] = StoredAssertion(type, key, revision, text, values, self._w.now())
        self.dirty.add(k)
        return True
