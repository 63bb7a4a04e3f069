# SPDX-License-Identifier: GPL-3.0-or-later
"""The settings of the system: the configuration of the pseudo-snap "system", with a check per option.

Only the options of SYSTEM_OPTIONS may be set (snapd refuses unknown system
options too); each value is checked when the change is made and again by
the change's task, before it is committed. Unsetting (null) is always
allowed. Others read these settings through configstate.snap_config(st,
"system", "refresh.timer").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from ..snapstate.schedule import parse_schedule

#: SYSTEM is the name under which the system's settings are kept (snapd's "system", its "core").
SYSTEM = "system"
#: RETAIN_RANGE is what refresh.retain may be (snapd's bounds on classic systems).
RETAIN_RANGE = (2, 20)



def check_timer(value: Any) -> str | None:
    """check_timer accepts snapd's timer syntax as the auto-refresh reads it (managers.snapstate.schedule).

    Events separated by ",,", each days and times separated by ",": days
    "mon", "mon-fri"; times "9:00", "9:00-11:00" (any time in between),
    "9:00~11:00" (a random point within), "9:00-17:00/4" (four slots).
    Examples: "4:00-7:00", "mon,10:00,,fri,15:00", "mon-fri,9:00~11:00".
    """
    if not isinstance(value, str) or not value.strip():
        return "must be a timer text such as '4:00-7:00' or 'mon,10:00,,fri,15:00'"
    if len(value) > 512:
        return "is longer than 512 characters"
    try:
        parse_schedule(value)
    except ValueError as e:
        return f"is not a timer: {e}"
    return None


def check_hold(value: Any) -> str | None:
    """check_hold accepts "forever" or an RFC 3339 time with a time zone (refreshes are held until then)."""
    if value == "forever":
        return None
    if not isinstance(value, str):
        return "must be 'forever' or an RFC 3339 time such as 2030-01-01T00:00:00Z"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return "must be 'forever' or an RFC 3339 time such as 2030-01-01T00:00:00Z"
    if when.tzinfo is None:
        return "has no time zone (add Z or +01:00)"
    return None


def check_retain(value: Any) -> str | None:
    """check_retain accepts a whole number of revisions to keep per snap, 2 to 20."""
    low, high = RETAIN_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be a whole number from {low} to {high}"
    return None


#: SYSTEM_OPTIONS are the system's settings and their checks (each returns a problem, or None).
SYSTEM_OPTIONS: dict[str, Callable[[Any], str | None]] = {
    "refresh.timer": check_timer,
    "refresh.hold": check_hold,
    "refresh.retain": check_retain,
}


def check_system(changed: Iterable[str], value_of: Callable[[str], Any]) -> None:
    """check_system checks changed system options (dotted keys); value_of(key) gives a key's new value (None:
    unset). It raises ConfigError for an unknown option or a bad value."""
    for key in changed:
        check = SYSTEM_OPTIONS.get(key)
        if check is None:
            if any(k.startswith(key + ".") for k in SYSTEM_OPTIONS):  # a document of known options
                if value_of(key) in (None, {}):  # unset, or emptied
                    continue
                raise ConfigError(f"cannot set system option {key!r} to {value_of(key)!r}: it must be a document "
                                  f"of the options {', '.join(k for k in sorted(SYSTEM_OPTIONS) if k.startswith(key))}")
            raise ConfigError(f"cannot set system option {key!r}: it is not a system option (known: "
                              f"{', '.join(sorted(SYSTEM_OPTIONS))})")
        value = value_of(key)
        if value is None:
            continue
        problem = check(value)
        if problem is not None:
            raise ConfigError(f"cannot set system option {key!r} to {value!r}: it {problem}")
