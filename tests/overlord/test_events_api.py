# SPDX-License-Identifier: GPL-3.0-or-later
"""POST /v2/events: a real daemon's waiting task gets the event's data and finishes."""

from __future__ import annotations

import pytest

from overlord.client import ApiError
from tests.support.daemon import DaemonProcess


def test_an_event_posted_to_the_daemon_wakes_the_waiting_task(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Approve", {"kind": "approve", "summary": "Wait for approval", "event": "deploy:7"})
    daemon.wait_change(cid, lambda c: c["status"] == "Wait")
    with daemon.client() as c:
        assert c.request("POST", "/v2/events", body={"key": "other"})["result"] == {"key": "other", "woken": 0}
        got = c.request("POST", "/v2/events", body={"key": "deploy:7", "data": {"by": "alice"}})
        assert got["result"] == {"key": "deploy:7", "woken": 1}
    chg = daemon.wait_change(cid, lambda c: c["status"] == "Done")
    assert "approved: {'by': 'alice'}" in chg["tasks"][0]["log"][-1]


def test_an_event_without_a_key_is_a_bad_request(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.client() as c:
        with pytest.raises(ApiError, match="missing field 'key'") as e:
            c.request("POST", "/v2/events", body={"data": 1})
        assert e.value.status_code == 400
        with pytest.raises(ApiError, match="cannot use an empty event key"):
            c.request("POST", "/v2/events", body={"key": ""})
