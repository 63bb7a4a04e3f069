# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/changes: list changes, show one with its tasks, abort or retry one (snapd's shapes), or those a selection
picks, in one transaction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine import ChangeConflictError, DatabaseCorruptError, EngineError, Status

from ..changeinfo import API_DATA_KEY, SNAP_NAMES_KEY, change_info, task_info
from . import response
from .api import ApiRequest, Body, Context, Endpoint
from .api_notices import parse_duration
from .errors import ApiError, ErrorKind, bad_request, change_not_found, shown

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
        return response.sync(change_info(chg, why=True, runner=ctx.overlord.task_runner))


def post_change(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_change acts on a change: {"action": "abort"} aborts it unless it is ready; {"action": "retry"} runs
    a failed change again from where it failed (engine: Change.retry)."""
    cid = req.path_params["id"]
    st = ctx.state
    with st:
        if st.change(cid) is None:
            raise change_not_found(cid)
    action = req.json().action(("abort", "retry"))
    with st:
        chg = st.change(cid)
        if chg is None:
            raise change_not_found(cid)
        _act(chg, action)
        st.ensure_before(0)
        return response.sync(change_info(chg))


def _act(chg: Change, action: str) -> None:
    """_act aborts or retries a change (lock held); 400 change-ready / change-not-failed when it cannot."""
    if action == "abort":
        if chg.status.ready:
            raise ApiError(400, ErrorKind.CHANGE_READY, f"cannot abort change {chg.id} with nothing pending")
        chg.abort()
        return
    try:
        chg.retry()
    except ChangeConflictError:
        raise
    except EngineError as e:
        raise ApiError(400, ErrorKind.CHANGE_NOT_FAILED, str(e)) from None


#: The longest age a selection may name, in seconds (1000 years: the engine's bound on a duration).
MAX_AGE = 1000 * 365.25 * 86400
#: What a selection may name (POST /v2/changes "select").
SELECT_FIELDS = ("status", "kind", "age", "label")


def post_changes(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_changes aborts or retries every change a selection picks, in one transaction:
    {"action": "abort"|"retry", "select": {"status"?: [...], "kind"?: [...], "age"?: "2h", "label"?: "KEY=VALUE"}}.

    abort takes the unready changes selected, retry the failed ones (status Error); one that cannot be acted on
    (a retry in conflict) fails the whole request and nothing is done. Sync: {"changes": [ids]}.
    """
    body = req.json()
    action = body.action(("abort", "retry"))
    select = body.value.get("select")
    if not isinstance(select, dict) or not select:
        raise bad_request("cannot decode request body: field 'select' must be an object naming at least one of "
                          + ", ".join(SELECT_FIELDS))
    sel = Body(select)
    for key in select:
        if key not in SELECT_FIELDS:
            raise bad_request(f"cannot decode request body: {shown(key)} is not a field of 'select' (it takes "
                              + ", ".join(SELECT_FIELDS) + ")")
    statuses = sel.str_list("status", required=False) or None
    for value in statuses or ():
        if value not in {s.value for s in Status}:
            raise bad_request(f"cannot select changes by status {shown(value)}: it is not a status")
    kinds = sel.str_list("kind", required=False) or None
    age = sel.opt_string("age")
    label = sel.opt_string("label")
    if label is not None and "=" not in label:
        raise bad_request(f"cannot select changes by label {shown(label)}: it must be KEY=VALUE")
    st = ctx.state
    with st:  # one unit of work: one transaction, all or nothing
        older = None
        if age is not None:
            try:
                older = parse_duration(age)
            except ValueError:
                raise bad_request(f"cannot select changes by age {shown(age)}: it must be a duration (2h, "
                                  "30m)") from None
            if older >= MAX_AGE:  # the engine's bound on a duration (engine/_time.py)
                raise bad_request(f"cannot select changes by age {shown(age)}: it must be shorter than 1000 years "
                                  "(8766000h)")
        key, _, value = (label or "").partition("=")
        picked = st.select_changes(status=statuses, kind=kinds, older_than=older,
                                   label=(key, value) if label is not None else None)
        done = []
        for chg in picked:
            if (action == "abort" and chg.status.ready) or (action == "retry" and chg.status is not Status.ERROR):
                continue
            _act(chg, action)
            done.append(chg.id)
        if done:
            st.ensure_before(0)
            log.info("%s of changes %s by selection %s", action, ", ".join(done), select)
    return response.sync({"changes": done})


ENDPOINTS = [
    Endpoint("/v2/changes", get=get_changes, post=post_changes),
    Endpoint("/v2/changes/{id}", get=get_change, post=post_change),
]
