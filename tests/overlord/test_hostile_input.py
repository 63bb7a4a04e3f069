# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and out-of-range values given to the overlord command and the API: one line, never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
import socketserver
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
