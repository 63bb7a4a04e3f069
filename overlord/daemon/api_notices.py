# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/notices: the notices, and a long-poll that returns as soon as one matches (snapd's api_notices.go).

GET /v2/notices?types=change-update,warning&keys=12&after=<RFC 3339>&timeout=30s
lists the unexpired notices repeated after `after`, of any of `types` and
`keys` (comma-separated, or repeated), oldest repeat first. With `timeout`
(a Go duration: 500ms, 30s, 1m30s) and nothing matching yet, it waits until
a commit adds or repeats a matching notice, or the timeout passes (then
the list is empty). The wait holds neither the state lock nor a thread: the
handler awaits State.wait_notices_async on the server's event loop.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import bad_request, shown

if TYPE_CHECKING:
    from engine import Notice

#: MAX_TIMEOUT bounds a long-poll, in seconds (a client asks again after it).
MAX_TIMEOUT = 24 * 3600.0

_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """parse_duration reads a Go duration ("30s", "1m30s", "250ms") as seconds; ValueError when it is not one."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(text)
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(text)
    return total


def parse_time(text: str) -> datetime:
    """parse_time reads an RFC 3339 time (nanoseconds are cut to microseconds); ValueError when it is not one."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if m is None:
        raise ValueError(text)
    base, frac, zone = m.groups()
    when = datetime.fromisoformat(f"{base}.{(frac or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}")
    return when.astimezone(UTC)


def _list(req: ApiRequest, name: str) -> list[str] | None:
    getlist = getattr(req.query, "getlist", None)
    raw = getlist(name) if getlist is not None else [req.query.get(name) or ""]
    values = [v.strip() for item in raw for v in item.split(",") if v.strip()]
    return values or None


def notice_info(n: Notice) -> dict[str, object]:
    """notice_info is the JSON of a notice (snapd's field names)."""
    return n.to_json()


async def get_notices(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_notices lists the notices matching types, keys and after; with timeout, it waits for one."""
    types, keys = _list(req, "types"), _list(req, "keys")
    after = None
    if text := req.query.get("after"):
        try:
            after = parse_time(text)
        except ValueError:
            raise bad_request(f"invalid after parameter {shown(text)}: it must be an RFC 3339 time with a time zone, "
                              "e.g. 2026-12-07T10:00:00.123456Z") from None
    timeout = 0.0
    if text := req.query.get("timeout"):
        try:
            timeout = parse_duration(text)
        except ValueError:
            raise bad_request(f"invalid timeout parameter {shown(text)}: it must be a duration such as 500ms, 30s "
                              "or 1m30s") from None
        if timeout > MAX_TIMEOUT:
            raise bad_request(f"invalid timeout parameter {shown(text)}: it must be at most {MAX_TIMEOUT / 3600:g}h")
    notices = await ctx.state.wait_notices_async(after=after, types=types, keys=keys, timeout=timeout)
    return response.sync([notice_info(n) for n in notices])


ENDPOINTS = [Endpoint("/v2/notices", get=get_notices)]
