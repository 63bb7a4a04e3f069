# SPDX-License-Identifier: GPL-3.0-or-later
"""Idempotent requests through the daemon: the Idempotency-Key header, and the client that sends it again."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Change, State
from managers.snap import pack
from overlord.client import IDEMPOTENCY_HEADER, KEY_ENV, Client
from overlord.daemon.idempotency import ChangeRequest
from overlord.samples import SEED, TEST_KEYS
from tests.support.daemon import DaemonProcess, child_env, overlord_cmd, short_tempdir

from .test_api import raw
from .test_snaps import SystemDaemon, _task, system  # noqa: F401  (a fixture)

WAIT = 120.0  # generous: a bound for a loaded machine, never a timing assertion


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


#: What the CLI sends for each request that makes a change, and a part of the body each send must hold.
CLIENT_CALLS: dict[str, tuple[Callable[[Client, Path], str], bytes]] = {
    "install": (lambda c, f: c.snap_action("hello", "install"), b'{"action": "install"}'),
    "upload": (lambda c, f: c.sideload(f, dangerous=True), b"snap file bytes"),
    "connect": (lambda c, f: c.connect("reader", "logs"), b'"action": "connect"'),
    "disconnect": (lambda c, f: c.disconnect("reader", "logs"), b'"action": "disconnect"'),
    "set": (lambda c, f: c.set_conf("hello", {"mode": "a"}), b'{"mode": "a"}'),
    "services": (lambda c, f: c.service_action("restart", ["hello"]), b'"action": "restart"'),
    "seed": (lambda c, f: c.seed("/seed"), b'"path": "/seed"'),
}


@pytest.mark.parametrize("call", list(CLIENT_CALLS))
def test_the_client_sends_a_request_again_with_its_key_when_the_daemon_went_away(call: str) -> None:
    """A real socket whose first connection is dropped after the request is read (a daemon killed mid-answer):
    the client sends the request again, with the same key, and takes the second answer."""
    base = short_tempdir()
    path = base / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    seen: list[dict[str, Any]] = []

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
                seen.append({"key": headers.get(IDEMPOTENCY_HEADER.lower(), ""), "body": rest})
                if n == 0:
                    continue  # dropped without an answer
                answer = json.dumps({"type": "async", "status-code": 202, "status": "Accepted", "result": None,
                                     "change": "7"}).encode()
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\nConnection: close\r\n\r\n" + answer)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    snap = base / "hello.snap"
    snap.write_bytes(b"snap file bytes")
    make, part = CLIENT_CALLS[call]
    try:
        with Client(socket=path, timeout=30) as c:
            assert make(c, snap) == "7"
        th.join(30)
        assert len(seen) == 2
        assert seen[0]["key"] == seen[1]["key"] and len(seen[0]["key"]) == 32  # the same request, the same key
        assert part in seen[0]["body"] and part in seen[1]["body"]
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


# -- every request that makes a change, through one mechanism ---------------------------------------------

KEYED_YAML = """name: keyed
version: '1.0'
summary: Has a service, a configure hook and a network plug
apps:
  svc:
    command: bin/svc
    daemon: simple
plugs:
  net:
    interface: network
"""


def _snap_file(base: Path, name: str, version: str, extra: str = "") -> Path:
    src = base / f"src-{name}-{version}"
    (src / "meta" / "hooks").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "meta" / "snap.yaml").write_text(extra or f"name: {name}\nversion: '{version}'\nsummary: Uploaded\n")
    (src / "meta" / "hooks" / "configure").write_text("#!/bin/sh\n")
    (src / "bin" / "svc").write_text("#!/bin/sh\nexec sleep 3020\n")
    for f in (src / "meta" / "hooks" / "configure", src / "bin" / "svc"):
        f.chmod(0o755)
    (base / "out").mkdir(exist_ok=True)
    return pack(src, base / "out" / f"{name}-{version}")


@pytest.fixture(scope="module")
def keyed() -> Iterator[DaemonProcess]:
    """keyed is one daemon (it trusts the sample seed's root) with the snap "keyed" installed and connected."""
    base = short_tempdir()
    d = DaemonProcess(base, "--trusted-key", str(TEST_KEYS / "root.pub.pem"))
    try:
        d.start()
        with d.client() as c:
            cid = c.sideload(_snap_file(base, "keyed", "1.0", KEYED_YAML), dangerous=True)
        assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"
        with d.client() as c:
            c.request("POST", "/v2/schedules", body={"name": "a", "spec": "0 3 * * *", "template": {
                "kind": "test", "summary": "Scheduled", "tasks": [{"kind": "quick", "summary": "Quick"}]}})
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


def _form(file: Path, dangerous: str = "true") -> tuple[bytes, str]:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"dangerous\"\r\n\r\n{dangerous}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"snap\"; filename=\"{file.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + file.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _connected(d: DaemonProcess) -> bool:
    with d.client() as c:
        return any(x["plug"]["snap"] == "keyed" for x in c.connections("keyed").get("established", []))


def _plug(d: DaemonProcess, connected: bool) -> None:
    """_plug connects or disconnects keyed:net (without a key) unless it is so already, and waits for it."""
    if _connected(d) == connected:
        return
    with d.client() as c:
        cid = c.connect("keyed", "net") if connected else c.disconnect("keyed", "net")
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"


def _interfaces(action: str, plug: str = "net") -> dict[str, Any]:
    return {"action": action, "plugs": [{"snap": "keyed", "plug": plug}], "slots": [{"snap": "", "slot": ""}]}


#: Each request that makes a change: what must hold before it, the request (method, path, body, headers), and
#: another request (another body, or another path) that may not use its key.
Request = tuple[str, str, bytes, dict[str, str]]


def _json(method: str, path: str, body: dict[str, Any]) -> Request:
    return method, path, json.dumps(body).encode(), {"Content-Type": "application/json"}


def _upload(d: DaemonProcess, version: str) -> Request:
    body, ctype = _form(_snap_file(d.base / f"up-{version}", "uploaded", version))
    return "POST", "/v2/snaps", body, {"Content-Type": ctype}


def _seeded(d: DaemonProcess) -> bool:
    with d.client() as c:
        return bool(c.seed_state()["seeded"])


CASES: dict[str, tuple[Callable[[DaemonProcess], None], Callable[[DaemonProcess], Request],
                       Callable[[DaemonProcess], Request]]] = {
    "upload": (lambda d: None, lambda d: _upload(d, "1.0"), lambda d: _upload(d, "2.0")),
    "connect": (lambda d: _plug(d, False),
                lambda d: _json("POST", "/v2/interfaces", _interfaces("connect")),
                lambda d: _json("POST", "/v2/interfaces", _interfaces("connect", "other"))),
    "disconnect": (lambda d: _plug(d, True),
                   lambda d: _json("POST", "/v2/interfaces", _interfaces("disconnect")),
                   lambda d: _json("POST", "/v2/interfaces", _interfaces("connect"))),
    "configure": (lambda d: None, lambda d: _json("PUT", "/v2/snaps/keyed/conf", {"mode": "a"}),
                  lambda d: _json("PUT", "/v2/snaps/keyed/conf", {"mode": "b"})),
    "services": (lambda d: None, lambda d: _json("POST", "/v2/apps", {"action": "restart", "names": ["keyed"]}),
                 lambda d: _json("POST", "/v2/apps", {"action": "stop", "names": ["keyed"]})),
    "schedule run": (lambda d: None, lambda d: _json("POST", "/v2/schedules/a", {"action": "run"}),
                     lambda d: _json("POST", "/v2/schedules/b", {"action": "run"})),
    "seed": (lambda d: None, lambda d: _json("POST", "/v2/seed", {"action": "seed", "path": str(SEED)}),
             lambda d: _json("POST", "/v2/seed", {"action": "seed", "path": "/elsewhere"})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_request_that_makes_a_change_honours_its_key(keyed: DaemonProcess, case: str) -> None:
    d = keyed
    prepare, make, other = CASES[case]
    prepare(d)
    method, path, body, headers = make(d)
    key = {IDEMPOTENCY_HEADER: f"key-{case}"}
    got, env = raw(d, method, path, body, {**headers, **key})
    assert got == 202, env
    cid = env["change"]
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"
    with d.client() as c:
        before = [x["id"] for x in c.changes(select="all")]
    # Sent again (the client did not hear the answer): the same change, and nothing else is made.
    got, env = raw(d, method, path, body, {**headers, **key})
    assert (got, env.get("change")) == (202, cid), env
    # Another request under the same key: refused, naming the change the key names.
    method, path, body, headers = other(d)
    got, env = raw(d, method, path, body, {**headers, **key})
    assert (got, env["result"]["kind"]) == (409, "snap-change-conflict"), env
    assert f"with key 'key-{case}': it names change {cid}" in env["result"]["message"]
    assert env["result"]["value"]["change-id"] == cid
    with d.client() as c:
        assert [x["id"] for x in c.changes(select="all")] == before


def test_a_daemon_that_loses_the_key_to_another_answers_with_its_change(pg_url: str) -> None:
    """Two daemons on one PostgreSQL database, one key: the one whose claim comes second rolls its change back
    and answers with the other's (ChangeRequest.run looks the key up again)."""
    a, b = State.open(url=pg_url), State.open(url=pg_url)
    try:
        claimed, release = threading.Event(), threading.Event()
        got: dict[str, str] = {}

        def wait_for_b(chg: Change) -> str:  # a's answer, given with the key claimed, before a commits
            claimed.set()
            assert release.wait(WAIT)
            return chg.id

        def host_a() -> None:
            got["a"] = ChangeRequest("api:0:k", "k", "connect", {"plug": "p"}).run(
                a, lambda: a.new_change("connect", "from a"), wait_for_b)

        ta = threading.Thread(target=host_a)
        ta.start()
        assert claimed.wait(WAIT)
        made: list[str] = []

        def make_b() -> Change:  # b's lookup found nothing (a has not committed): b makes a change, then a commits
            chg = b.new_change("connect", "from b")
            made.append(chg.id)
            release.set()
            return chg

        got["b"] = ChangeRequest("api:0:k", "k", "connect", {"plug": "p"}).run(b, make_b, lambda chg: chg.id)
        ta.join(WAIT)
        assert got["b"] == got["a"] and made and made[0] != got["a"]
        with b:
            assert b.change(made[0]) is None  # rolled back
            assert [c.id for c in b.changes()] == [got["a"]]
    finally:
        a.close()
        b.close()


def test_a_daemon_gone_for_good_mid_answer_is_told_with_the_key_to_send_again(tmp_path: Path) -> None:
    """The daemon takes the request and dies before answering, and is not back by the client's last retry:
    the command says the change may have been made, and how to run it again safely (with the same key)."""
    base = short_tempdir()
    path = base / "overlord.socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    keys: list[str] = []

    def serve() -> None:  # one request read, no answer, then nobody listens: connection refused
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            for line in data.decode().split("\r\n"):
                if line.lower().startswith(IDEMPOTENCY_HEADER.lower() + ":"):
                    keys.append(line.split(":", 1)[1].strip())
        server.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        p = subprocess.run(overlord_cmd("install", "hello", "--state-dir", str(base)), capture_output=True,
                           text=True, env=child_env(), timeout=WAIT)
        th.join(WAIT)
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)
    assert len(keys) == 1 and len(keys[0]) == 32
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == (f"error: cannot reach the overlord daemon at {path}: the daemon "
                        "went away while answering POST /v2/snaps/hello and did not come back; the change may have "
                        f"been made: check 'overlord changes', or run the same command again with "
                        f"{KEY_ENV}={keys[0]} to get that change rather than a new one\n")


def test_a_command_run_again_with_the_key_it_told_gets_the_same_change(system: SystemDaemon) -> None:  # noqa: F811
    d = system
    hold = d.hold_mount()
    env = child_env(**{KEY_ENV: "again-1"})
    first = d.cli("install", "hello", "--no-wait", env=env)
    assert first.returncode == 0, first.stderr
    second = d.cli("install", "hello", "--no-wait", env=env)
    assert (second.returncode, second.stdout, second.stderr) == (0, first.stdout, "")
    other = d.cli("install", "hello", "--no-wait")  # a new key: a new request, refused while the first runs
    assert other.returncode == 10, other.stderr
    hold.unlink()
    assert d.wait_change(first.stdout.strip(), lambda c: c["ready"])["status"] == "Done"
