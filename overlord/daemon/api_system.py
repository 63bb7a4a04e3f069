# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/system-info (what the daemon is and where it keeps things) and /v2/openapi.json (this API)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from . import response
from .api import ApiRequest, Context, Endpoint


@cache
def openapi() -> dict[str, Any]:
    """openapi returns the OpenAPI description of the API, shipped beside this module."""
    doc: dict[str, Any] = json.loads(files(__package__).joinpath("openapi.json").read_text(encoding="utf-8"))
    return doc


def get_system_info(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_system_info tells the daemon's version, directories, socket and access rule (and the refresh schedule)."""
    info = {**ctx.info, "write-access": ctx.policy.describe()}
    if ctx.connections is not None:
        info["connections"] = ctx.connections()
    sm = getattr(ctx.overlord, "snap_manager", None)
    if sm is not None:  # snapd's "refresh": the timer, the last and next auto-refresh, the holds
        with ctx.state:
            info["refresh"] = sm.auto_refresh.info(ctx.state)
    return response.sync(info)


def get_openapi(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_openapi answers the OpenAPI description as the sync result."""
    return response.sync(openapi())


ENDPOINTS = [
    Endpoint("/v2/system-info", get=get_system_info),
    Endpoint("/v2/openapi.json", get=get_openapi),
]
