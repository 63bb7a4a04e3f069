# SPDX-License-Identifier: GPL-3.0-or-later
"""Repair of failed changes through a real daemon: retry one, abort or retry a selection (docs/requests.md)."""

from __future__ import annotations

import json

from tests.support.daemon import DaemonProcess

from .test_api import raw


def _failing(d: DaemonProcess, summary: str) -> str:
    cid = d.new_change(summary, {"kind": "quick", "summary": f"{summary}: first"},
                       {"kind": "fail", "summary": f"{summary}: second", "error": "disk on fire"})
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Error"
    return cid


def _task(chg: dict, summary: str) -> dict:
    return next(t for t in chg["tasks"] if t["summary"] == summary)


def test_retry_a_failed_change_from_the_cli_and_the_api(daemon: DaemonProcess) -> None:
    d = daemon
    cid = _failing(d, "one")
    p = d.cli("retry", cid)
    assert p.returncode == 0, p.stderr
    chg = d.wait_change(cid, lambda c: c["ready"] and any("attempt 2" in line for line in
                                                          _task(c, "one: second").get("log", [])))
    assert chg["status"] == "Error"  # it fails again, as its handler does: a second attempt, logged
    assert any("Retrying (attempt 2 of the change; was Error)" in line for line in _task(chg, "one: second")["log"])
    got, env = raw(d, "POST", f"/v2/changes/{cid}", b'{"action": "retry"}')
    assert got == 200 and env["result"]["id"] == cid
    busy = d.new_change("busy", {"kind": "gated", "summary": "waits for the gate"})
    d.wait_change(busy, lambda c: c["tasks"][0]["status"] == "Doing")
    got, env = raw(d, "POST", f"/v2/changes/{busy}", b'{"action": "retry"}')
    assert (got, env["result"]["kind"]) == (400, "change-not-failed")
    assert env["result"]["message"] == f"cannot retry change {busy}: it is not ready (status Doing)"
    p = d.cli("retry", busy)
    assert (p.returncode, p.stderr) == (1, f"error: cannot retry change {busy}: it is not ready (status Doing)\n")
    d.open_gate()
    d.wait_change(busy, lambda c: c["ready"])


def test_abort_and_retry_what_a_selection_picks_in_one_request(daemon: DaemonProcess) -> None:
    d = daemon
    first, second = _failing(d, "one"), _failing(d, "two")
    busy = d.new_change("busy", {"kind": "gated", "summary": "waits for the gate"})
    d.wait_change(busy, lambda c: c["tasks"][0]["status"] == "Doing")
    p = d.cli("retry", "--select", "status=Error,kind=test")
    assert (p.returncode, p.stdout) == (0, f"Retrying changes {first}, {second}\n"), p.stderr
    for cid, name in ((first, "one"), (second, "two")):
        d.wait_change(cid, lambda c, name=name: c["ready"] and any(
            "attempt 2" in line for line in _task(c, f"{name}: second").get("log", [])))
    p = d.cli("abort", "--select", "status=Doing,kind=test")
    assert (p.returncode, p.stdout) == (0, f"Aborted changes {busy}\n"), p.stderr
    assert d.wait_change(busy, lambda c: c["ready"])["status"] in ("Undone", "Hold")
    p = d.cli("abort", "--select", "kind=nothing-like-it")
    assert (p.returncode, p.stdout) == (0, "No change to abort matches kind=nothing-like-it\n")
    p = d.cli("abort", "--select", "colour=red")
    assert p.returncode == 2 and "cannot read --select term 'colour=red'" in p.stderr
    p = d.cli("abort", "1", "--select", "kind=test")
    assert p.returncode == 2 and "not both" in p.stderr
    body = json.dumps({"action": "retry", "select": {"status": ["Broken"]}}).encode()
    got, env = raw(d, "POST", "/v2/changes", body)
    assert (got, env["result"]["message"]) == (400, "cannot select changes by status 'Broken': it is not a status")
    got, env = raw(d, "POST", "/v2/changes", b'{"action": "retry", "select": {}}')
    assert got == 400 and "must be an object naming at least one of status" in env["result"]["message"]
