# SPDX-License-Identifier: GPL-3.0-or-later
"""GET /v2/notices, `overlord notices`, and `overlord watch` waiting on notices, against a real daemon."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from overlord.cli import cli
from overlord.cli.cmd_watch import follow
from overlord.client import ApiError, Client
from tests.support.daemon import DaemonProcess

WAIT = 60.0  # a bound on waits for events: a guard against hangs, never a timing
#: More long-polls than the daemon's pool of worker threads (anyio's default: 40).
MANY = 45


def run(d: DaemonProcess, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"OVERLORD_STATE_DIR": str(d.state_dir), "COLUMNS": "200"},
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


class CountingClient(Client):
    """CountingClient records every request it sends, and signals each one."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.sending = threading.Event()

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self.sent.append((path, dict(kw.get("query") or {})))
        self.sending.set()
        return super().send(method, path, **kw)


def test_notices_are_listed_filtered_and_refused_with_400(shared_daemon: DaemonProcess) -> None:
    d = shared_daemon
    cid = d.new_change("Listed", {"kind": "quick", "summary": "one"}, warnings=["notice me"])
    d.wait_change(cid, lambda c: c["ready"])
    with d.client() as c:
        (n,) = c.notices(["change-update"], [cid])
        assert (n["type"], n["key"], n["last-data"], n["expire-after"]) == ("change-update", cid, {"kind": "test"},
                                                                             "168h0m0s")
        assert n["occurrences"] == 3  # spawned, Doing, Done
        assert [w["key"] for w in c.notices(["warning"])] == ["notice me"]
        assert c.notices(["change-update"], [cid], after=n["last-repeated"]) == []
        everything = c.notices()
        assert everything == sorted(everything, key=lambda x: x["last-repeated"])
        for query, message in [({"after": "yesterday"}, "invalid after parameter 'yesterday'"),
                               ({"timeout": "soon"}, "invalid timeout parameter 'soon'"),
                               ({"timeout": "25h"}, "it must be at most 24h")]:
            try:
                c.request("GET", "/v2/notices", query=query)
                raise AssertionError(f"{query} was accepted")
            except ApiError as e:
                assert (e.status_code, e.kind) == (400, "bad-request") and message in e.message
    code, out, err = run(d, "notices", "--type", "change-update", "--key", cid, "--json")
    assert code == 0 and json.loads(out) == [n], err
    code, out, _ = run(d, "notices", "--type", "warning")
    assert code == 0 and "notice me" in out and "Occurrences" in out
    assert run(d, "notices", "--key", "no-such-key")[1] == "No matching notices.\n"


def test_long_polls_hold_no_worker_thread_and_are_woken_by_a_commit(shared_daemon: DaemonProcess) -> None:
    d = shared_daemon
    with d.client() as c:
        before = c.notices()
    cursor = before[-1]["last-repeated"] if before else ""
    got: list[list[dict[str, Any]]] = []
    clients = [d.client() for _ in range(MANY)]

    def poll(c: Client) -> None:
        got.append(c.notices(["warning"], ["wake up"], cursor, timeout=WAIT))

    threads = [threading.Thread(target=poll, args=(c,)) for c in clients]
    try:
        for th in threads:
            th.start()
        # More long-polls wait than the daemon has worker threads: the other requests are still answered.
        with d.client() as c:
            assert c.system_info()["pid"] == d.proc.pid  # type: ignore[union-attr]
            assert c.changes(select="all") is not None
        assert all(th.is_alive() for th in threads)
        d.new_change("Waker", warnings=["wake up"])
        for th in threads:
            th.join(WAIT)
        assert not any(th.is_alive() for th in threads)
    finally:
        for c in clients:
            c.close()
    assert len(got) == MANY and all([n["key"] for n in ns] == ["wake up"] for ns in got)


def test_watch_makes_no_request_while_nothing_changes(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    d = shared_daemon
    # A task of a kind no handler runs: the change stays in Do, nothing about it changes.
    cid = d.new_change("Idle", {"kind": "idle", "summary": "Nobody runs me"})
    client = CountingClient(d.state_dir)
    result: list[dict[str, Any]] = []
    th = threading.Thread(target=lambda: result.append(follow(client, cid, None, WAIT)))
    try:
        th.start()
        # It reads where the notices stand, reads the change, then long-polls the notices.
        for _ in range(10):
            if any(q.get("timeout") for _, q in client.sent):
                break
            client.sending.clear()
            assert client.sending.wait(WAIT)
        assert [p for p, q in client.sent if q.get("timeout")] == ["/v2/notices"], client.sent
        sent = len(client.sent)
        client.sending.clear()
        # Other changes come and go (their notices are not the watched change's): watch asks nothing.
        other = d.new_change("Other", {"kind": "quick", "summary": "elsewhere"})
        d.wait_change(other, lambda c: c["ready"])
        assert not client.sending.wait(1.0)  # the old watch asked 5 times a second
        assert len(client.sent) == sent
        with d.client() as c:
            c.abort(cid)  # Do -> Hold: the change is ready
        th.join(WAIT)
        assert not th.is_alive()
    finally:
        client.close()
    assert result[0]["status"] == "Hold"
    paths = [p for p, _ in client.sent]
    assert paths == ["/v2/notices", f"/v2/changes/{cid}", "/v2/notices", f"/v2/changes/{cid}"], client.sent


def test_a_long_poll_whose_client_left_stops_waiting(daemon: DaemonProcess) -> None:
    """A closed browser tab, an interrupted watch: the handler is cancelled at once, not held until its timeout
    (24 h at most: a waiter woken by every commit), and the daemon's stop does not wait for it."""
    import socket

    from .test_watch import _wait_for

    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(daemon.socket))
            s.sendall(b"GET /v2/notices?types=nothing-comes&timeout=24h HTTP/1.1\r\nHost: localhost\r\n\r\n")
    _wait_for("the long-polls given up", daemon.log_text,
              lambda log: log.count("GET /v2/notices: the client went away before the answer") == 3)
    assert daemon.stop() == 0
    assert "timeout graceful shutdown exceeded" not in daemon.log_text()
