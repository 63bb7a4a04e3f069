# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and out-of-range values given to the overlord command and the API: one line, never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
import socketserver
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, child_env, overlord_cmd

from .test_api import raw


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(overlord_cmd(*args, "--state-dir", str(tmp_path)), capture_output=True, text=True,
                          env=child_env(), timeout=60)


@pytest.mark.parametrize("hold", ["99999999d", "99999999999999999999d", "999999999999h"])
def test_a_hold_past_the_year_9999_is_a_usage_error(tmp_path: Path, hold: str) -> None:
    p = _cli(tmp_path, "refresh", f"--hold={hold}", "hello")
    assert p.returncode == 2, p.stderr
    assert p.stderr == (f"error: cannot hold for '{hold}': it would end after the year 9999; hold forever instead "
                        "(a bare --hold) (see 'overlord refresh --help')\n")


@pytest.mark.parametrize("age", ["99999999999999999h", "8766000h", "1e3h"])
def test_an_age_out_of_range_in_a_selection_is_a_bad_request(shared_daemon: DaemonProcess, age: str) -> None:
    body = json.dumps({"action": "abort", "select": {"age": age}}).encode()
    got, env = raw(shared_daemon, "POST", "/v2/changes", body)
    assert (got, env["result"]["kind"]) == (400, "bad-request"), env
    assert env["result"]["message"].startswith(f"cannot select changes by age '{age}': it must be ")
    p = shared_daemon.cli("abort", "--select", f"age={age}")
    assert (p.returncode, p.stderr) == (1, f"error: {env['result']['message']}\n")
    assert "Traceback" not in shared_daemon.log_text()


def test_the_longest_age_selects_the_changes_older_than_it(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "POST", "/v2/changes", b'{"action": "abort", "select": {"age": "8765999h"}}')
    assert (got, env["result"]) == (200, {"changes": []})


def test_a_timer_of_countless_slots_is_refused_at_once(shared_daemon: DaemonProcess) -> None:
    # 10^11 slots once made a list of as many spans under the state lock: every request hung, memory grew by GBs
    spec = "00:00~24:00/99999999999"
    body = json.dumps({"name": "many", "spec": spec, "template": {
        "kind": "k", "summary": "s", "tasks": [{"kind": "quick", "summary": "q"}]}}).encode()
    got, env = raw(shared_daemon, "POST", "/v2/schedules", body)
    assert (got, env["result"]["message"]) == (
        400, f"cannot add schedule 'many': cannot parse '{spec}': a window of 1440 minutes has at most 1440 slots")
    got, env = raw(shared_daemon, "GET", "/v2/schedules")
    assert (got, env["result"]) == (200, [])


@pytest.mark.parametrize(("args", "neither", "both"), [
    (("abort",), "name a change ID, or --select the changes to abort",
     "name a change ID or --select the changes to abort, not both"),
    (("retry",), "name a change ID, or --select the changes to retry",
     "name a change ID or --select the changes to retry, not both"),
    (("debug", "timings"), "give a change ID, or --ensure NAME", "give a change ID or --ensure NAME, not both"),
])
def test_a_verb_given_neither_of_two_choices_says_so(tmp_path: Path, args: tuple[str, ...], neither: str,
                                                     both: str) -> None:
    second = ("--ensure", "all") if args[0] == "debug" else ("--select", "kind=test")
    help_hint = f" (see 'overlord {' '.join(args)} --help')\n"
    p = _cli(tmp_path, *args)
    assert (p.returncode, p.stderr) == (2, f"error: {neither}{help_hint}")
    p = _cli(tmp_path, *args, "1", *second)
    assert (p.returncode, p.stderr) == (2, f"error: {both}{help_hint}")


class _Answer(socketserver.StreamRequestHandler):
    """_Answer answers every request with the server's fixed body, as a daemon of another program might."""

    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body: bytes = self.server.body  # type: ignore[attr-defined]
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.mark.parametrize(("body", "args", "said"), [
    (b'{"type": "error", "result": "x"}', ("tasks", "1"),
     "error: cannot understand the daemon's answer to GET /v2/changes/1 (HTTP 200, not an API envelope)\n"),
    (b'{"type": "sync", "warning-count": "x", "result": []}', ("changes",),
     "error: cannot understand the daemon's answer to GET /v2/changes (HTTP 200, not an API envelope)\n"),
    (b'{"type": "sync", "result": {"id": "1"}}', ("tasks", "1"),
     "error: internal error: KeyError: 'tasks' (a bug; 'overlord -v ...' shows where)\n"),
])
def test_an_answer_of_the_wrong_shape_is_one_line(body: bytes, args: tuple[str, ...], said: str) -> None:
    d = Path(tempfile.mkdtemp(prefix="ovl-", dir="/tmp"))  # a short path: a socket's is at most 108 bytes
    server = socketserver.UnixStreamServer(str(d / "overlord.socket"), _Answer)
    server.body = body  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = _cli(d, *args)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(d, ignore_errors=True)
    assert (p.returncode, p.stdout, p.stderr) == (1, "", said)


@pytest.mark.parametrize(("request_head", "path"), [
    (b"POST /v2/snapctl HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{", "/v2/snapctl"),  # open to anyone
    (b"POST /v2/snaps HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
     b"Content-Length: 500\r\n\r\n--xx\r\n", "/v2/snaps"),
])
def test_a_client_gone_before_its_body_ends_leaves_no_traceback(shared_daemon: DaemonProcess, request_head: bytes,
                                                                path: str) -> None:
    d = shared_daemon
    before = len(d.log_text())
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(request_head)
    said = f"POST {path}: the client went away before sending its body"
    deadline = time.monotonic() + 30
    while said not in d.log_text()[before:]:  # the daemon's own word that it saw the disconnection
        assert time.monotonic() < deadline, d.log_text()[before:]
        time.sleep(0.02)
    got, _ = raw(d, "GET", "/v2/changes")
    assert got == 200
    logged = d.log_text()[before:]
    assert "Traceback" not in logged and "ERROR" not in logged, logged


@pytest.mark.parametrize(("args", "option", "value"), [
    (("notices",), "--timeout", "nan"),
    (("watch", "1"), "--reconnect-timeout", "inf"),
    (("watch", "1"), "--reconnect-timeout", "nan"),
    (("daemon", "--root", "/nonexistent"), "--stop-timeout", "nan"),
    (("daemon", "--root", "/nonexistent"), "--stop-timeout", "1e300"),
    (("daemon", "--root", "/nonexistent"), "--header-timeout", "inf"),
    (("daemon", "--root", "/nonexistent"), "--store-timeout", "nan"),
])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_a_usage_error(tmp_path: Path, args: tuple[str, ...],
                                                                           option: str, value: str) -> None:
    p = _cli(tmp_path / "state", *args, option, value)
    command = " ".join(a for a in args if not a.startswith(("-", "/")) and not a.isdigit())
    assert (p.returncode, p.stderr) == (
        2, f"error: Invalid value for '{option}': '{value}' is not a number of seconds up to 1000000000 "
           f"(see 'overlord {command} --help')\n")
    assert not (tmp_path / "state").exists()  # no daemon started


def test_a_long_unknown_change_id_is_not_echoed_whole(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "GET", "/v2/changes/" + "9" * 5000)
    assert (got, env["result"]["message"]) == (404, f"cannot find change with id {'9' * 20!r}... (5000 characters)")
    got, env = raw(shared_daemon, "GET", "/v2/changes/" + "9" * 40)
    assert (got, env["result"]["message"]) == (404, f"cannot find change with id {'9' * 40!r}")


# -- what a hostile handler's error or summary holds never reaches the terminal as it is -----------------

#: A summary and an error as a hostile handler may make them: newlines, a terminal title, colours, a bell, a
#: carriage return that would overwrite the line, a bidirectional override.
HOSTILE_SUMMARY = "Bad \x1b]0;owned\x07 step\r\u202e"
HOSTILE_ERROR = "line one\nline two \x1b[31mred\x1b[0m\x07\tend"
SHOWN_SUMMARY = "Bad \\x1b]0;owned\\x07 step\\r\\u202e"
SHOWN_ERROR = "line one\\nline two \\x1b[31mred\\x1b[0m\\x07\\tend"


@pytest.fixture(scope="module")
def failed(shared_daemon: DaemonProcess) -> tuple[DaemonProcess, dict]:
    """failed is a change whose second task failed with HOSTILE_ERROR, its summary HOSTILE_SUMMARY."""
    d = shared_daemon
    cid = d.new_change("Hostile \x1b[2J\nchange", {"kind": "quick", "summary": "Fine"},
                       {"kind": "fail", "summary": HOSTILE_SUMMARY, "error": HOSTILE_ERROR})
    return d, d.wait_change(cid, lambda c: c["ready"])


def test_the_api_lists_a_failed_changes_errors_with_their_tasks(failed: tuple[DaemonProcess, dict]) -> None:
    _, chg = failed
    assert chg["status"] == "Error"
    assert chg["errors"] == [{"task": chg["tasks"][1]["id"], "summary": HOSTILE_SUMMARY, "error": HOSTILE_ERROR}]
    assert chg["err"] == f"cannot perform the following tasks:\n- {HOSTILE_SUMMARY} ({HOSTILE_ERROR})"


def _no_control(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\r\t\u202e"), repr(text)


@pytest.mark.parametrize("verb", ["tasks", "change"])
def test_a_changes_error_shows_one_line_per_task_and_no_escape(failed: tuple[DaemonProcess, dict],
                                                                verb: str) -> None:
    d, chg = failed
    p = d.cli(verb, chg["id"], env=child_env(COLUMNS="300"))
    assert p.returncode == 0, p.stderr
    _no_control(p.stdout)
    lines = p.stdout.splitlines()
    tail = lines[lines.index("cannot perform the following tasks:"):]
    assert tail == ["cannot perform the following tasks:", f"- {SHOWN_SUMMARY} ({SHOWN_ERROR})"]
    assert any(line.endswith(f"ERROR {SHOWN_ERROR}") for line in lines), p.stdout  # the task's log line, too


def test_watch_tells_a_hostile_error_on_one_line(failed: tuple[DaemonProcess, dict]) -> None:
    d, chg = failed
    p = d.cli("watch", chg["id"])
    assert p.returncode == 1
    _no_control(p.stdout + p.stderr)
    assert p.stderr == f"error: cannot perform the following tasks:\n- {SHOWN_SUMMARY} ({SHOWN_ERROR})\n"
    assert "Hostile \\x1b[2J\\nchange" in p.stdout


def test_the_changes_list_shows_a_hostile_summary_on_one_line(failed: tuple[DaemonProcess, dict]) -> None:
    d, chg = failed
    p = d.cli("changes", "--abs-time", env=child_env(COLUMNS="300"))
    assert p.returncode == 0, p.stderr
    _no_control(p.stdout)
    row = [line for line in p.stdout.splitlines() if line.startswith(f"{chg['id']} ")]
    assert len(row) == 1 and row[0].endswith("Hostile \\x1b[2J\\nchange"), p.stdout


# -- the request's values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "shown"), [
    ("clé".encode(), "'clé'"),  # UTF-8, as curl sends it
    (b"cl\xe9", "'cl\\\\xe9'"),  # not UTF-8: its byte shown
    ("é".encode() * 100, "'" + "é" * 20 + "'... (100 characters)"),
])
def test_a_non_ascii_idempotency_key_is_told_as_it_was_sent(shared_daemon: DaemonProcess, key: bytes,
                                                             shown: str) -> None:
    got, env = raw(shared_daemon, "POST", "/v2/snaps/hello", b'{"action": "install"}',
                   {"Idempotency-Key": key})  # type: ignore[dict-item]  (http.client sends bytes as they are)
    assert (got, env["result"]["message"]) == (
        400, f"invalid Idempotency-Key header {shown}: it must be 1 to 200 printable ASCII characters")


def test_an_event_key_longer_than_the_api_takes_is_a_bad_request(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "POST", "/v2/events", json.dumps({"key": "k" * 100_000}).encode())
    assert (got, env["result"]["message"]) == (
        400, "cannot decode request body: field 'key' is longer than 200 characters (100000)")
    got, env = raw(shared_daemon, "POST", "/v2/events", json.dumps({"key": "k" * 200}).encode())
    assert (got, env["result"]) == (200, {"key": "k" * 200, "woken": 0})


def test_an_unknown_long_path_is_not_echoed_whole(shared_daemon: DaemonProcess) -> None:
    got, env = raw(shared_daemon, "GET", "/v2/" + "x" * 5000)
    assert (got, env["result"]["message"]) == (404, "cannot find endpoint '/v2/xxxxxxxxxxxxxxxx'... (5004 characters)")
    got, env = raw(shared_daemon, "PUT", "/v2/changes/" + "1" * 5000, b"{}")
    assert (got, env["result"]["message"]) == (
        405, "method PUT is not allowed on '/v2/changes/11111111'... (5012 characters)")


@pytest.mark.parametrize(("path", "body"), [
    ("/v2/events", {"key": "x", "data": {"deep": [1, "1e999"]}}),
    ("/v2/warnings", {"action": "okay", "timestamp": "2026-01-01T00:00:00Z", "unread": "-1e999"}),
    ("/v2/changes", {"action": "abort", "select": {"kind": ["x"]}, "extra": "1e400"}),
    ("/v2/snaps/hello", {"action": "install", "x": "1.5e309"}),
    ("/v2/schedules", {"name": "n", "spec": "0 3 * * *", "template": {"kind": "k", "summary": "s", "tasks": [],
                                                                      "n": "1e999"}}),
])
def test_a_number_beyond_a_float_is_refused_in_any_field(shared_daemon: DaemonProcess, path: str,
                                                         body: dict) -> None:
    text = json.dumps(body)
    number = next(v for v in ("-1e999", "1e999", "1e400", "1.5e309") if f'"{v}"' in text)
    got, env = raw(shared_daemon, "POST", path, text.replace(f'"{number}"', number).encode())
    assert (got, env["result"]["message"]) == (
        400, f"cannot decode request body: non-finite number {number} (out of range)")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_in_any_field(shared_daemon: DaemonProcess, constant: str) -> None:
    got, env = raw(shared_daemon, "POST", "/v2/events", f'{{"key": "x", "data": [{constant}]}}'.encode())
    assert (got, env["result"]["message"]) == (
        400, f"cannot decode request body: non-finite number {constant} (not JSON)")


def test_json_for_scripts_escapes_what_a_terminal_acts_on(failed: tuple[DaemonProcess, dict]) -> None:
    d, chg = failed
    p = d.cli("tasks", chg["id"], "--json")
    assert p.returncode == 0, p.stderr
    _no_control(p.stdout)
    assert "\\u202e" in p.stdout and json.loads(p.stdout)["errors"][0]["summary"] == HOSTILE_SUMMARY


@pytest.mark.parametrize(("path", "said"), [
    ("/v2/apps?names=" + "a." * 2500, "invalid service name 'a.a.a.a.a.a.a.a.a.a.'... (5000 characters): it must be "
                                       "SNAP or SNAP.APP"),
    ("/v2/assertions/" + "t" * 5000, "invalid assertion type 'tttttttttttttttttttt'... (5000 characters): it must "
                                     "be one of "),
    ("/v2/notices?after=" + "9" * 5000, "invalid after parameter '99999999999999999999'... (5000 characters): it "
                                        "must be an RFC 3339 time"),
    ("/v2/changes?select=" + "s" * 5000, "invalid select parameter 'ssssssssssssssssssss'... (5000 characters): it "
                                         "must be one of "),
])
def test_a_long_value_in_a_query_is_not_echoed_whole(shared_daemon: DaemonProcess, path: str, said: str) -> None:
    got, env = raw(shared_daemon, "GET", path)
    assert got in (400, 404) and env["result"]["message"].startswith(said), env


# -- rows written into the database by hand ----------------------------------------------------------------


def _edit_rows(d: DaemonProcess, sql: str, *params: object) -> None:
    """_edit_rows stops the daemon, runs sql on its database as a hostile root would (checks off), starts it."""
    d.stop()
    db = sqlite3.connect(d.state_dir / "state.db")
    try:
        db.execute("PRAGMA ignore_check_constraints=1")
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()
    d.start()


def test_a_change_whose_data_is_not_json_leaves_the_daemon_serving(daemon: DaemonProcess) -> None:
    bad = daemon.new_change("Bad data", {"kind": "quick", "summary": "Quick"})
    good = daemon.new_change("Good", {"kind": "quick", "summary": "Quick"})
    daemon.wait_change(good, lambda c: c["ready"])
    _edit_rows(daemon, "UPDATE changes SET data = '{not json' WHERE id = ?", bad)  # it once stopped the start
    got, env = raw(daemon, "GET", f"/v2/changes/{bad}")
    assert (got, env["result"]["kind"]) == (500, "state-damaged")
    assert env["result"]["message"].startswith(f"cannot load change {bad}: its data is not valid JSON ("), env
    got, env = raw(daemon, "GET", "/v2/changes?select=all")
    assert (got, [c["id"] for c in env["result"]]) == (200, [good])
    assert "Traceback" not in daemon.log_text()


def test_a_huge_summary_is_shown_by_its_start(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Huge", {"kind": "quick", "summary": "Quick"})
    daemon.wait_change(cid, lambda c: c["ready"])
    _edit_rows(daemon, "UPDATE changes SET summary = ? WHERE id = ?", "\x1b[2J" + "x" * 200_000, cid)
    for args in (("changes", "--abs-time"), ("watch", cid)):
        p = daemon.cli(*args)
        assert p.returncode == 0, p.stderr
        _no_control(p.stdout)
        assert "... (200004 characters)" in " ".join(p.stdout.split()), args
    for args in (("changes", str(daemon.state_dir / "state.db")), ("change", cid, str(daemon.state_dir / "state.db"))):
        p = subprocess.run(overlord_cmd(*args), capture_output=True, text=True, env=child_env(COLUMNS="100"),
                           timeout=120)
        assert p.returncode == 0, p.stderr
        _no_control(p.stdout)
        assert "\\x1b[2Jxxx" in p.stdout, args


def test_a_hostile_error_cannot_forge_a_line_of_the_daemons_log(shared_daemon: DaemonProcess) -> None:
    d = shared_daemon  # its log is at debug level: a task's log lines are logged too
    forged = "INFO overlord.daemon: started change 999 (forged) for uid 0"
    cid = d.new_change("Forger", {"kind": "fail", "summary": "Forge", "error": f"x\n{forged}\x1b[2J"})
    d.wait_change(cid, lambda c: c["ready"])
    got, _ = raw(d, "GET", "/v2/changes/%0a" + forged.replace(" ", "%20"))
    assert got == 404
    logged = d.log_text()
    assert f"x\\n{forged}\\x1b[2J" in logged
    assert f"\n{forged}" not in logged and "\x1b" not in logged
