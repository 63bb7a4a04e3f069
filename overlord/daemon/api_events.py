# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/events: emit an event, waking the tasks that wait for it (engine.events, State.emit)."""

from __future__ import annotations

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import bad_request


def post_events(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_events takes {"key": K, "data": D}: the tasks waiting for K get D; the reply says how many."""
    body = req.json()
    key = body.key("key")
    data = body.value.get("data")
    st = ctx.state
    try:
        with st:
            woken = st.emit(key, data)
    except (TypeError, ValueError) as e:
        raise bad_request(str(e)) from None
    return response.sync({"key": key, "woken": woken})


ENDPOINTS = [Endpoint("/v2/events", post=post_events)]
