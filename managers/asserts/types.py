# SPDX-License-Identifier: GPL-3.0-or-later
"""The assertion types: their primary keys, required headers, bodies and prerequisites."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..snap.naming import SNAP_ID, valid_snap_name

#: DIGEST is a sha3-384 written as snapd writes it: 64 characters of base64url.
DIGEST = re.compile(r"^[A-Za-z0-9_-]{64}\Z")
#: ACCOUNT_ID is what an account id looks like (snapd allows these and 32-character ids).
ACCOUNT_ID = re.compile(r"^[a-z0-9](?:-?[a-z0-9])*\Z|^[a-zA-Z0-9]{32}\Z")
#: SERIES is the only series snapd knows.
SERIES = "16"

Check = Callable[[Mapping[str, Any], str], str | None]


def parse_time(value: str) -> datetime:
    """parse_time reads an RFC 3339 time such as 2030-01-01T00:00:00Z (aware)."""
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("the time has no zone (end it with Z)")
    return when


def _time(v: str) -> str | None:
    try:
        parse_time(v)
    except ValueError:
        return "is not an RFC 3339 time such as 2030-01-01T00:00:00Z"
    return None


#: INT_MAX is the largest integer header (snapd reads them as Go's int, 64 bits; SQLite stores as many).
INT_MAX = 2**63 - 1


def _int(minimum: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if (not v.isascii() or not v.isdigit() or (len(v) > 1 and v[0] == "0") or len(v) > len(str(INT_MAX))
                or not minimum <= int(v) <= INT_MAX):
            return f"must be an integer from {minimum} to {INT_MAX} without leading zeros"
        return None
    return check


def _match(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    return lambda v: None if pattern.match(v) else f"is not {what}"


FORMATS: dict[str, Callable[[str], str | None]] = {
    "timestamp": _time,
    "since": _time,
    "until": _time,
    "revision": _int(0),
    "body-length": _int(0),
    "snap-size": _int(1),
    "snap-revision": _int(1),
    "sign-key-sha3-384": _match(DIGEST, "a sha3-384 key id (64 characters of base64url)"),
    "public-key-sha3-384": _match(DIGEST, "a sha3-384 key id (64 characters of base64url)"),
    "snap-sha3-384": _match(DIGEST, "a sha3-384 digest (64 characters of base64url)"),
    "snap-id": _match(SNAP_ID, "a snap id (32 letters and digits)"),
    "authority-id": _match(ACCOUNT_ID, "an account id"),
    "account-id": _match(ACCOUNT_ID, "an account id"),
    "publisher-id": _match(ACCOUNT_ID, "an account id"),
    "developer-id": _match(ACCOUNT_ID, "an account id"),
    "snap-name": lambda v: None if valid_snap_name(v) else "is not a valid snap name",
    "series": lambda v: None if v == SERIES else f"must be {SERIES}",
    "validation": lambda v: None if v in ("verified", "unproven", "starred") else
    "must be verified, unproven or starred",
}


@dataclass(frozen=True)
class AssertionType:
    """AssertionType describes one type of assertion."""

    name: str
    #: The headers whose values identify an assertion of this type.
    primary_key: tuple[str, ...]
    #: Other headers it must have.
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    #: Whether it carries a body ("required") or must not ("forbidden").
    body: str = "forbidden"
    #: Whether only the trusted root may sign it.
    root_only: bool = True
    #: (type, headers naming its primary key) of the assertions it needs first;
    #: a part "=v" is the literal v.
    prerequisites: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def headers(self) -> tuple[str, ...]:
        """headers lists every header the type knows (besides the common ones)."""
        return self.primary_key + self.required + self.optional


ACCOUNT = AssertionType("account", ("account-id",), ("display-name", "timestamp"), ("validation",))
ACCOUNT_KEY = AssertionType(
    "account-key", ("public-key-sha3-384",), ("account-id", "name", "since"), ("until",), body="required",
    prerequisites=(("account", ("account-id",)),))
SNAP_DECLARATION = AssertionType(
    "snap-declaration", ("series", "snap-id"), ("snap-name", "publisher-id", "timestamp"),
    prerequisites=(("account", ("publisher-id",)),))
SNAP_REVISION = AssertionType(
    "snap-revision", ("snap-sha3-384",), ("snap-id", "snap-size", "snap-revision", "developer-id", "timestamp"),
    root_only=False,
    prerequisites=(("snap-declaration", ("=16", "snap-id")), ("account", ("developer-id",))))

#: TYPES are the assertion types this system knows, by name.
TYPES: dict[str, AssertionType] = {t.name: t for t in (ACCOUNT, ACCOUNT_KEY, SNAP_DECLARATION, SNAP_REVISION)}
#: COMMON are the headers of every assertion.
COMMON = ("type", "authority-id", "revision", "body-length", "sign-key-sha3-384")


def type_of(name: str) -> AssertionType:
    """type_of returns the AssertionType called name, or raises KeyError."""
    return TYPES[name]
