# SPDX-License-Identifier: GPL-3.0-or-later
"""Idempotent requests through the daemon: the Idempotency-Key header, and the client that sends it again."""

from __future__ import annotations

import json
import socket
import threading

from overlord.client import IDEMPOTENCY_HEADER, Client
from tests.support.daemon import short_tempdir

from .test_api import raw
from .test_snaps import SystemDaemon, _task, system  # noqa: F401  (a fixture)


def test_a_request_sent_again_with_its_key_gets_the_change_it_made(system: SystemDaemon) -> None:  # noqa: F811
    d = system
    hold = d.hold_mount()
    body = b'{"action": "install"}'
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "req-1"})
    assert got == 202
    cid = env["change"]
    d.wait_change(cid, lambda c: _task(c, "mount-snap")["status"] == "Doing")
    # The same request again (the client did not hear the answer): the same change, not a conflict.
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "req-1"})
    assert (got, env["change"]) == (202, cid)
    got, env = raw(d, "POST", "/v2/snaps", b'{"action": "install", "snaps": ["hello"]}',
                   {IDEMPOTENCY_HEADER: "req-1"})
    assert (got, env["change"]) == (202, cid)
    # Without the key, or with another one, it is another request: a conflict.
    got, env = raw(d, "POST", "/v2/snaps/hello", body)
    assert (got, env["result"]["kind"]) == (409, "snap-change-conflict")
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "req-2"})
    assert (got, env["result"]["kind"]) == (409, "snap-change-conflict")
    hold.unlink()
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"
    # Once installed: the retried request still gets its change, a new one is told the snap is there.
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "req-1"})
    assert (got, env["change"]) == (202, cid)
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "req-3"})
    assert (got, env["result"]["kind"]) == (400, "snap-already-installed")
    with d.client() as c:
        assert [x["id"] for x in c.changes(select="all")] == [cid]
    # A key of another kind of change is a conflict, and a bad key a 400.
    got, env = raw(d, "POST", "/v2/snaps/hello", b'{"action": "remove"}', {IDEMPOTENCY_HEADER: "req-1"})
    assert got == 409 and "with key" in env["result"]["message"], env
    got, env = raw(d, "POST", "/v2/snaps/hello", body, {IDEMPOTENCY_HEADER: "x" * 201})
    assert (got, env["result"]["kind"]) == (400, "bad-request")
    assert "invalid Idempotency-Key header" in env["result"]["message"]


def test_the_client_sends_a_request_again_with_its_key_when_the_daemon_went_away() -> None:
    """A real socket whose first connection is dropped after the request is read (a daemon killed mid-answer):
    the client sends the request again, with the same key, and takes the second answer."""
    base = short_tempdir()
    path = base / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    seen: list[dict[str, str]] = []

    def serve() -> None:
        for n in range(2):
            conn, _ = server.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                need = int(headers.get("content-length", "0"))
                while len(rest) < need:
                    rest += conn.recv(65536)
                seen.append({"key": headers.get(IDEMPOTENCY_HEADER.lower(), ""), "body": rest.decode()})
                if n == 0:
                    continue  # dropped without an answer
                answer = json.dumps({"type": "async", "status-code": 202, "status": "Accepted", "result": None,
                                     "change": "7"}).encode()
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\nConnection: close\r\n\r\n" + answer)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with Client(socket=path, timeout=30) as c:
            assert c.snap_action("hello", "install") == "7"
        th.join(30)
        assert len(seen) == 2
        assert seen[0] == seen[1] and len(seen[0]["key"]) == 32  # the same request, the same key
        assert json.loads(seen[0]["body"]) == {"action": "install"}
    finally:
        server.close()
        for p in (path, base):
            if p.is_dir():
                p.rmdir()
            else:
                p.unlink(missing_ok=True)
