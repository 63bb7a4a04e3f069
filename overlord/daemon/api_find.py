# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/find: what the store offers (snapd's daemon/api_find.go).

``GET /v2/find?select=refresh`` lists the installed snaps whose tracked
channel offers a newer revision (`overlord refresh --list`); ``GET
/v2/find?q=QUERY`` (or ``name=NAME``) searches the store's names and
summaries. Each result is snapd's store snap shape: ``{"id", "name",
"version", "revision", "channel", "summary", "description", "publisher",
"developer", "download-size", "channels"?}``.
"""

from __future__ import annotations

from typing import Any

from . import response
from .api import ApiRequest, Context, Endpoint
from .api_snaps import publisher, store_listing, store_snap
from .errors import ApiError, ErrorKind, shown
from .system import system_overlord


def _with_publishers(ctx: Context, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """_with_publishers fills in each result's publisher from its account assertion (lock held)."""
    for item in found:
        item["publisher"] = publisher(ctx, item["developer"])
    return found


def get_find(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_find answers the updates (select=refresh) or a search of the store."""
    from managers.snapstate.snapstate import available_updates

    select = req.choice("select", ("refresh", "all"), "all")
    sm = system_overlord(ctx).snap_manager
    st = ctx.state
    if select == "refresh":
        from managers.snapstate import all_snap_states

        with st:
            states = list(all_snap_states(st).values())
        found = [store_snap(ctx, ss, snapst.tracking, snapst.info.publisher_id)
                 for snapst, ss in available_updates(sm, states)]  # the store read without the lock
        with st:
            return response.sync(_with_publishers(ctx, found))
    return find_in_store(ctx, req)


def find_in_store(ctx: Context, req: ApiRequest) -> response.Reply:
    """find_in_store searches the store: q matches names and summaries (case-insensitive), name one name."""
    sm = system_overlord(ctx).snap_manager
    if sm.snap_store is None:
        raise ApiError(502, ErrorKind.STORE_ERROR, "cannot search the store: none is configured")
    query = (req.query.get("q") or "").strip().lower()
    exact = req.query.get("name")
    names = sm.snap_store.names()
    if exact is not None:
        names = [n for n in names if n == exact]
        if not names:
            raise ApiError(404, ErrorKind.SNAP_NOT_FOUND, f"cannot find snap {shown(exact)} in the store")
    found = []
    for name in names:
        item = store_listing(ctx, name)
        if not query or query in name or query in item["summary"].lower():
            found.append(item)
    with ctx.state:  # the store was read without the lock; the publishers' accounts are in the state
        return response.sync(_with_publishers(ctx, found))


ENDPOINTS = [
    Endpoint("/v2/find", get=get_find),
]
