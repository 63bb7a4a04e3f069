# SPDX-License-Identifier: GPL-3.0-or-later
"""The web view's pages: the changes, one change as its graph, the warnings; server-rendered HTML.

GET /web/ lists the changes (status, age, how long they took) and the
warnings; GET /web/changes/{id} draws one change: its tasks as boxes placed
by their dependencies (a column per step, a band per lane), each with its
status, progress and why-not reason, and an arrow from each task to those
waiting for it. ``?part=main`` answers the page's <main> alone: the page's
script (static/app.js) long-polls GET /v2/notices and swaps it in when a
notice comes (and every second while tasks run, whose progress makes no
notice), so the page follows the system without reloading.

What a page shows is read as the API reads it, with the request's
credentials: one change through GET /v2/changes/{id}'s handler, the
warnings through GET /v2/warnings's; the list of changes is GET
/v2/changes's data without the tasks of ready changes. Nothing here
writes.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine import DatabaseCorruptError

from ...changeinfo import timestamp
from .. import api_changes, api_warnings
from ..api import PEER_CRED_KEY, ApiRequest, Context
from ..errors import ApiError, from_exception

if TYPE_CHECKING:
    from jinja2 import Environment, Template

log = logging.getLogger("overlord.daemon")

#: RECENT_READY is how many ready changes the list shows (the newest); unready ones are all shown.
RECENT_READY = 50
#: The notice types the page follows.
NOTICE_TYPES = ("change-update", "warning")

#: The graph's geometry, in CSS pixels: a task's box, the gaps between boxes (side by side, one below the other),
#: a band's heading, padding and the gap between bands, the margin.
BOX_W, BOX_H, GAP_X, GAP_Y = 264, 96, 16, 30
BAND_HEAD, BAND_PAD, GAP_BAND, MARGIN = 22, 8, 16, 8
#: How many tasks of one band and one step sit side by side; more go on the lines below.
SIDE_BY_SIDE = 4

#: Security headers of every page: scripts and styles of this daemon only, no frames, no referrer.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


# -- what a page shows ------------------------------------------------------------------


def age(seconds: float) -> str:
    """age says a duration the short way a page shows it: 12s, 3m 4s, 2h 5m, 3d 4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _parse(when: str | None) -> datetime | None:
    if not when:
        return None
    return datetime.fromisoformat(when.replace("Z", "+00:00"))


def why_text(why: Any) -> str | None:
    """why_text is a task's why-not reason in words (GET /v2/changes/{id}'s "why"; None when it has none)."""
    if why is None or why == {} or why == "":
        return None
    if isinstance(why, str):
        return why
    if isinstance(why, dict):
        for key in ("message", "text", "summary"):
            if isinstance(why.get(key), str) and why[key]:
                return str(why[key])
        if isinstance(why.get("reason"), str):
            return str(why["reason"])
    return str(why)


def why_code(why: Any) -> str | None:
    """why_code is the machine word of a why-not reason ("wait-tasks", "held"...), when it has one."""
    if isinstance(why, dict):
        for key in ("reason", "kind", "code"):
            if isinstance(why.get(key), str):
                return str(why[key])
    return None


@dataclass
class TaskView:
    """TaskView is one task as the change page draws it."""

    id: str
    kind: str
    summary: str
    status: str
    lanes: list[int]
    waits: list[str]
    #: "full", "value" (done of total), "pulse" (running, nothing reported) or "" (no bar).
    bar: str
    done: int
    total: int
    amount: str
    label: str
    why: str | None
    why_code: str | None
    last_log: str | None
    x: int = 0
    y: int = 0


def task_view(t: dict[str, Any]) -> TaskView:
    """task_view reads one task of GET /v2/changes/{id} (the bar follows `overlord watch`'s rules)."""
    prog = t.get("progress") or {}
    label, done, total = str(prog.get("label") or ""), int(prog.get("done") or 0), int(prog.get("total") or 0)
    status = str(t["status"])
    bar, amount = "", ""
    if status in ("Done", "Undone"):
        bar, done, total, amount = "full", max(total, 1), max(total, 1), "100%"
    elif status in ("Doing", "Undoing"):
        if total > 1:
            bar = "value"
            amount = f"{done}/{total}" if total <= 1000 else f"{100 * done // total}%"
        else:
            bar = "pulse"
    logs = t.get("log") or []
    return TaskView(id=str(t["id"]), kind=str(t["kind"]), summary=str(t["summary"]), status=status,
                    lanes=list(t.get("lanes") or []), waits=[str(w) for w in t.get("wait-tasks") or []], bar=bar,
                    done=done, total=total, amount=amount, label=label, why=why_text(t.get("why")),
                    why_code=why_code(t.get("why")), last_log=str(logs[-1]) if logs else None)


@dataclass
class Band:
    """Band is the column of the graph holding the tasks of one set of lanes."""

    label: str
    x: int
    y: int
    width: int
    height: int


@dataclass
class Edge:
    """Edge is an arrow from a task to one waiting for it."""

    path: str
    done: bool


@dataclass
class Graph:
    """Graph is a change's tasks placed for drawing: boxes, arrows, lane bands, and its size."""

    tasks: list[TaskView]
    edges: list[Edge] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    #: Whether the bands are named (there are lanes); a change without lanes is one unnamed band.
    labelled: bool = False
    width: int = 0
    height: int = 0


def _steps(tasks: list[TaskView]) -> dict[str, int]:
    """_steps is each task's row: the length of its longest chain of waits within the change."""
    ids = {t.id for t in tasks}
    waits = {t.id: [w for w in t.waits if w in ids] for t in tasks}
    children: dict[str, list[str]] = defaultdict(list)
    for tid, ws in waits.items():
        for w in ws:
            children[w].append(tid)
    pending = {tid: len(ws) for tid, ws in waits.items()}
    step = dict.fromkeys(waits, 0)
    queue = deque(t.id for t in tasks if pending[t.id] == 0)
    while queue:
        tid = queue.popleft()
        for c in children[tid]:
            step[c] = max(step[c], step[tid] + 1)
            pending[c] -= 1
            if pending[c] == 0:
                queue.append(c)
    last = max(step.values(), default=0)
    for tid, left in pending.items():  # a cycle (a damaged change): drawn after the rest
        if left > 0:
            step[tid] = last + 1
    return step


def _id_order(t: TaskView) -> tuple[int, str]:
    return (int(t.id), "") if t.id.isdigit() else (0, t.id)


def layout(tasks: list[TaskView]) -> Graph:
    """layout places a change's tasks from top to bottom: a row per step of waiting (a task sits below every
    task it waits for), a band of columns per set of lanes (in the order of their first task), the tasks of a
    band at one step side by side in id order (at most SIDE_BY_SIDE, then on more lines); and draws an arrow per
    wait, from a task down to its waiter."""
    step = _steps(tasks)
    bands: dict[tuple[int, ...], dict[int, list[TaskView]]] = {}
    for t in sorted(tasks, key=_id_order):
        bands.setdefault(tuple(sorted(t.lanes)), defaultdict(list))[step[t.id]].append(t)
    graph = Graph(tasks, labelled=len(bands) > 1 or any(bands))
    head = BAND_HEAD if graph.labelled else 0
    # The lines each step takes: as many as the band with the most tasks at that step needs.
    steps = max(step.values(), default=0) + 1
    lines = [max((-(-len(by_step.get(s, [])) // SIDE_BY_SIDE) for by_step in bands.values()), default=1) or 1
             for s in range(steps)]
    top = [MARGIN + BAND_PAD + head + sum(lines[:s]) * (BOX_H + GAP_Y) for s in range(steps)]
    height = head + sum(lines) * BOX_H + (sum(lines) - 1) * GAP_Y
    x = MARGIN + BAND_PAD
    for lanes, by_step in bands.items():
        columns = min(SIDE_BY_SIDE, max(len(v) for v in by_step.values()))
        width = columns * BOX_W + (columns - 1) * GAP_X
        label = ("lane " if len(lanes) == 1 else "lanes ") + ", ".join(map(str, lanes)) if lanes else "no lane"
        graph.bands.append(Band(label, x - BAND_PAD, MARGIN, width + 2 * BAND_PAD, height + 2 * BAND_PAD))
        for s, row in by_step.items():
            for i, t in enumerate(row):
                line, col = divmod(i, SIDE_BY_SIDE)
                t.x = x + col * (BOX_W + GAP_X)
                t.y = top[s] + line * (BOX_H + GAP_Y)
        x += width + 2 * BAND_PAD + GAP_BAND
    graph.width = x - GAP_BAND + MARGIN - BAND_PAD
    graph.height = MARGIN * 2 + height + 2 * BAND_PAD
    by_id = {t.id: t for t in tasks}
    for t in tasks:
        for w in t.waits:
            src = by_id.get(w)
            if src is None:
                continue
            x1, y1 = src.x + BOX_W // 2, src.y + BOX_H
            x2, y2 = t.x + BOX_W // 2, t.y
            dy = max(GAP_Y // 2, abs(y2 - y1) // 2)
            graph.edges.append(Edge(f"M{x1},{y1} C{x1},{y1 + dy} {x2},{y2 - dy} {x2},{y2 - 3}",
                                    src.status in ("Done", "Undone")))
    return graph


def error_line(err: str) -> str | None:
    """error_line is a change's error in one line for the list: its first task's error, when the error lists
    the failed tasks ("cannot perform the following tasks:\n- Fetch (no network)\n- ..."), with how many more."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) > 1 and lines[0].endswith(":"):
        more = len(lines) - 2
        return lines[1].removeprefix("- ") + (f" (and {more} more)" if more else "")
    return lines[0]


@dataclass
class ChangeRow:
    """ChangeRow is one change in the list."""

    id: str
    kind: str
    summary: str
    status: str
    ready: bool
    spawn_time: str | None
    ready_time: str | None
    took: str | None
    err: str | None
    done: int = 0
    total: int = 0


def change_rows(ctx: Context) -> tuple[list[ChangeRow], int]:
    """change_rows lists the unready changes and the newest RECENT_READY ready ones, newest first; and how many
    ready ones are left out (GET /v2/changes's data, without the tasks of ready changes)."""
    st = ctx.state
    rows: list[ChangeRow] = []
    with st:
        changes = st.changes()
        ready_seen = 0
        left_out = 0
        for chg in reversed(changes):
            try:
                status = chg.status
                if status.ready:
                    ready_seen += 1
                    if ready_seen > RECENT_READY:
                        left_out += 1
                        continue
                spawn, done_at = chg.spawn_time, chg.ready_time
                err = chg.err()
                row = ChangeRow(chg.id, chg.kind, chg.summary, status.value, status.ready, timestamp(spawn),
                                timestamp(done_at), age((done_at - spawn).total_seconds()) if done_at else None,
                                error_line(str(err)) if err is not None else None)
                if not status.ready:
                    tasks = chg.tasks()
                    row.total = len(tasks)
                    row.done = sum(1 for t in tasks if t.status.value in ("Done", "Undone"))
                rows.append(row)
            except DatabaseCorruptError as e:  # a row edited by hand: left out, as GET /v2/changes does
                log.error("leaving change %s out of the web view: %s", chg.id, e)
    rows.sort(key=lambda r: (r.ready, -int(r.id) if r.id.isdigit() else 0))
    return rows, left_out


def _api(ctx: Context, handler: Any, page: ApiRequest, path: str, query: dict[str, str] | None = None,
         **params: str) -> Any:
    """_api calls an API handler as the page's own request would (same peer), and returns its result."""
    req = ApiRequest("GET", path, params, query or {}, b"", page.peer)
    return handler(ctx, req).result


def latest_notice(ctx: Context) -> str | None:
    """latest_notice is the last-repeated time of the newest notice the page follows: its script waits for
    notices after it."""
    with ctx.state:
        found = ctx.state.notices(types=NOTICE_TYPES)
    return timestamp(found[-1].last_repeated) if found else None


def warnings_view(ctx: Context, page: ApiRequest) -> list[dict[str, Any]]:
    """warnings_view is every unexpired warning (GET /v2/warnings?select=all), newest first, the pending ones
    marked "new"."""
    every = _api(ctx, api_warnings.get_warnings, page, "/v2/warnings", {"select": "all"})
    pending = {w["message"] for w in _api(ctx, api_warnings.get_warnings, page, "/v2/warnings")}
    return [{**w, "new": w["message"] in pending} for w in reversed(every)]


# -- serving ------------------------------------------------------------------------


@cache
def _env() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader(__package__ or "overlord.daemon.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(BOX_W=BOX_W, BOX_H=BOX_H, BAND_PAD=BAND_PAD, since=since)
    return env


def since(when: str | None) -> str:
    """since is how long ago an RFC 3339 time of the API was, the short way (the page's script keeps it going)."""
    then = _parse(when)
    return age((datetime.now(UTC) - then).total_seconds()) if then is not None else ""


def _render(name: str, part: bool, **values: Any) -> str:
    template: Template = _env().get_template(name)
    if part:
        return "".join(template.blocks["main"](template.new_context(values)))
    return template.render(**values)


def _page_request(request: Request) -> ApiRequest:
    peer = request.scope.get("extensions", {}).get(PEER_CRED_KEY)
    return ApiRequest("GET", request.url.path, request.path_params, request.query_params, b"", peer)


def _common(ctx: Context) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"version": ctx.info.get("version", ""), "now": timestamp(now), "now_ms": int(now.timestamp() * 1000),
            "after": latest_notice(ctx) or ""}


def render_changes(ctx: Context, page: ApiRequest, part: bool) -> str:
    """render_changes is the list of changes and the warnings."""
    values = _common(ctx)
    rows, left_out = change_rows(ctx)
    return _render("changes.html", part, **values, rows=rows, left_out=left_out, warnings=warnings_view(ctx, page),
                   live=any(not r.ready for r in rows))


def render_change(ctx: Context, page: ApiRequest, part: bool, change_id: str) -> str:
    """render_change is one change as its graph, with a table of its tasks."""
    values = _common(ctx)
    chg = _api(ctx, api_changes.get_change, page, f"/v2/changes/{change_id}", id=change_id)
    return change_html(chg, warnings_view(ctx, page), part, **values)


def change_html(chg: dict[str, Any], warnings: list[dict[str, Any]], part: bool = False, **values: Any) -> str:
    """change_html draws a change of GET /v2/changes/{id} (and the warnings): its graph and its tasks' table.

    values are the page's common values (version, now, now_ms, after); missing ones are empty.
    """
    tasks = [task_view(t) for t in chg["tasks"]]
    graph = layout(tasks)
    spawn, ready = _parse(chg.get("spawn-time")), _parse(chg.get("ready-time"))
    common = {"version": "", "now": "", "now_ms": 0, "after": "", **values}
    return _render("change.html", part, **common, chg=chg, graph=graph,
                   took=age((ready - spawn).total_seconds()) if spawn and ready else None,
                   done=sum(1 for t in tasks if t.status in ("Done", "Undone")),
                   live=not chg.get("ready", False), warnings=warnings)


def _error_page(status: int, message: str, part: bool) -> str:
    return _render("error.html", part, status=status, message=message, version="", now="", now_ms=0, after="")


async def _respond(request: Request, render: Callable[[ApiRequest, bool], str]) -> Response:
    """_respond renders a page (or its <main> alone, ?part=main) in a worker thread; an error is a page too."""
    part = request.query_params.get("part") == "main"
    page = _page_request(request)
    try:
        body = await anyio.to_thread.run_sync(render, page, part)
        return HTMLResponse(body, headers=HEADERS)
    except Exception as e:
        err = e if isinstance(e, ApiError) else from_exception(e)
        if err is None:
            log.error("internal error: GET %s failed", request.url.path, exc_info=e)
            err_status, message = 500, f"internal error: cannot show {request.url.path} (the daemon's log has details)"
        else:
            err_status, message = err.status, str(err)
        body = await anyio.to_thread.run_sync(_error_page, err_status, message, part)
        return HTMLResponse(body, status_code=err_status, headers=HEADERS)


def routes(ctx: Context) -> list[BaseRoute]:
    """routes are the web view's routes, served beside the API (on the socket, and on the web port)."""

    async def to_list(request: Request) -> Response:
        return RedirectResponse("/web/", status_code=307)

    async def changes(request: Request) -> Response:
        return await _respond(request, lambda page, part: render_changes(ctx, page, part))

    async def change(request: Request) -> Response:
        cid = request.path_params["id"]
        return await _respond(request, lambda page, part: render_change(ctx, page, part, cid))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return HTMLResponse(_error_page(404, f"cannot find {request.url.path!r}", False), status_code=404,
                                headers=HEADERS)
        return Response(_static(name), media_type=STATIC[name], headers={**HEADERS, "Cache-Control": "no-cache"})

    return [Route("/", to_list, methods=["GET"]), Route("/web", to_list, methods=["GET"]),
            Route("/web/", changes, methods=["GET"]), Route("/web/changes/{id}", change, methods=["GET"]),
            Route("/web/static/{name}", static, methods=["GET"])]


@cache
def _static(name: str) -> bytes:
    return files(__package__ or "overlord.daemon.web").joinpath("static", name).read_bytes()
