# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/schedules and `overlord schedules` on a real daemon."""

from __future__ import annotations

import json

import pytest

from overlord.client import ApiError
from tests.support.daemon import DaemonProcess

TEMPLATE = {"kind": "test", "summary": "Scheduled", "tasks": [{"kind": "quick", "summary": "Quick one"}]}


def test_schedules_are_added_listed_run_now_paused_and_removed(daemon: DaemonProcess) -> None:
    with daemon.client() as c:
        got = c.request("POST", "/v2/schedules", body={"name": "nightly", "spec": "0 3 * * *", "template": TEMPLATE})
        assert got["result"]["name"] == "nightly" and got["result"]["next-time"].endswith("T03:00:00.000000Z")
        c.request("POST", "/v2/schedules", body={"name": "weekly", "spec": "mon,10:00", "template": TEMPLATE,
                                                 "missed": "once"})
        listed = c.request("GET", "/v2/schedules")["result"]
        assert [(s["name"], s["missed"], s["paused"]) for s in listed] == [("nightly", "skip", False),
                                                                          ("weekly", "once", False)]
        run = c.request("POST", "/v2/schedules/nightly", body={"action": "run"})
        assert run["type"] == "async"
        paused = c.request("POST", "/v2/schedules/weekly", body={"action": "pause"})["result"]
        assert paused["paused"] and paused["next-time"] is None
    chg = daemon.wait_change(str(run["change"]), lambda c: c["status"] == "Done")
    assert chg["summary"] == "Scheduled"
    out = daemon.cli("schedules", check=True).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["Name", "Spec", "Next", "Last", "Missed", "State"]
    assert lines[1].split()[:3] == ["nightly", "0", "3"] and "T03:00:00" in lines[1]
    assert lines[2].split()[0] == "weekly" and lines[2].split()[-1] == "paused"
    listed = json.loads(daemon.cli("schedules", "--json", check=True).stdout)
    assert [s["name"] for s in listed] == ["nightly", "weekly"]
    with daemon.client() as c:
        c.request("POST", "/v2/schedules/weekly", body={"action": "remove"})
        with pytest.raises(ApiError, match="cannot find schedule 'weekly'") as e:
            c.request("POST", "/v2/schedules/weekly", body={"action": "resume"})
        assert e.value.status_code == 404
        with pytest.raises(ApiError, match="cannot add schedule 'x': cannot parse cron line") as e:
            c.request("POST", "/v2/schedules", body={"name": "x", "spec": "61 * * * *", "template": TEMPLATE})
        assert e.value.status_code == 400
