# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/changes: list changes, show one with its tasks, abort one (snapd's shapes)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine import DatabaseCorruptError

from ..changeinfo import API_DATA_KEY, SNAP_NAMES_KEY, change_info, task_info
from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import ApiError, ErrorKind, change_not_found

log = logging.getLogger("overlord.daemon")

if TYPE_CHECKING:
    from engine import Change

__all__ = ["API_DATA_KEY", "SNAP_NAMES_KEY", "change_info", "task_info"]

SELECT = ("in-progress", "ready", "all")


def _about(chg: Change, name: str) -> bool:
    names = chg.get(SNAP_NAMES_KEY, None)
    return isinstance(names, list) and name in names


def get_changes(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_changes lists the changes: select=in-progress (default), ready or all; for=SNAP filters."""
    select = req.choice("select", SELECT, "in-progress")
    name = req.query.get("for") or None
    st = ctx.state
    with st:
        out = []
        for chg in st.changes():
            try:
                ready = chg.status.ready
                if (select == "in-progress" and ready) or (select == "ready" and not ready):
                    continue
                if name is not None and not _about(chg, name):
                    continue
                out.append(change_info(chg))
            except DatabaseCorruptError as e:  # a row edited by hand: left out (the runner warns about it)
                log.error("leaving change %s out of the list: %s", chg.id, e)
    return response.sync(out)


def get_change(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_change shows one change with its tasks."""
    cid = req.path_params["id"]
    st = ctx.state
    with st:
        chg = st.change(cid)
        if chg is None:
            raise change_not_found(cid)
        return response.sync(change_info(chg))


def post_change(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_change acts on a change: {"action": "abort"} aborts it unless it is ready."""
    cid = req.path_params["id"]
    st = ctx.state
    with st:
        if st.change(cid) is None:
            raise change_not_found(cid)
    req.json().action(("abort",))
    with st:
        chg = st.change(cid)
        if chg is None:
            raise change_not_found(cid)
        if chg.status.ready:
            raise ApiError(400, ErrorKind.CHANGE_READY, f"cannot abort change {cid} with nothing pending")
        chg.abort()
        st.ensure_before(0)
        return response.sync(change_info(chg))


ENDPOINTS = [
    Endpoint("/v2/changes", get=get_changes),
    Endpoint("/v2/changes/{id}", get=get_change, post=post_change),
]
