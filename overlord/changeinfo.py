# SPDX-License-Identifier: GPL-3.0-or-later
"""The JSON of a change and its tasks, in snapd's shape: one serializer for the daemon and the viewer.

The daemon's /v2/changes answers and the command line's reading of a
database file (``overlord changes DB --json``, ``change ID DB --json``,
``debug state``, ``graph --db``) both call change_info on the engine's
Change, so that what is shown is the same whichever way it came. It needs
nothing of the daemon (no web framework): the command line imports it only
when it reads a file.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine import Change, Task, TaskRunner

#: SNAP_NAMES_KEY is the change data key listing the snaps a change is about: GET /v2/changes?for=NAME
#: keeps the changes whose list holds NAME. The snap manager sets it on every change it makes.
SNAP_NAMES_KEY = "snap-names"
#: API_DATA_KEY is the change data key whose object is shown to clients as the change's "data".
API_DATA_KEY = "api-data"


def timestamp(when: datetime | None) -> str | None:
    """timestamp formats an aware UTC time as RFC 3339 with microseconds and Z (None stays None)."""
    if when is None:
        return None
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}Z"


def task_info(t: Task) -> dict[str, Any]:
    """task_info is the JSON of a task (call with the lock held)."""
    label, done, total = t.progress()
    return {
        "id": t.id,
        "kind": t.kind,
        "summary": t.summary,
        "status": t.status.value,
        "log": t.log(),
        "progress": {"label": label, "done": done, "total": total},
        "spawn-time": timestamp(t.spawn_time),
        "ready-time": timestamp(t.ready_time),
        "lanes": [lane for lane in t.lanes() if lane != 0],
        "wait-tasks": [w.id for w in t.wait_tasks()],
    }


def task_errors(tasks: list[Task], errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """task_errors is a failed change's errors one by one, each with the task that logged it: {"task": ID,
    "summary": ..., "error": ...} (the lines of "err", as they were logged: a client shows them on one line each).

    errors are ChangeError.errors, (summary, message) in the order of the change's tasks and of their logs;
    each is given the id of the first task in Error, from there on, whose summary and log line match it.
    """
    out: list[dict[str, Any]] = []
    pending = iter(errors)
    nxt = next(pending, None)
    for t in tasks:
        if nxt is None:
            break
        if t.status.value != "Error":
            continue
        for line in t.log():
            if nxt is not None and nxt[0] == t.summary and line.endswith(f" ERROR {nxt[1]}"):
                out.append({"task": t.id, "summary": nxt[0], "error": nxt[1]})
                nxt = next(pending, None)
    # Whatever did not match (a log edited between the two reads cannot happen under the lock, but a
    # hand-edited row may read oddly): shown without a task rather than left out.
    while nxt is not None:
        out.append({"task": None, "summary": nxt[0], "error": nxt[1]})
        nxt = next(pending, None)
    return out


def change_info(chg: Change, *, why: bool = False, runner: TaskRunner | None = None) -> dict[str, Any]:
    """change_info is the JSON of a change and its tasks (call with the lock held).

    why adds each task's "why": why it is not running (engine.why_not, with
    runner when the tasks' runner is at hand), or null.
    """
    status = chg.status
    err = chg.err()
    tasks = chg.tasks()
    infos = [task_info(t) for t in tasks]
    if why:
        from engine import why_not_tasks

        for one, reason in zip(infos, why_not_tasks(tasks, runner), strict=True):
            one["why"] = None if reason is None else reason.to_json()
    info: dict[str, Any] = {
        "id": chg.id,
        "kind": chg.kind,
        "summary": chg.summary,
        "status": status.value,
        "ready": status.ready,
        "spawn-time": timestamp(chg.spawn_time),
        "ready-time": timestamp(chg.ready_time),
        "tasks": infos,
    }
    if err is not None:
        info["err"] = str(err)
        info["errors"] = task_errors(tasks, err.errors)
    data = chg.get(API_DATA_KEY, None)
    if isinstance(data, dict) and data:
        info["data"] = data
    return info
