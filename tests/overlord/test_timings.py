# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings from a real daemon: GET /v2/debug?aspect=change-timings and `overlord debug timings`."""

from __future__ import annotations

import json
import time

import pytest

from overlord.client import ApiError
from tests.support.daemon import DaemonProcess, child_env


def test_debug_timings_of_a_change_and_of_ensure_passes(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Timed", {"kind": "quick", "summary": "First"},
                            {"kind": "fail", "summary": "Second", "error": "broken on purpose"})
    chg = daemon.wait_change(cid, lambda c: c["ready"])
    first, second = (t["id"] for t in chg["tasks"])
    with daemon.client() as c:
        runs = c.timings(change_id=cid)
        assert [(r["task-id"], r["kind"], r["phase"], r["attempt"], r["outcome"]) for r in runs] == [
            (first, "quick", "do", 1, "done"), (second, "fail", "do", 1, "error"),
            (first, "quick", "undo", 1, "undone")]
        assert all(r["duration"] >= 0 and r["started"].endswith("Z") for r in runs)
        passes = c.timings(ensure="all")
        assert all(p["managers"] and all(isinstance(m["name"], str) for m in p["managers"]) for p in passes)
        with pytest.raises(ApiError) as e:
            c.timings()
        assert e.value.kind == "bad-request" and "change-id or ensure" in str(e.value)
        with pytest.raises(ApiError) as e:
            c.timings(change_id="999")
        assert e.value.kind == "change-not-found"

    table = daemon.cli("debug", "timings", cid, env=child_env(COLUMNS="200"))
    assert table.returncode == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines[0] == ["Task", "Kind", "Phase", "Attempt", "Outcome", "Started", "Duration"]
    assert [line[:5] for line in lines[1:]] == [[first, "quick", "do", "1", "done"],
                                               [second, "fail", "do", "1", "error"],
                                               [first, "quick", "undo", "1", "undone"]]
    as_json = daemon.cli("debug", "timings", cid, "--json")
    assert json.loads(as_json.stdout) == runs
    # The same from the database file, with no daemon asked: the daemon writes the runs in batches, by a commit
    # (here: a new change) once the oldest waited a second (docs/runner.md, "Timings").
    deadline = time.monotonic() + 60
    while True:
        daemon.new_change("Later", {"kind": "quick", "summary": "a commit"})
        offline = daemon.cli("debug", "timings", cid, "--json", "--db", str(daemon.state_dir / "state.db"))
        assert offline.returncode == 0, offline.stderr
        if json.loads(offline.stdout) == runs or time.monotonic() > deadline:
            break
    assert json.loads(offline.stdout) == runs
    ensure = daemon.cli("debug", "timings", "--ensure", "TaskRunner", "--json")
    assert ensure.returncode == 0, ensure.stderr
    assert all("TaskRunner" in [m["name"] for m in p["managers"]] for p in json.loads(ensure.stdout))
    usage = daemon.cli("debug", "timings")
    assert usage.returncode == 2 and "give a change ID, or --ensure NAME" in usage.stderr
