# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/debug: the timings of a change's task runs and of slow ensure passes (snapd's `debug timings`)."""

from __future__ import annotations

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import bad_request, change_not_found


def get_debug(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_debug answers aspect=change-timings: with change-id=ID the runs of its tasks, with ensure=NAME the
    kept ensure passes in which manager NAME ran (ensure=all: every kept pass)."""
    req.choice("aspect", ("change-timings",), "")
    cid = req.query.get("change-id") or None
    ensure = req.query.get("ensure") or None
    if (cid is None) == (ensure is None):
        raise bad_request("cannot show timings: give either change-id or ensure")
    st = ctx.state
    with st:
        if ensure is not None:
            passes = st.ensure_timings(None if ensure == "all" else ensure)
            return response.sync([p.to_json() for p in passes])
        assert cid is not None
        chg = st.change(cid)
        if chg is None:
            raise change_not_found(cid)
        return response.sync([t.to_json() for t in chg.timings()])


ENDPOINTS = [Endpoint("/v2/debug", get=get_debug)]
