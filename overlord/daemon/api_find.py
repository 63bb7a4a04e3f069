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

from typing import TYPE_CHECKING, Any

from . import response
from .api import ApiRequest, Context, Endpoint
from .api_snaps import _publisher, snap_manager

if TYPE_CHECKING:
    from managers.store import StoreSnap


def store_snap(ctx: Context, ss: StoreSnap, channel: str, publisher_id: str) -> dict[str, Any]:
    """store_snap is the JSON of one store revision (its "publisher" is filled in under the lock)."""
    return {"id": ss.snap_id, "name": ss.name, "version": ss.version, "revision": ss.revision,
            "channel": channel, "summary": ss.summary, "description": ss.description,
            "publisher": None, "developer": publisher_id, "download-size": ss.size, "type": "app"}


def _with_publishers(ctx: Context, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """_with_publishers fills in each result's publisher from its account assertion (lock held)."""
    for item in found:
        item["publisher"] = _publisher(ctx, item["developer"])
    return found


def get_find(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_find answers the updates (select=refresh) or a search of the store."""
    from managers.snapstate.snapstate import available_updates

    select = req.choice("select", ("refresh", "all"), "all")
    sm = snap_manager(ctx)
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


def store_listing(ctx: Context, name: str) -> dict[str, Any]:
    """store_listing is a store snap as find and info show it: what stable (or the newest) offers, and per
    channel the revision, version and size (snapd's "channels" map), without the default track's prefix."""
    from managers.store import RISKS, short_channel

    store = snap_manager(ctx).store
    assert store is not None
    listing = store.listing(name)
    shown = store.snap(name, listing.revisions[0])
    default = store.channel_revision(name, "stable")
    if default is not None:
        shown = store.snap(name, default)
    decl = store.declaration(name)
    publisher = decl.header("publisher-id") if decl is not None else ""
    out = store_snap(ctx, shown, "stable" if default is not None else "", publisher)
    channels: dict[str, Any] = {}
    for track in sorted({c.split("/")[0] for c in listing.channels} | {"latest"}):
        for risk in RISKS:
            rev = store.channel_revision(name, f"{track}/{risk}")
            if rev is not None:
                ss = store.snap(name, rev)
                channels[short_channel(f"{track}/{risk}")] = {"revision": rev, "version": ss.version,
                                                               "size": ss.size}
    out["channels"] = channels
    return out


def find_in_store(ctx: Context, req: ApiRequest) -> response.Reply:
    """find_in_store searches the store: q matches names and summaries (case-insensitive), name one name."""
    from .errors import ApiError, ErrorKind

    sm = snap_manager(ctx)
    if sm.store is None:
        raise ApiError(502, ErrorKind.STORE_ERROR, "cannot search the store: none is configured")
    query = (req.query.get("q") or "").strip().lower()
    exact = req.query.get("name")
    names = sm.store.names()
    if exact is not None:
        names = [n for n in names if n == exact]
        if not names:
            raise ApiError(404, ErrorKind.SNAP_NOT_FOUND, f"cannot find snap {exact!r} in the store")
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
