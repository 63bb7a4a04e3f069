# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/assertions: the types known, the stored assertions of a type, and adding signed ones (snapd's shapes).

GET /v2/assertions/{type} answers like snapd's: the assertions themselves,
as a stream of type application/x.ubuntu.assertion with their count in
X-Ubuntu-Assertions-Count (ready to be posted elsewhere), or with
``json=true`` (``json=headers``) a sync answer of ``[{"headers", "body"}]``.
Other query parameters are header filters (``account-id=acme``). POST
/v2/assertions takes the text of one or more assertions (the body as it is,
any content type) and adds them all or none, each verified up to the
trusted root; a broken chain is a 400 naming the missing or wrong link.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import bad_request, shown
from .system import system_overlord

if TYPE_CHECKING:
    from managers.asserts import Assertion

#: MEDIA_TYPE is the content type of an assertion stream (snapd's).
MEDIA_TYPE = "application/x.ubuntu.assertion"
#: COUNT_HEADER tells how many assertions a stream answer holds (snapd's).
COUNT_HEADER = "X-Ubuntu-Assertions-Count"


class StreamReply(response.Reply):
    """StreamReply answers assertions as their text, one after the other, instead of a JSON envelope."""

    def __init__(self, assertions: list[Assertion]) -> None:
        super().__init__("sync", 200, None)
        self.assertions = assertions

    def response(self, warning_count: int = 0, warning_timestamp: datetime | None = None) -> Response:
        """response renders the stream; the bundle parameter says when it holds more than one (as snapd's)."""
        media = MEDIA_TYPE + ("; bundle=y" if len(self.assertions) > 1 else "")
        body = "\n".join(a.text for a in self.assertions)
        return Response(body.encode(), status_code=200, media_type=media,
                        headers={COUNT_HEADER: str(len(self.assertions))})


def _type_names() -> list[str]:
    from managers.asserts import TYPES

    return sorted(TYPES)


def get_types(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_types lists the assertion types this system knows: {"types": [...]}."""
    return response.sync({"types": _type_names()})


def assertion_json(a: Assertion, headers_only: bool = False) -> dict[str, Any]:
    """assertion_json is an assertion as snapd's json=true shows it: its headers and its body."""
    out: dict[str, Any] = {"headers": dict(a.headers)}
    if not headers_only and a.body:
        out["body"] = a.body
    return out


def get_assertions(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_assertions finds the stored assertions of a type whose headers match the query's filters."""
    type_name = req.path_params["type"]
    if type_name not in _type_names():
        raise bad_request(f"invalid assertion type {shown(type_name)}: it must be one of {', '.join(_type_names())}")
    mode = req.query.get("json")
    if mode not in (None, "true", "false", "headers"):
        raise bad_request(f"invalid json parameter {shown(mode)}: it must be true, false or headers")
    filters = {k: v for k, v in req.query.items() if k != "json"}
    st = ctx.state
    with st:
        found = system_overlord(ctx).assert_manager.find(type_name, filters)
    found.sort(key=lambda a: a.primary_key)
    if mode in ("true", "headers"):
        return response.sync([assertion_json(a, mode == "headers") for a in found])
    return StreamReply(found)


def post_assertions(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_assertions adds the assertions of the body (one or a stream), all or none; answers what was added."""
    if not req.body.strip():
        raise bad_request("cannot add assertions: the request body is empty")
    from managers.asserts import decode_stream

    am = system_overlord(ctx).assert_manager
    decoded = decode_stream(req.body)  # parsed before the lock is taken, which is held to verify and store
    st = ctx.state
    with st:
        added = am.add_many(decoded)
    return response.sync([{"type": a.type_name, "primary-key": list(a.primary_key), "revision": a.revision}
                          for a in added])


ENDPOINTS = [
    Endpoint("/v2/assertions", get=get_types, post=post_assertions),
    Endpoint("/v2/assertions/{type}", get=get_assertions),
]
