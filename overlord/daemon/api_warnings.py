# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/warnings: list warnings, and mark those seen as okay (snapd's shapes)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import response
from .api import ApiRequest, Context, Endpoint

if TYPE_CHECKING:
    from engine import StateWarning


def duration(d: timedelta) -> str:
    """duration formats a timedelta the way Go (and so snapd) prints durations: "24h0m0s"."""
    total = int(d.total_seconds())
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s"


def warning_info(w: StateWarning) -> dict[str, Any]:
    """warning_info is the JSON of a warning."""
    out: dict[str, Any] = {
        "message": w.message,
        "first-added": response.timestamp(w.first_added),
        "last-added": response.timestamp(w.last_added),
        "expire-after": duration(w.expire_after),
        "repeat-after": duration(w.repeat_after),
    }
    if w.last_shown is not None:
        out["last-shown"] = response.timestamp(w.last_shown)
    return out


def get_warnings(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_warnings lists the pending warnings (select=pending, the default) or all of them (select=all)."""
    select = req.choice("select", ("pending", "all"), "pending")
    st = ctx.state
    with st:
        warnings = st.all_warnings() if select == "all" else st.warnings()
        return response.sync([warning_info(w) for w in warnings])


def post_warnings(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_warnings takes {"action": "okay", "timestamp": T}: warnings due at T are marked shown."""
    body = req.json()
    body.action(("okay",))
    when = body.time("timestamp")
    st = ctx.state
    with st:
        return response.sync(st.okay_warnings(when))


ENDPOINTS = [Endpoint("/v2/warnings", get=get_warnings, post=post_warnings)]
