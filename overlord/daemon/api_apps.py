# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/apps and /v2/logs: the snaps' services, the service-control changes, the services' logs (snapd's shapes).

``GET /v2/apps?select=service&names=SNAP,SNAP.APP`` lists services:
``{"snap", "name", "daemon", "enabled", "active", "status", "pid",
"revision", "since", "last-exit", "restarts"}`` (snapd's "active" is a
boolean; "status" says active, inactive or failed). ``POST /v2/apps``
takes ``{"action": "start"|"stop"|"restart", "names": [...], "enable":
bool, "disable": bool}`` and answers async with a service-control change.
``GET /v2/logs?names=...&n=N`` gives the last N lines of each service
(n=all: everything kept), ``{"sid": "snap.app", "message": line}``; with
``follow=CURSOR`` (``follow=`` at first) only the lines written since, and
the next cursor in the answer's "cursor" (what `overlord logs -f` polls
with). Logs may hold what services print: only callers allowed to POST
may read them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import response
from .api import ApiRequest, Context, Endpoint
from .api_changes import API_DATA_KEY
from .errors import bad_request, permission_denied, shown
from .system import system_overlord

if TYPE_CHECKING:
    from engine import Change
    from managers.servicestate import ServiceInfo

#: MAX_LINES bounds n of GET /v2/logs.
MAX_LINES = 100_000


def app_info(s: ServiceInfo) -> dict[str, Any]:
    """app_info is the JSON of one service."""
    st = s.status
    return {"snap": s.snap, "name": s.app, "daemon": s.daemon, "enabled": s.enabled, "active": st.active == "active",
            "status": st.active, "pid": st.pid, "revision": st.revision,
            "since": response.timestamp(st.since) if st.since is not None else None,
            "last-exit": st.last_exit, "restarts": st.restarts}


def _names(req: ApiRequest) -> list[str]:
    from managers.snap.naming import valid_app_name, valid_snap_name

    names = [n for n in (req.query.get("names") or "").split(",") if n]
    for n in names:
        snap, dot, app = n.partition(".")
        if not valid_snap_name(snap) or (dot and not valid_app_name(app)):
            raise bad_request(f"invalid service name {shown(n)}: it must be SNAP or SNAP.APP")
    return names


def get_apps(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_apps lists the services (select=service; the only apps listed here)."""
    req.choice("select", ("service",), "service")
    names = _names(req)
    with ctx.state:
        return response.sync([app_info(s) for s in system_overlord(ctx).service_manager.services(names)])


def post_apps(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_apps starts, stops or restarts services in a service-control change."""
    from managers.servicestate import ACTIONS

    body = req.json()
    action = body.action({a: ("names", "enable", "disable") for a in ACTIONS})
    names = body.str_list("names")
    enable, disable = body.flag("enable", "a boolean"), body.flag("disable", "a boolean")
    cr = req.change_request(action, {"names": names, "enable": enable, "disable": disable})
    svc = system_overlord(ctx).service_manager

    def make() -> Change:
        try:
            chg = svc.control(action, names, enable=enable, disable=disable)
        except ValueError as e:
            raise bad_request(str(e)) from None
        chg.set(API_DATA_KEY, {"snap-names": chg.get("snap-names", [])})
        return chg

    return cr.run(ctx.state, make, lambda chg: response.async_(chg.id))


def get_logs(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_logs returns the last n lines of the services' logs, or those since a cursor (follow)."""
    if not ctx.policy.may_write(req.peer):
        raise permission_denied("cannot read the services' logs: only root (or the daemon's group) may")
    names = _names(req)
    raw = req.query.get("n", "10")
    if raw == "all":
        n = None
    elif raw.isascii() and raw.isdigit() and int(raw) <= MAX_LINES:
        n = int(raw)
    else:
        raise bad_request(f"invalid n parameter {shown(raw)}: a number of lines up to {MAX_LINES}, or all")
    svc = system_overlord(ctx).service_manager
    if "follow" in req.query:
        cursor = _cursor(req.query["follow"])
        with ctx.state:
            lines, after = svc.logs_since(names, cursor)
        return response.sync({"entries": [{"sid": s, "message": m} for s, m in lines],
                              "cursor": json.dumps({k: list(v) for k, v in after.items()}, sort_keys=True)})
    with ctx.state:
        return response.sync([{"sid": s, "message": m} for s, m in svc.logs(names, n)])


def _cursor(text: str) -> dict[str, tuple[int, int]]:
    if not text:
        return {}
    try:
        raw = json.loads(text)
        return {str(k): (int(v[0]), int(v[1])) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        raise bad_request("invalid follow parameter: pass back the cursor of the previous answer") from None


ENDPOINTS = [
    Endpoint("/v2/apps", get=get_apps, post=post_apps),
    Endpoint("/v2/logs", get=get_logs),
]
