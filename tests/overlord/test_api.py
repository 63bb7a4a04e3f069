# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST API of a real daemon: envelopes, changes, abort, warnings, and bad requests."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest

from overlord.client import ApiError
from tests.support.daemon import DaemonProcess


def raw(d: DaemonProcess, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """raw sends a request with http.client over the socket, as curl would."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(d.socket))

    conn = Conn("localhost", timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        rsp = conn.getresponse()
        return rsp.status, json.loads(rsp.read())
    finally:
        conn.close()


def test_changes_and_tasks_in_snapds_shape(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Install two things", {"kind": "quick", "summary": "First"},
                            {"kind": "quick", "summary": "Second"}, **{"snap-names": ["foo"]})
    chg = daemon.wait_change(cid, lambda c: c["ready"])
    assert chg["status"] == "Done" and chg["kind"] == "test" and chg["summary"] == "Install two things"
    assert chg["spawn-time"].endswith("Z") and chg["ready-time"].endswith("Z")
    first, second = chg["tasks"]
    assert first["kind"] == "quick" and first["status"] == "Done"
    assert first["progress"] == {"label": "", "done": 1, "total": 1}
    assert first["log"][-1].endswith("INFO ran First")
    assert second["wait-tasks"] == [first["id"]] and second["lanes"] == []
    status, env = raw(daemon, "GET", f"/v2/changes/{cid}")
    assert status == 200 and env["type"] == "sync" and env["status"] == "OK" and env["status-code"] == 200
    with daemon.client() as c:
        assert [x["id"] for x in c.changes(select="all")] == [cid]
        assert c.changes(select="in-progress") == []
        assert [x["id"] for x in c.changes(select="ready", snap="foo")] == [cid]
        assert c.changes(select="all", snap="bar") == []


def test_abort_a_running_change_and_refuse_a_ready_one(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Slow", {"kind": "quick", "summary": "Before"},
                            {"kind": "gated", "summary": "Wait for the gate", "total": 10})
    daemon.wait_change(cid, lambda c: c["tasks"][1]["status"] == "Doing")
    with daemon.client() as c:
        aborted = c.abort(cid)
        assert aborted["id"] == cid
    chg = daemon.wait_change(cid, lambda c: c["ready"])
    assert chg["status"] == "Undone"
    assert [t["status"] for t in chg["tasks"]] == ["Undone", "Undone"]
    with daemon.client() as c, pytest.raises(ApiError) as e:
        c.abort(cid)
    assert e.value.status_code == 400 and e.value.kind == "change-ready"
    assert e.value.message == f"cannot abort change {cid} with nothing pending"


def test_failed_change_carries_err(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Break", {"kind": "fail", "summary": "Break it", "error": "disk on fire"})
    chg = daemon.wait_change(cid, lambda c: c["ready"])
    assert chg["status"] == "Error"
    assert chg["err"] == "cannot perform the following tasks:\n- Break it (disk on fire)"


def _signed_account(revision: int) -> bytes:
    """_signed_account is an account assertion signed by the sample root key, then given another revision."""
    from managers.asserts.build import account
    from overlord.samples import sample_keys

    text = account(sample_keys()[0], "root", "acme", "ACME", revision=5).text
    return text.replace("revision: 5\n", f"revision: {revision}\n").encode()


@pytest.mark.parametrize(("method", "path", "body", "status", "kind", "message"), [
    ("GET", "/v2/changes?select=bogus", None, 400, "bad-request", "invalid select parameter 'bogus'"),
    ("GET", "/v2/changes/999", None, 404, "change-not-found", "cannot find change with id '999'"),
    ("GET", "/v2/changes/x%20y", None, 404, "change-not-found", "cannot find change with id 'x y'"),
    ("POST", "/v2/changes/999", b'{"action": "abort"}', 404, "change-not-found", "cannot find change"),
    ("GET", "/v2/nothing", None, 404, "not-found", "cannot find endpoint '/v2/nothing'"),
    ("PUT", "/v2/changes", None, 405, "method-not-allowed", "method PUT is not allowed"),
    ("POST", "/v2/warnings", b"{not json", 400, "bad-request", "cannot decode request body: invalid JSON"),
    ("POST", "/v2/warnings", b"", 400, "bad-request", "cannot decode request body: it is empty"),
    ("POST", "/v2/warnings", b"[1, 2]", 400, "bad-request", "a JSON object is expected, not a list"),
    ("POST", "/v2/warnings", b"\xff\xfe", 400, "bad-request", "not UTF-8"),
    ("POST", "/v2/warnings", b"[" * 100000, 400, "bad-request", "cannot decode request body"),
    ("POST", "/v2/warnings", b'{"timestamp": "2030-01-01T00:00:00Z"}', 400, "bad-request", "missing field 'action'"),
    ("POST", "/v2/warnings", b'{"action": 7}', 400, "bad-request", "field 'action' must be a string, not a number"),
    ("POST", "/v2/warnings", b'{"action": "nope"}', 400, "bad-request", "unknown action 'nope'"),
    ("POST", "/v2/warnings", b'{"action": "okay"}', 400, "bad-request", "missing field 'timestamp'"),
    ("POST", "/v2/warnings", b'{"action": "okay", "timestamp": "yesterday"}', 400, "bad-request",
     "field 'timestamp' is not an RFC 3339 time"),
    ("POST", "/v2/warnings", b'{"action": "okay", "timestamp": "2030-01-01T00:00:00"}', 400, "bad-request",
     "has no time zone"),
    ("GET", "/v2/warnings?select=x", None, 400, "bad-request", "invalid select parameter"),
    # Huge or out-of-range values: a 400 naming them, never a 500 with a traceback in the log.
    ("POST", "/v2/snaps/hello", b'{"action": "revert", "revision": ' + b"9" * 5000 + b"}", 400, "bad-request",
     "cannot decode request body: a number has 5000 digits (at most 20)"),
    ("POST", "/v2/warnings", b'{"action": "okay", "n": -' + b"9" * 5000 + b"}", 400, "bad-request",
     "cannot decode request body: a number has 5000 digits (at most 20)"),
    ("POST", "/v2/warnings", b'{"action": NaN}', 400, "bad-request",
         "cannot decode request body: non-finite number NaN (not JSON)"),
    ("POST", "/v2/snaps/hello", b'{"action": "revert", "revision": "' + b"9" * 5000 + b'"}', 400, "bad-request",
     "field 'revision' must be a revision (a number from 1 to 9223372036854775807, or x and one for a local "
     "revision), not '99999999999999999999... (5000 characters)'"),
    ("POST", "/v2/snaps/hello", b'{"action": "remove", "revision": 9223372036854775808}', 400, "bad-request",
     "field 'revision' must be a revision"),
    # A revision ending in a line break (re's $ matches before one): refused, not read as 5.
    ("POST", "/v2/snaps/hello", b'{"action": "revert", "revision": "5\\n"}', 400, "bad-request",
     "field 'revision' must be a revision"),
    ("POST", "/v2/warnings", b'{"action": "okay", "timestamp": "0001-01-01T00:00:00+14:00"}', 400, "bad-request",
     "cannot decode request body: field 'timestamp' is out of range: '0001-01-01T00:00:00+14:00'"),
    ("POST", "/v2/warnings", b'{"action": "okay", "timestamp": "9999-12-31T23:59:59-14:00"}', 400, "bad-request",
     "field 'timestamp' is out of range"),
    ("POST", "/v2/assertions", _signed_account(revision=2**63), 400,
     "invalid-assertion", "header 'revision' ('9223372036854775808') must be an integer from 0 to "
     "9223372036854775807"),
])
def test_bad_requests_get_a_reason_never_a_traceback(shared_daemon: DaemonProcess, method: str, path: str,
                                                     body: bytes | None, status: int, kind: str,
                                                     message: str) -> None:
    tracebacks = shared_daemon.log_text().count("Traceback")
    got, env = raw(shared_daemon, method, path, body)
    assert (got, env["type"], env["status-code"], env["result"]["kind"]) == (status, "error", status, kind)
    assert env["result"]["message"].startswith(message) or message in env["result"]["message"]
    assert "Traceback" not in env["result"]["message"] and "\n" not in env["result"]["message"]
    assert len(env["result"]["message"]) < 300
    assert shared_daemon.log_text().count("Traceback") == tracebacks


#: The bodies of the requests that act on snaps and services, refused with the whole message (the fields are
#: checked where the body is read, Body in overlord/daemon/api.py; the messages are the API's).
_REVISION = "a revision (a number from 1 to 9223372036854775807, or x and one for a local revision)"
REFUSED_ACTIONS = [
    ("/v2/snaps/hello", {"action": "install", "channel": ""},
     "cannot decode request body: field 'channel' must be a non-empty string"),
    ("/v2/snaps/hello", {"action": "refresh", "channel": 7},
     "cannot decode request body: field 'channel' must be a non-empty string"),
    ("/v2/snaps/hello", {"action": "switch"}, "cannot switch: field 'channel' is missing"),
    ("/v2/snaps/hello", {"action": "switch", "channel": None}, "cannot switch: field 'channel' is missing"),
    ("/v2/snaps/hello", {"action": "install", "revision": ""},
     f"cannot decode request body: field 'revision' must be {_REVISION}, not ''"),
    ("/v2/snaps/hello", {"action": "revert", "revision": 0},
     f"cannot decode request body: field 'revision' must be {_REVISION}, not '0'"),
    ("/v2/snaps/hello", {"action": "remove", "revision": [1]},
     "cannot decode request body: field 'revision' must be a string or a number"),
    ("/v2/snaps/hello", {"action": "enable", "revision": "1"},
     "cannot decode request body: field 'revision' is not an option of enable"),
    ("/v2/snaps/hello", {"action": "disable", "wait-for-conflicts": "yes"},
     "cannot decode request body: field 'wait-for-conflicts' must be true or false, not a string"),
    ("/v2/snaps/hello", {"channel": "edge"}, "cannot decode request body: missing field 'action'"),
    ("/v2/snaps", {"action": "install", "snaps": ["hello"], "channel": "edge"},
     "cannot decode request body: field 'channel' is not an option of install"),
    ("/v2/snaps", {"action": "remove", "snaps": []}, "cannot remove no snaps: field 'snaps' is empty"),
    ("/v2/snaps", {"action": "install", "snaps": ["hello", 7]},
     "cannot decode request body: field 'snaps' must be a list of strings"),
    ("/v2/snaps", {"action": "install", "snaps": ["Bad_Name"]},
     "invalid snap name 'Bad_Name': 2 to 40 of a-z, 0-9 and -, with a letter"),
    ("/v2/snaps", {"action": "hold", "snaps": ["hello"], "wait-for-conflicts": True},
     "cannot decode request body: field 'wait-for-conflicts' is not an option of hold"),
    ("/v2/snaps", {"action": "unhold", "time": "forever"},
     "cannot decode request body: field 'time' is not an option of unhold"),
    ("/v2/snaps", {"action": "hold", "snaps": ["hello"]},
     "cannot hold: field 'time' must be an RFC 3339 time or \"forever\""),
    ("/v2/apps", {"action": "start", "names": ["hello"], "now": True},
     "cannot decode request body: field 'now' is not an option of start"),
]


@pytest.mark.parametrize(("path", "body", "message"), REFUSED_ACTIONS)
def test_a_bad_action_body_is_refused_naming_the_field(shared_daemon: DaemonProcess, path: str,
                                                      body: dict[str, object], message: str) -> None:
    got, env = raw(shared_daemon, "POST", path, json.dumps(body).encode())
    assert (got, env["result"]["kind"], env["result"]["message"]) == (400, "bad-request", message)


def test_ready_change_abort_is_checked_before_the_body(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Quick", {"kind": "quick", "summary": "x"})
    daemon.wait_change(cid, lambda c: c["ready"])
    got, env = raw(daemon, "POST", f"/v2/changes/{cid}", b'{"action": "explode"}')
    assert got == 400 and env["result"]["message"] == "unknown action 'explode': it must be 'abort' or 'retry'"


def _send_raw(d: DaemonProcess, head: bytes, body: bytes) -> tuple[int, dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(d.socket))
        s.sendall(head + body)
        rsp = http.client.HTTPResponse(s)  # type: ignore[arg-type]
        rsp.begin()
        return rsp.status, json.loads(rsp.read())


def test_request_bodies_are_size_limited(shared_daemon: DaemonProcess) -> None:
    daemon = shared_daemon
    limit = 1024 * 1024
    # Refused from the announced length, before reading any of it.
    got, env = _send_raw(daemon, b"POST /v2/warnings HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % (2 * limit), b"")
    assert got == 413 and env["result"]["kind"] == "request-too-large"
    # Without a length up front (chunked): cut off once past the limit.
    chunk = b"x" * (limit // 4)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5))
    got, env = _send_raw(daemon, b"POST /v2/warnings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                         body)
    assert got == 413 and env["result"]["message"] == f"cannot read request body: it is larger than {limit} bytes"
    with daemon.client() as c:  # and the daemon goes on
        assert c.system_info()["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_system_info_and_openapi(shared_daemon: DaemonProcess) -> None:
    daemon = shared_daemon
    with daemon.client() as c:
        info = c.system_info()
        spec = c.request("GET", "/v2/openapi.json")["result"]
    assert info["socket"] == str(daemon.socket) and info["write-access"] == "root"
    assert spec["openapi"].startswith("3.") and "/v2/changes/{id}" in spec["paths"]


def test_warnings_listed_counted_and_okayed(daemon: DaemonProcess) -> None:
    daemon.new_change("Warn", warnings=["disk [bold]almost[/] full", "second"])
    with daemon.client() as c:
        pending = c.warnings()
        assert [w["message"] for w in pending] == ["disk [bold]almost[/] full", "second"]
        assert c.warning_count == 2 and c.warning_timestamp is not None
        w = pending[0]
        assert w["expire-after"] == "672h0m0s" and w["repeat-after"] == "24h0m0s" and "last-shown" not in w
        from datetime import datetime

        assert c.okay(datetime.fromisoformat(pending[-1]["last-added"])) == 2
        assert c.warnings() == [] and c.warning_count == 0
        assert [w["last-shown"] is not None for w in c.warnings(all=True)] == [True, True]


def test_post_is_only_for_root_or_the_group() -> None:
    """An in-process check of the rule; test_access runs real clients as another user."""
    from overlord.daemon.access import AccessPolicy, PeerCred

    anyone = PeerCred(pid=1, uid=1000, gid=1000)
    assert AccessPolicy().may_write(PeerCred(1, 0, 0))
    assert not AccessPolicy().may_write(anyone) and not AccessPolicy().may_write(None)
    assert AccessPolicy("1000").may_write(anyone)
    assert not AccessPolicy("1001").may_write(anyone)
    assert AccessPolicy("1001").may_write(PeerCred(1, 1000, 1000, (5, 1001)))  # a supplementary group it holds
    assert not AccessPolicy("1001").may_write(PeerCred(1, 1000, 1000, None))  # groups unknown: not granted
    assert AccessPolicy(own_uid=1000).may_write(anyone)  # the daemon's own uid
    assert AccessPolicy(own_uid=1000).describe() == "root or uid 1000"


def test_openapi_describes_every_route_and_error_kind() -> None:
    """The OpenAPI file lists exactly the served paths and methods, and the closed list of error kinds."""
    from overlord.daemon import ENDPOINTS
    from overlord.daemon.api_system import openapi
    from overlord.daemon.errors import ErrorKind

    spec = openapi()
    served = {ep.path: {m.lower() for m in ep.methods()} for ep in ENDPOINTS}
    described = {path: {m for m in ops if m in ("get", "post", "put", "delete")} for path, ops in spec["paths"].items()}
    assert described == served
    kinds = spec["components"]["schemas"]["Error"]["properties"]["kind"]["enum"]
    assert sorted(kinds) == sorted(k.value for k in ErrorKind)


def test_docs_list_every_error_kind() -> None:
    from overlord.daemon.errors import ErrorKind

    doc = (Path(__file__).resolve().parents[2] / "docs" / "daemon.md").read_text()
    for kind in ErrorKind:
        assert f"| `{kind.value}` |" in doc, kind


def test_an_unforeseen_failure_is_a_500_without_details(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "GET", "/v2/test/boom")
    assert (got, env["result"]["kind"]) == (500, "internal-error")
    assert env["result"]["message"] == ("internal error: cannot answer GET /v2/test/boom "
                                        "(the daemon's log has details)")
    log = shared_daemon.log_text()
    assert "Traceback" in log and "internal detail that must stay in the log" in log


def test_a_conflict_is_a_409_naming_the_change(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "POST", "/v2/test/conflict", b"{}")
    assert got == 409 and env["result"]["kind"] == "snap-change-conflict"
    assert env["result"]["value"] == {"change-id": "3", "change-kind": "install"}
    assert env["result"]["message"] == "cannot start a change for snap foo: change 3 (install) is in progress"


def test_conflicts_exit_with_10() -> None:
    from overlord.cli._client import cli_error
    from overlord.client import ApiError, DaemonUnavailable

    assert cli_error(ApiError("cannot x: change 3 is in progress", "snap-change-conflict", 409)).exit_code == 10
    assert cli_error(ApiError("cannot find change", "change-not-found", 404)).exit_code == 1
    e = cli_error(DaemonUnavailable(Path("/s"), "there is no socket"), "list changes")
    assert (e.exit_code, e.message) == (1, "cannot reach the overlord daemon at /s: there is no socket")
    e = cli_error(ApiError("access denied: POST /v2/changes/1 needs root (uid 1000)", "permission-denied", 403),
                  "abort change 1")
    assert e.message == "cannot abort change 1: access denied: POST /v2/changes/1 needs root (uid 1000)"


def test_any_stored_text_makes_valid_json(daemon: DaemonProcess) -> None:
    weird = "snowman \u2603, a NUL \x00, an escape \x1b[2J and [bold]markup[/]"
    cid = daemon.new_change(weird, {"kind": "quick", "summary": weird})
    chg = daemon.wait_change(cid, lambda c: c["ready"])
    assert chg["summary"] == weird and chg["tasks"][0]["log"][-1].endswith(f"INFO ran {weird}")
    got, env = raw(daemon, "POST", "/v2/test/changes", b'{"summary": "lone \\udc80", "tasks": []}')
    assert (got, env["result"]["message"]) == (400, "cannot decode request body: a string holds a lone UTF-16 "
                                                    "surrogate")


def test_a_row_edited_by_hand_leaves_its_change_out_of_lists_and_names_it(daemon: DaemonProcess) -> None:
    """One damaged row: GET /v2/changes still answers (without that change), the change itself is a 500
    with kind state-damaged naming the row, never a traceback; the others read as before."""
    import sqlite3

    bad = daemon.new_change("Damaged later", {"kind": "quick", "summary": "Gets a bad status"})
    good = daemon.new_change("Stays readable", {"kind": "quick", "summary": "Fine"})
    for cid in (bad, good):
        daemon.wait_change(cid, lambda c: c["ready"])
    conn = sqlite3.connect(daemon.state_dir / "state.db", isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE tasks SET status = 'Bogus' WHERE change_id = ?", (int(bad),))
    finally:
        conn.close()
    status, env = raw(daemon, "GET", "/v2/changes?select=all")
    assert status == 200 and [c["id"] for c in env["result"]] == [good]
    status, env = raw(daemon, "GET", f"/v2/changes/{bad}")
    assert status == 500 and env["result"]["kind"] == "state-damaged"
    message = env["result"]["message"]
    assert f"change {bad}" in message and "'Bogus'" in message and "\n" not in message
    status, env = raw(daemon, "GET", f"/v2/changes/{good}")
    assert status == 200 and env["result"]["status"] == "Done"
