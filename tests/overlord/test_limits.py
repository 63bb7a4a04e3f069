# SPDX-License-Identifier: GPL-3.0-or-later
"""No local user can starve the daemon's socket: bounds per uid and overall, root's reserve, the header timeout,
and a resource failure logged once per interval (docs/daemon.md, "Limits and threats")."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overlord.client import Client
from tests.support.daemon import START_TIMEOUT, DaemonProcess
from tests.support.other_user import OtherUser

from .test_snaps import SystemDaemon

#: HOLDER opens N connections to the socket, says "ready", waits for a line on stdin, then tells which of them
#: the daemon answered (a refusal) and which it keeps open, as JSON.
HOLDER = r"""
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    conns.append(s)
print("ready", flush=True)
sys.stdin.readline()
kept, refused = 0, []
for s in conns:
    s.settimeout(0.0)
    try:
        data = s.recv(65536)
    except BlockingIOError:
        kept += 1
        continue
    refused.append(data.decode(errors="replace"))
print(json.dumps({"kept": kept, "refused": refused}), flush=True)
"""


class Holder:
    """Holder is a process of another user holding idle connections to the daemon's socket."""

    def __init__(self, user: OtherUser, sock: Path, n: int) -> None:
        self.proc = subprocess.Popen(user.command("-c", HOLDER, str(sock), str(n)), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=user.home,
                                     env=user.env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", self.proc.stderr.read() if self.proc.stderr else line

    def result(self) -> dict[str, Any]:
        out, err = self.proc.communicate("go\n", timeout=START_TIMEOUT)
        assert self.proc.returncode == 0, err
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _as(nobody: OtherUser, uid: int) -> OtherUser:
    """_as is another unprivileged uid (no passwd entry needed) running the same copy of the project."""
    return OtherUser(uid, uid, nobody.python, nobody.home)


def _connections(c: Client) -> dict[str, Any]:
    stats: dict[str, Any] = c.system_info()["connections"]
    return stats


def _until(what: str, probe: Callable[[], Any], pred: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        seen = probe()
        if pred(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}; last seen: {seen}")
        time.sleep(0.02)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        h.kill()


def test_users_over_their_bounds_are_refused_while_root_is_served(nobody: OtherUser, base: Path,
                                                                  holders: list[Holder]) -> None:
    d = SystemDaemon(base, "--max-connections", "20", "--max-user-connections", "8", "--root-connections", "4",
                     "--header-timeout", "600")
    d.start()
    try:
        assert d.proc is not None
        # Room for the bounds, not for what the users try: without the bounds they would take every descriptor.
        spare = _open_fds(d.proc.pid) + 40
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (spare, spare))
        with Client(d.state_dir, timeout=START_TIMEOUT) as c:
            for uid in (nobody.uid, nobody.uid - 1):  # each past its bound of 8 (30 > 8); together 16 of 20 - 4
                holders.append(Holder(_as(nobody, uid), d.socket, 30))
                _until(f"uid {uid}'s connections counted", lambda: _connections(c),
                       lambda s: s["refused"] >= 22 * len(holders))
            holders.append(Holder(_as(nobody, nobody.uid - 2), d.socket, 5))  # none left for a third user
            stats = _until("the third user refused", lambda: _connections(c), lambda s: s["refused"] >= 49)
            assert stats["open"] == 17, json.dumps(stats)  # 8 + 8 + this client's, from root's reserve
            # Root is served: it installs a snap (a POST, then watching the change to its end).
            assert d.ok("install", "hello").stdout.rstrip().endswith("hello 1.0 from ACME Corp (acme) installed")
        first, second, third = (h.result() for h in holders)
        for uid, got in ((nobody.uid, first), (nobody.uid - 1, second)):
            assert got["kept"] == 8 and len(got["refused"]) == 22
            assert all(r.startswith("HTTP/1.1 503 Service Unavailable\r\n") for r in got["refused"])
            assert (f'"message": "cannot serve another connection of uid {uid}: it has 8 open already (close some)", '
                    '"kind": "too-many-connections"') in got["refused"][0]
        assert third["kept"] == 0 and len(third["refused"]) == 5
        assert "cannot serve another connection: the daemon has too many open; try again later" in third["refused"][0]
        log = d.log_text()
        assert "Traceback" not in log and "out of system resource" not in log
    finally:
        d.stop()


def _recv_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_a_connection_without_a_complete_header_in_time_is_closed(base: Path) -> None:
    d = DaemonProcess(base, "--header-timeout", "0.3")
    d.start()
    try:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        trickle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        kept_alive = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (silent, trickle, kept_alive):
            s.settimeout(START_TIMEOUT)  # an answer or a close comes long before; none at all fails the test
            s.connect(str(d.socket))
        trickle.sendall(b"GET /v2/system-info HTTP/1.1\r\nHost: overlord\r\n")  # and never the blank line
        kept_alive.sendall(b"GET /v2/system-info HTTP/1.1\r\nHost: overlord\r\n\r\n")
        assert _recv_all(silent) == b""
        assert _recv_all(trickle) == b""
        answered = _recv_all(kept_alive)  # answered, then closed: no next request header came in time
        assert answered.startswith(b"HTTP/1.1 200 OK\r\n") and answered.endswith(b"}")
        # A client that sends its request in time is answered as ever.
        with d.client() as c:
            assert c.system_info()["connections"]["header-timeout"] == 0.3
    finally:
        d.stop()


def test_running_out_of_descriptors_is_logged_once_per_interval(base: Path) -> None:
    d = DaemonProcess(base)
    d.start()
    pending: list[socket.socket] = []
    try:
        assert d.proc is not None
        with Client(d.state_dir, timeout=START_TIMEOUT) as c:
            assert _connections(c)["accept-failures"] == 0  # and this keep-alive connection stays open
            soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE)
            tight = _open_fds(d.proc.pid) + 3
            resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (tight, hard))
            for _ in range(40):  # root's: within every bound, but past the descriptors left
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(d.socket))
                pending.append(s)
            # accept() fails, asyncio tries again a second later: wait for the second failure.
            _until("accept failing again", lambda: _connections(c), lambda s: s["accept-failures"] >= 2)
            for s in pending:
                s.close()
            resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        _until("accepting again", d.log_text, lambda log: "again, after" in log)
        log = d.log_text()
        assert log.count("cannot accept connections on") == 1, log
        assert "Too many open files (EMFILE; " in log
        assert "Traceback" not in log and "out of system resource" not in log
        with d.client() as c:
            assert c.system_info()["connections"]["accept-failures"] >= 2
    finally:
        for s in pending:
            s.close()
        d.stop()


def test_the_help_tells_the_bounds_the_daemon_uses() -> None:
    from overlord.daemon.limits import Limits
    from tests.support.daemon import invoke

    text = " ".join(invoke("daemon", "--help").output.split())
    limits = Limits()
    for option, value in (("--max-connections", limits.total), ("--max-user-connections", limits.per_user),
                          ("--root-connections", limits.reserve), ("--header-timeout", f"{limits.header_timeout:g}")):
        found = re.search(re.escape(option) + r" \w+(?: RANGE)? .*?\[default: ([^\]]+)\]", text)
        assert found is not None and found.group(1) == str(value), option


def test_a_refused_client_says_so_in_one_line(base: Path) -> None:
    d = DaemonProcess(base, "--max-connections", "2", "--root-connections", "1", "--header-timeout", "600")
    d.start()
    held: list[socket.socket] = []
    try:
        for _ in range(2):  # even root's connections are bounded, by the total
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            held.append(s)
        p = d.cli("changes")
        assert (p.returncode, p.stdout, p.stderr) == (
            1, "", "error: cannot serve another connection: the daemon has too many open; try again later\n")
        for s in held:
            s.close()
        _until("the daemon serving again", lambda: d.cli("changes").returncode, lambda code: code == 0)
    finally:
        for s in held:
            s.close()
        d.stop()


def test_bad_requests_any_client_can_send_are_logged_once_per_interval(base: Path) -> None:
    d = DaemonProcess(base)
    d.start()
    try:
        answers = []
        for request in [b"NOT HTTP AT ALL\r\n\r\n"] * 5 + [b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(START_TIMEOUT)
                s.connect(str(d.socket))
                s.sendall(request)
                answers.append(_recv_all(s).split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 400 Bad Request"] * 6  # the last: a header over 16 KiB
        with d.client() as c:
            assert c.system_info()["pid"] == d.proc.pid  # type: ignore[union-attr]
        log = d.log_text()
        assert log.count("Invalid HTTP request received.") == 1, log
        assert "Invalid HTTP request received. (said at most every 60 s; 0 more since it was last said)" in log
        assert "Traceback" not in log
    finally:
        d.stop()
