# SPDX-License-Identifier: GPL-3.0-or-later
"""A slow or hostile HTTP store against a real daemon: other clients are answered while it is read, and a
store that never finishes its answer fails the install with one line once the deadline has passed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from managers.snapstore import make_server
from overlord.client import ApiError
from overlord.samples import build_store, keys
from tests.support.daemon import START_TIMEOUT, DaemonProcess

from .test_snaps import _get


class StallingStore:
    """StallingStore serves a store directory on loopback; a GET of `stall` (a path) is held until `release`.

    mode "hang" sends nothing while it is held, then the file; "trickle" sends a status line and then a
    header one byte every 20 ms, for as long as it is held (no read ever waits long: only a deadline on the
    whole request ends it). `entered` is set when a held GET arrives.
    """

    def __init__(self, directory: Path, stall: str, mode: str = "hang") -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.mode = mode
        self.server: ThreadingHTTPServer = make_server(directory)
        outer = self
        base: Any = self.server.RequestHandlerClass

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                if self.path == stall and not outer.release.is_set():
                    outer.entered.set()
                    if outer.mode == "trickle":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        while not outer.release.wait(0.02):
                            try:
                                self.wfile.write(b"a")
                                self.wfile.flush()
                            except OSError:
                                return  # the client hung up: what the test waits for
                        return
                    outer.release.wait(START_TIMEOUT)
                super().do_GET()

        self.server.RequestHandlerClass = Handler
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def hold(self, mode: str) -> None:
        """hold makes the next GETs of the stalled path wait (as mode says) until release is set."""
        self.mode = mode
        self.entered.clear()
        self.release.clear()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(base: Path) -> Iterator[StallingStore]:
    root_key, publisher_key = keys(base / "keys")
    build_store(base / "store", root_key, publisher_key, build_dir=base / "snaps")
    store = StallingStore(base / "store", "/index.yaml")
    store.release.set()
    yield store
    store.close()


def _daemon(base: Path, store: StallingStore, *extra: str) -> DaemonProcess:
    d = DaemonProcess(base, "--store", store.url, "--trusted-key", str(base / "keys" / "root.pub.pem"), *extra)
    d.start()
    return d


@pytest.fixture
def daemon_of(base: Path, served: StallingStore, request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    d = _daemon(base, served, *request.param)
    yield d
    served.release.set()
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.mark.parametrize("daemon_of", [()], indirect=True)
def test_other_clients_are_answered_while_the_store_is_read(daemon_of: DaemonProcess, served: StallingStore) -> None:
    d, store = daemon_of, served
    for action in ("install", "refresh", "refresh-all"):
        store.hold("hang")
        outcome: dict[str, Any] = {}

        def post(action: str = action, outcome: dict[str, Any] = outcome) -> None:
            try:
                with d.client() as c:
                    body: dict[str, Any] = {"action": action.removesuffix("-all")}
                    path = "/v2/snaps" if action == "refresh-all" else "/v2/snaps/hello"
                    outcome["change"] = c.request("POST", path, body=body, timeout=START_TIMEOUT)["change"]
            except ApiError as e:
                outcome["error"] = e

        poster = threading.Thread(target=post)
        poster.start()
        try:
            assert store.entered.wait(START_TIMEOUT), f"{action}: the daemon never asked the store"
            # The store holds its answer, and the state lock is free: other clients are answered.
            assert _get(d, "/v2/snaps") == 200, action
            assert _get(d, "/v2/changes?select=all") == 200, action
            assert poster.is_alive(), f"{action}: the request finished early: the test proves nothing"
        finally:
            store.release.set()
            poster.join(START_TIMEOUT)
        if action == "install":
            assert d.wait_change(outcome["change"], lambda c: c["ready"])["status"] == "Done"
        else:  # the sample store has nothing newer of hello: the refresh, decided after the wait, says so
            assert "updates available" in str(outcome.get("error")), (action, outcome)


@pytest.mark.parametrize("daemon_of", [("--store-timeout", "1")], indirect=True)
def test_a_store_that_never_answers_fails_the_install_after_the_deadline(daemon_of: DaemonProcess,
                                                                        served: StallingStore) -> None:
    d, store = daemon_of, served
    expected = (f"cannot read store entry {store.url}index.yaml: the store did not answer within 1 s "
                "(overlord daemon --store-timeout)")
    # A store that sends its answer a byte at a time: no wait between bytes is long, only the deadline ends it.
    store.hold("trickle")
    started = time.monotonic()
    with d.client() as c, pytest.raises(ApiError) as err:
        c.request("POST", "/v2/snaps/hello", body={"action": "install"}, timeout=START_TIMEOUT)
    assert time.monotonic() - started < START_TIMEOUT  # ended by the deadline, not by the test's patience
    assert store.entered.is_set()
    assert (err.value.kind, err.value.message) == ("store-error", expected)
    # A store that says nothing at all; the command line shows the same one line.
    store.hold("hang")
    p = d.cli("install", "hello")
    assert p.returncode != 0 and store.entered.is_set()
    assert p.stderr.strip().splitlines() == [f"error: {expected}"], p.stderr
    with d.client() as c:
        assert c.request("GET", "/v2/snaps")["result"] == []
