# SPDX-License-Identifier: GPL-3.0-or-later
"""watch's first read survives a daemon killed in the middle of its answer; no daemon at all is an error at once."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from overlord.cli._output import CliError
from overlord.cli.cmd_watch import first_read
from overlord.client import Client, DaemonUnavailable

CHANGE = {"id": "7", "kind": "install-snap", "summary": "Install", "status": "Done", "ready": True, "tasks": []}


def _serve(path: Path, answers: list[bytes], served: threading.Event) -> threading.Thread:
    """_serve answers one connection per item of answers on a real Unix socket, then closes it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def run() -> None:
        with listener:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(30)
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    conn.sendall(answer)
        served.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_daemon_killed_mid_answer_is_asked_again_and_watch_goes_on(tmp_path: Path) -> None:
    body = json.dumps({"type": "sync", "status-code": 200, "status": "OK", "result": CHANGE}).encode()
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3278\r\n\r\n"  # then gone
    whole = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)) + body
    served = threading.Event()
    sock = tmp_path / "overlord.socket"
    thread = _serve(sock, [cut, whole], served)
    with Client(socket=sock, timeout=30) as client:
        assert first_read(client, "7", reconnect_timeout=60)["status"] == "Done"
    assert served.wait(30)
    thread.join(30)


def test_a_cut_answer_is_a_daemon_that_went_away_and_no_socket_one_that_is_not_there(tmp_path: Path) -> None:
    served = threading.Event()
    sock = tmp_path / "overlord.socket"
    _serve(sock, [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], served)
    with Client(socket=sock, timeout=30) as client, pytest.raises(DaemonUnavailable) as went:
        client.change("7")
    assert went.value.went_away
    with Client(socket=tmp_path / "none.socket", timeout=30) as client:
        with pytest.raises(DaemonUnavailable) as absent:
            client.change("7")
        assert not absent.value.went_away
        with pytest.raises(CliError, match="there is no socket"):
            first_read(client, "7", reconnect_timeout=60)  # at once: no waiting for a daemon never seen
