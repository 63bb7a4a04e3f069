# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/snaps/{name}/conf (a snap's configuration, and changes to it) and /v2/snapctl (`overlord ctl` in hooks).

Shapes follow snapd's daemon/api_snap_conf.go and api_snapctl.go:

- ``GET /v2/snaps/{name}/conf?keys=a,b.c``: ``{"a": ..., "b.c": ...}``;
  without keys the whole document (``{}`` when nothing is set). An option
  that is not set is a 400 ``option-not-found``. The snap "system" holds the
  system's settings.
- ``PUT /v2/snaps/{name}/conf`` with ``{"key": value, "doc.sub": value,
  "gone": null}``: a "configure-snap" change (async), which the snap's
  configure hook may refuse.
- ``POST /v2/snapctl`` with ``{"context-id": TOKEN, "args": ["get", "key"]}``:
  ``{"stdout": ..., "stderr": ""}``. Any local user may call it (a hook
  may run as anyone); only the token decides, and it acts on its own snap
  only. An unknown or expired token is a 403.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import response
from .api import ApiRequest, Context, Endpoint
from .api_changes import API_DATA_KEY
from .errors import bad_request, permission_denied, shown
from .system import system_overlord

if TYPE_CHECKING:
    from engine import Change

log = logging.getLogger("overlord.daemon")


def _name(req: ApiRequest) -> str:
    from managers.snap import valid_snap_name

    name = req.path_params["name"]
    if not valid_snap_name(name):
        raise bad_request(f"invalid snap name {shown(name)}: 2 to 40 of a-z, 0-9 and -, with a letter")
    return name


def get_conf(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_conf reads options of a snap (keys=a,b), or its whole document."""
    from managers.errors import NoOptionError

    name = _name(req)
    keys = [k for k in (req.query.get("keys") or "").split(",") if k]
    cm = system_overlord(ctx).config_manager
    with ctx.state:
        if not keys:
            try:
                return response.sync(cm.get(name))
            except NoOptionError:
                return response.sync({})
        return response.sync({key: cm.get(name, key) for key in keys})


def put_conf(ctx: Context, req: ApiRequest) -> response.Reply:
    """put_conf changes options of a snap ({key: value, key: null}): a configure-snap change."""
    name = _name(req)
    patch: dict[str, Any] = req.json().value
    if not patch:
        raise bad_request("cannot change the configuration: the body names no options")
    cm = system_overlord(ctx).config_manager
    cr = req.change_request("configure", {"snap": name, "patch": patch})

    def make() -> Change:
        chg = cm.configure(name, patch)
        chg.set(API_DATA_KEY, {"snap-names": [name]})
        return chg

    return cr.run(ctx.state, make, lambda chg: response.async_(chg.id))


def post_snapctl(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_snapctl runs `overlord ctl ARGS` for the running hook whose context token the body holds."""
    from managers.configstate import CtlForbidden, run_ctl

    body = req.json()
    token = body.string("context-id")
    args = body.str_list("args")
    hm = system_overlord(ctx).hook_manager
    with ctx.state:
        try:
            out = run_ctl(hm, token, args, getattr(ctx.overlord, "service_manager", None))
        except CtlForbidden as e:
            who = f"uid {req.peer.uid}" if req.peer is not None else "a caller"
            log.info("refused ctl %s from %s: the token is not valid", args[:1], who)
            raise permission_denied(str(e)) from None
    return response.sync({"stdout": out, "stderr": ""})


ENDPOINTS = [
    Endpoint("/v2/snaps/{name}/conf", get=get_conf, put=put_conf),
    Endpoint("/v2/snapctl", post=post_snapctl, any_user=True),
]
