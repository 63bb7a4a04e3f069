# SPDX-License-Identifier: GPL-3.0-or-later
"""The assertions table and its book: signed documents kept by (type, primary key), newest revision only.

The table is the assert manager's own, declared on engine.metadata and
reached through st.table() (engine.tables): what the book puts is written
in the same transaction as the rest of the state, and rolled back with it.
The book enforces the revision rule: a newer revision replaces the stored
one, the same document again is a no-op, an older revision (or the same
revision with other content) is refused. It stores text and headers as it
is handed them: checking signatures is assertstate's job, before it puts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, Integer, PrimaryKeyConstraint, String, Table, Text, select

import engine
from engine import State

from ..errors import AssertionRevisionError

_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,63}\Z")

#: The newest known revision of each signed document; its schema is migration 0002_assertions's.
ASSERTIONS = Table(
    "assertions", engine.metadata,
    # What kind of document it is, e.g. "snap-revision".
    Column("type", String(64), nullable=False),
    # The values of the type's primary-key headers, joined with "/".
    Column("primary_key", Text, nullable=False),
    Column("revision", Integer().with_variant(BigInteger(), "postgresql"), nullable=False),
    # Who signed it (its "authority-id" header), when it has one.
    Column("authority_id", Text),
    # Every header, as one JSON object, for json_extract().
    Column("headers", Text, nullable=False),
    # The document exactly as signed: headers, body and signature.
    Column("text", Text, nullable=False),
    Column("added_time", String(32), nullable=False),
    PrimaryKeyConstraint("type", "primary_key"),
    CheckConstraint("json_valid(headers)", name="headers").ddl_if(dialect="sqlite"),
    CheckConstraint("(headers::json IS NOT NULL)", name="headers").ddl_if(dialect="postgresql"),
    CheckConstraint("revision >= 0", name="revision"),
)


def _time_text(when: datetime) -> str:
    """_time_text is the engine's fixed-width UTC time text (as in every table of the state database)."""
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"


def _from_time_text(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


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

    def row(self) -> dict[str, Any]:
        """row is the assertion as a row of ASSERTIONS."""
        return {"type": self.type, "primary_key": "/".join(self.primary_key), "revision": self.revision,
                "authority_id": self.authority_id,
                "headers": json.dumps(dict(self.headers), sort_keys=True, ensure_ascii=False, separators=(",", ":")),
                "text": self.text, "added_time": _time_text(self.added_time)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredAssertion:
        """from_row reads a row of ASSERTIONS."""
        return cls(str(row["type"]), tuple(str(row["primary_key"]).split("/")), int(row["revision"]),
                   str(row["text"]), json.loads(row["headers"]), _from_time_text(str(row["added_time"])))


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
    """AssertionBook is a State's assertions (ASSERTIONS through st.table); every method needs the state lock."""

    def __init__(self, st: State) -> None:
        self._rows = st.table(ASSERTIONS)

    def now(self) -> datetime:
        """now is the State clock's time."""
        return self._rows.now()

    def get(self, type: str, primary_key: Sequence[str]) -> StoredAssertion | None:
        """get returns the stored assertion of type with primary_key, or None."""
        row = self._rows.get(type, "/".join(_check_key(type, primary_key)))
        return StoredAssertion.from_row(row) if row is not None else None

    def find(self, type: str, headers: Mapping[str, str] | None = None) -> list[StoredAssertion]:
        """find returns the assertions of type whose headers have the given values, by primary key."""
        _check_key(type, ["x"])
        want = dict(headers or {})
        rows = self._rows.select(select(ASSERTIONS).where(ASSERTIONS.c.type == type))
        found = [StoredAssertion.from_row(r) for r in rows]
        out = [a for a in found if all(a.headers.get(n) == v for n, v in want.items())]
        return sorted(out, key=lambda a: a.primary_key)

    def put(self, type: str, primary_key: Sequence[str], revision: int, text: str,
            headers: Mapping[str, Any] | None = None) -> bool:
        """put stores an assertion at commit; it returns False when the same one is already stored.

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
        self._rows.put(StoredAssertion(type, key, revision, text, values, self._rows.now()).row())
        return True
