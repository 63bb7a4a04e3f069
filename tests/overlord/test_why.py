# SPDX-License-Identifier: GPL-3.0-or-later
"""Why tasks are not running, as a real daemon tells it: the API, `overlord tasks` and `overlord debug why`."""

from __future__ import annotations

import json

from tests.support.daemon import DaemonProcess, child_env

WIDE = child_env(COLUMNS="200")  # one line per task, whatever the terminal of the test run


def test_the_api_and_the_command_line_say_why_each_task_waits(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Why", {"kind": "gated", "summary": "Wait for the gate", "total": 10},
                            {"kind": "quick", "summary": "After the gate"},
                            {"kind": "nobody-runs-this", "summary": "Of an unknown kind"})
    chg = daemon.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
    gated, after, unknown = chg["tasks"]
    assert gated["why"] is None  # its handler runs
    assert after["why"] == {
        "reason": "waiting-for-tasks", "message": f"it waits for task {gated['id']} (gated, Doing)",
        "tasks": [{"id": gated["id"], "kind": "gated", "status": "Doing", "change": cid}]}
    # The daemon's runner is asked: it has no handler for this kind (it waits for the task before it first).
    assert unknown["why"]["reason"] == "no-handler" and "'nobody-runs-this'" in unknown["why"]["message"]
    with daemon.client() as c:
        listed = c.changes(select="all")
    assert "why" not in listed[0]["tasks"][0]  # only one change's answer carries it

    tasks = daemon.cli("tasks", cid, env=WIDE)
    assert tasks.returncode == 0, tasks.stderr
    assert f"waiting-for-tasks: it waits for task {gated['id']} (gated, Doing)" in " ".join(tasks.stdout.split())
    why = daemon.cli("debug", "why", cid, env=WIDE)
    assert why.returncode == 0, why.stderr
    lines = [" ".join(line.split()) for line in why.stdout.splitlines()]
    assert lines[0].split() == ["ID", "Status", "Kind", "Why"]
    assert lines[1] == f"{gated['id']} Doing gated running"
    assert lines[2].startswith(f"{after['id']} Do quick waiting-for-tasks: it waits for task {gated['id']}")
    assert lines[3].startswith(f"{unknown['id']} Do nobody-runs-this no-handler:")
    as_json = json.loads(daemon.cli("debug", "why", cid, "--json").stdout)
    assert [t["why"] and t["why"]["reason"] for t in as_json] == [None, "waiting-for-tasks", "no-handler"]

    daemon.open_gate()
    chg = daemon.wait_change(cid, lambda c: c["tasks"][1]["status"] == "Done")
    assert [t["why"] and t["why"]["reason"] for t in chg["tasks"]] == [None, None, "no-handler"]
    # Read from the database file, with no runner: what only the runner knows is not said.
    offline = daemon.cli("debug", "why", cid, "--db", str(daemon.state_dir / "state.db"), "--json")
    assert offline.returncode == 0, offline.stderr
    assert [t["why"]["reason"] for t in json.loads(offline.stdout)] == ["runnable"]
