# SPDX-License-Identifier: GPL-3.0-or-later
"""Time helpers: how times and durations are stored and checked."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

#: The longest duration accepted anywhere: 1,000 years, so that now plus or
#: minus any duration is still a datetime.
MAX_SECONDS = 1000 * 365.25 * 86400


def system_clock() -> datetime:
    """system_clock returns the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def utc(when: datetime, what: str = "time") -> datetime:
    """utc returns when in UTC, refusing naive datetimes."""
    if when.__class__ is datetime and when.tzinfo is UTC:  # the system clock's (every new task, every outcome)
        return when
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime (got naive {when.isoformat()})")
    if when.utcoffset() != timedelta(0):
        return when.astimezone(UTC)
    return when


#: The second to_text formatted last: its fields (second first: what changes most often) and its text up to the
#: microseconds. One tuple, replaced whole: a thread reads a key and a text that belong together.
_SECOND: tuple[tuple[int, ...], str] = ((), "")


def to_text(when: datetime) -> str:
    """to_text formats a UTC time as fixed-width ISO-8601 text ending in Z.

    The text of strftime's "%Y-%m-%dT%H:%M:%S.%fZ", four digits of year
    below 1000 too. The date and time up to the second come from isoformat
    (cut before its fraction and offset) once per second met, then from
    _SECOND: every task a submit makes in the same second shares them
    (0.64 against 1.18 us a call).
    """
    global _SECOND
    key = (when.second, when.minute, when.hour, when.day, when.month, when.year)
    last = _SECOND
    if last[0] == key:
        prefix = last[1]
    else:
        prefix = when.isoformat()[:19] + "."
        _SECOND = (key, prefix)
    return f"{prefix}{when.microsecond:06d}Z"


def from_text(text: str) -> datetime:
    """from_text parses the text written by to_text (or any ISO-8601 time)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def opt_from_text(text: str | None) -> datetime | None:
    """opt_from_text is from_text that maps None to None."""
    return None if text is None else from_text(text)


def opt_to_text(when: datetime | None) -> str | None:
    """opt_to_text is to_text that maps None to None."""
    return None if when is None else to_text(when)


def rfc3339(when: datetime) -> str:
    """rfc3339 formats a UTC time to the second, as task log lines show it."""
    return f"{when:%Y-%m-%dT%H:%M:%S}Z"


def seconds(duration: float | int | timedelta, what: str = "duration", *, clamp: bool = False) -> float:
    """seconds converts a duration given as seconds or timedelta to seconds.

    A duration must be a finite number of seconds within MAX_SECONDS either
    way; with clamp, a longer finite one counts as MAX_SECONDS instead (a
    delay after which nothing can be due anyway). NaN and infinities are
    refused in both cases.
    """
    if isinstance(duration, timedelta):
        value = duration.total_seconds()
    elif isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {type(duration).__name__}")
    elif isinstance(duration, float) and not math.isfinite(duration):
        raise ValueError(f"{what} must be a finite number of seconds, not {duration!r}")
    else:
        value = float(duration) if abs(duration) < MAX_SECONDS else math.copysign(math.inf, duration)
    if not abs(value) < MAX_SECONDS:
        if clamp:
            return math.copysign(MAX_SECONDS, value)
        raise ValueError(f"{what} must be a finite number of seconds below {MAX_SECONDS:.0f}, not {duration!r}")
    return value


#: POLL_INTERVAL bounds a wait on a shared database (PostgreSQL): the overlord's loop, a notice waiter,
#: whatever the notifications say (one may be lost with a connection).
POLL_INTERVAL = 1.0
