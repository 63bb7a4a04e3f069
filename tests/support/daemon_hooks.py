# SPDX-License-Identifier: GPL-3.0-or-later
"""A setup hook for daemons under test (``overlord daemon --setup tests.support.daemon_hooks:setup``).

It registers task kinds whose progress tests can follow and release, and a
test-only endpoint that creates changes of them (the snap manager's
endpoints do that in a real system):

- ``gated``: counts its progress up while waiting for a gate file to appear,
  then finishes (total/total); it survives a restart (progress is stored).
- ``stubborn``: like ``gated`` but ignores its tomb (for the stop bound).
- ``quick``: logs one line and finishes.
- ``fail``: logs and fails with the task's "error" text.
- ``approve``: waits for the event named by the task's "event" (default "approval"), then logs its data.

With the snap manager of a SystemOverlord: a task's "affects" (a list of snap names) makes it touch those
snaps for conflict checks, and mounting a snap waits while the file ``<state-dir>/hold-mount`` exists (so
that a test can catch an install in the middle, abort it or kill the daemon there, then remove the file).
Checking a local snap file (SnapManager.check_file, an upload's check) or reading a seed (FirstBoot.read)
touches ``<state-dir>/checking`` and then waits while ``<state-dir>/hold-check`` exists.

GET /v2/test/boom fails with an unforeseen exception; POST /v2/test/conflict raises ChangeConflictError.

POST /v2/test/changes {"summary": S, "tasks": [{"kind", "summary", "total"?, "error"?}], "snap-names"?: [...],
"gate"?: PATH, "warnings"?: [...]} makes one change (and adds the warnings) whose tasks run one after the
other; it answers async with the change id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine import ChangeConflictError, Overlord, Retry, Task, Tomb
from overlord.daemon import response
from overlord.daemon.api import ApiRequest, Context, Endpoint


def _gated(task: Task, tomb: Tomb) -> None:
    with task.state:
        gate = Path(task.get("gate"))
        _, done, total = task.progress()
        total = int(task.get("total", 5))
        done = min(done, total - 1)
    while not gate.exists():
        if tomb.wait_dying(0.05):
            raise Retry(reason="stopping")
        if done < total - 1:
            done += 1
            with task.state:
                task.set_progress("steps", done, total)
    with task.state:
        task.set_progress("steps", total, total)
        task.logf("gate %s opened", gate.name)


def _stubborn(task: Task, tomb: Tomb) -> None:
    """_stubborn ignores its tomb: it returns only when the gate opens (the daemon's stop bound is for it)."""
    with task.state:
        gate = Path(task.get("gate"))
        task.logf("stubborn started")
    while not gate.exists():
        time.sleep(0.05)


def _quick(task: Task, tomb: Tomb) -> None:
    with task.state:
        task.logf("ran %s", task.summary)


def _fail(task: Task, tomb: Tomb) -> None:
    with task.state:
        error = task.get("error", "it failed")
    raise RuntimeError(error)


def _approve(task: Task, tomb: Tomb) -> None:
    with task.state:
        data = task.wait_event(task.get("event", "approval"))
        task.logf("approved: %s", data)


def _undo(task: Task, tomb: Tomb) -> None:
    with task.state:
        task.logf("undid %s", task.summary)


def post_test_changes(ctx: Context, req: ApiRequest) -> response.Reply:
    body = req.json()
    summary = body.string("summary")
    specs: list[Any] = body.value.get("tasks") or []
    names = body.str_list("snap-names", required=False)
    gate = body.opt_string("gate") or str(Path(ctx.info["state-dir"]) / "gate")
    st = ctx.state
    with st:
        chg = st.new_change(body.opt_string("kind") or "test", summary)
        prev = None
        for spec in specs:
            t = st.new_task(spec["kind"], spec["summary"])
            t.set("gate", gate)
            for key in ("total", "error", "affects", "event"):
                if key in spec:
                    t.set(key, spec[key])
            chg.affect(*[f"snap:{n}" for n in spec.get("affects", [])])  # what conflict checks find
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
        if names:
            chg.set("snap-names", names)
        for message in body.str_list("warnings", required=False):
            st.add_warning(message)
        st.ensure_before(0)
        return response.async_(chg.id)


def get_boom(ctx: Context, req: ApiRequest) -> response.Reply:
    raise RuntimeError("internal detail that must stay in the log")


def post_conflict(ctx: Context, req: ApiRequest) -> response.Reply:
    raise ChangeConflictError("3", change_kind="install", subject="snap foo")


def _hold_mount(o: Overlord) -> Any:
    hold = Path(o.state_dir) / "hold-mount"  # type: ignore[attr-defined]

    def check(new: Any, current: Any) -> None:
        while hold.exists():  # the test removes it: an event, polled
            time.sleep(0.02)
    return check


def _hold_check(o: Overlord, check_file: Any) -> Any:
    state_dir = Path(o.state_dir)  # type: ignore[attr-defined]

    def check(path: Any) -> Any:
        hold = state_dir / "hold-check"
        if hold.exists():
            (state_dir / "checking").touch()
            while hold.exists():  # the test removes it: an event, polled
                time.sleep(0.02)
        return check_file(path)
    return check


def setup(o: Overlord) -> list[Endpoint]:
    sm = getattr(o, "snap_manager", None)
    if sm is not None:
        sm.check_file = _hold_check(o, sm.check_file)
    fb = getattr(o, "first_boot", None)
    if fb is not None:
        fb.read = _hold_check(o, fb.read)
        for kind in ("gated", "quick", "stubborn", "fail"):
            sm.add_affected_snaps(kind, lambda t: list(t.get("affects", [])))
        sm.add_check_snap(_hold_mount(o))
    o.task_runner.add_handler("gated", _gated, _undo)
    o.task_runner.add_handler("quick", _quick, _undo)
    o.task_runner.add_handler("stubborn", _stubborn)
    o.task_runner.add_handler("fail", _fail)
    o.task_runner.add_handler("approve", _approve)
    return [Endpoint("/v2/test/changes", post=post_test_changes), Endpoint("/v2/test/boom", get=get_boom),
            Endpoint("/v2/test/conflict", post=post_conflict)]
