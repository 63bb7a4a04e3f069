# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/schedules: list, add, pause, resume, run now and remove schedules (engine.schedules)."""

from __future__ import annotations

from engine import Change, NotFoundError

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import ApiError, ErrorKind, bad_request


def get_schedules(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_schedules lists the schedules, by name, with their next time."""
    st = ctx.state
    with st:
        return response.sync([s.to_json() for s in st.schedules()])


def post_schedules(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_schedules adds (or replaces) one: {"name", "spec", "template", "missed"?}."""
    body = req.json()
    name, spec = body.string("name"), body.string("spec")
    template = body.value.get("template")
    missed = body.opt_string("missed") or "skip"
    st = ctx.state
    try:
        with st:
            s = st.add_schedule(name, spec, template, missed=missed)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise bad_request(str(e)) from None
    return response.sync(s.to_json())


def post_schedule(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_schedule acts on one: {"action": "pause" | "resume" | "run" | "remove"}; run answers async."""
    name = req.path_params["name"]
    action = req.json().action(("pause", "resume", "run", "remove"))
    st = ctx.state
    try:
        if action == "run":
            def run() -> Change:
                chg = st.run_schedule(name)
                st.ensure_before(0)
                return chg

            return req.change_request("run", {"schedule": name}).run(st, run, lambda chg: response.async_(chg.id))
        with st:
            if action == "pause":
                return response.sync(st.pause_schedule(name).to_json())
            if action == "resume":
                return response.sync(st.resume_schedule(name).to_json())
            st.remove_schedule(name)
            return response.sync(None)
    except NotFoundError as e:
        raise ApiError(404, ErrorKind.NOT_FOUND, str(e)) from None


ENDPOINTS = [
    Endpoint("/v2/schedules", get=get_schedules, post=post_schedules),
    Endpoint("/v2/schedules/{name}", post=post_schedule),
]
