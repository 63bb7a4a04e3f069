# SPDX-License-Identifier: GPL-3.0-or-later
"""The store is read without the state lock, and an HTTP store's answers are bounded in time and size."""

from __future__ import annotations

import contextlib
import errno
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from engine import Status
from managers import StoreError
from managers.snapstate import get_snap_state, set_snap_state
from managers.snapstore import HttpSnapStore, SnapStore, StoreSnap, is_transient
from managers.snapstore.records import LARGE_FILE, SMALL_FILE
from tests.support.system import System


class WatchedStore(SnapStore):
    """WatchedStore is a directory store that records each read and whether its thread held the state lock."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        self.state: Any = None
        self.reads: list[tuple[str, bool]] = []
        #: hook runs (once) at the next read, before it.
        self.hook: Callable[[], None] | None = None

    def _note(self, what: str) -> None:
        self.reads.append((what, self.state is not None and self.state._held()))
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()

    def _read_text(self, rel: str, limit: int = SMALL_FILE) -> str | None:
        self._note(rel)
        return super()._read_text(rel, limit)

    def open(self, snap: StoreSnap) -> BinaryIO:
        self._note(f"download {snap.name} {snap.revision}")
        return super().open(snap)

    def take(self) -> list[tuple[str, bool]]:
        out, self.reads = self.reads, []
        return out


@pytest.fixture
def watched(system: System) -> WatchedStore:
    store = WatchedStore(system.base / "store")
    system.restart(store=store)
    store.state = system.o.state
    return store


def _under_lock(reads: list[tuple[str, bool]]) -> list[str]:
    return [what for what, held in reads if held]


def test_every_store_read_of_a_verb_or_a_task_is_made_without_the_state_lock(system: System,
                                                                            watched: WatchedStore) -> None:
    sm, st = system.sm, system.o.state
    system.publish("hello", "1.0")
    system.publish("world", "1.0")

    def act(verb: str, names: list[str] | None, **kw: Any) -> str:
        def decide(found: Any) -> str:
            return str(getattr(sm, verb)(names, found=found, **kw).id)
        return sm.with_store_answers(verb, names, decide, **kw)

    cid = act("install", ["hello", "world"])
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    reads = watched.take()
    assert any(w.startswith("download hello") for w, _ in reads)
    assert reads and _under_lock(reads) == []

    system.publish("hello", "2.0", channels=("beta",))
    cid = act("refresh", ["hello"], channel="beta")
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    reads = watched.take()
    assert reads and _under_lock(reads) == []

    system.publish("world", "2.0")
    cid = act("refresh", None)  # everything
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    reads = watched.take()
    assert reads and _under_lock(reads) == []

    # A request queued behind a change in progress reads the store when its turn comes, without the lock.
    system.publish("world", "3.0")
    with st:
        busy = sm.disable("hello").id
        chg = sm.refresh(["world", "hello"], on_conflict="queue")
        assert [t.kind for t in chg.tasks()] == ["run-queued-request"]
        queued = chg.id
    assert watched.take() == []
    system.o.settle(60)
    assert system.status(busy) is Status.DONE, system.err(busy)
    assert "it is disabled" in system.err(queued)  # checked when its turn came
    reads = watched.take()
    assert reads and _under_lock(reads) == []

    # The auto-refresh's check.
    with st:
        auto = st.new_change("auto-refresh", "Auto-refresh snaps")
        auto.add_task(st.new_task("check-refresh", "Check the store for snap updates"))
        st.ensure_before(0)
        cid = auto.id
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    with st:
        assert sm.info("world").current == "3"
    reads = watched.take()
    assert reads and _under_lock(reads) == []


def test_a_snap_that_changes_while_the_store_is_read_is_decided_as_it_is_then(system: System,
                                                                           watched: WatchedStore) -> None:
    sm, st = system.sm, system.o.state
    system.publish("hello", "1.0")
    cid = sm.with_store_answers("install", ["hello"], lambda found: sm.install("hello", found=found).id)
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    system.publish("hello", "2.0", channels=("beta",))

    def switch_meanwhile() -> None:  # another request makes hello track beta while the store is read
        with st:
            snapst = get_snap_state(st, "hello")
            assert snapst is not None
            snapst.channel = "latest/beta"
            set_snap_state(st, "hello", snapst)

    watched.take()
    watched.hook = switch_meanwhile
    # The refresh looked up stable (revision 1: nothing newer); under the lock hello tracks beta, whose answer
    # was not looked up: the store is read again, and the refresh goes to beta's revision 2.
    cid = sm.with_store_answers("refresh", ["hello"], lambda found: sm.refresh("hello", found=found).id)
    system.o.settle(60)
    assert system.status(cid) is Status.DONE, system.err(cid)
    with st:
        assert sm.info("hello").current == "2"
    assert [w for w, _ in watched.take()].count("snaps/hello/channels.yaml") >= 2


# -- an HTTP store's bounds ----------------------------------------------------------------------------


class Hostile:
    """Hostile is an HTTP server on loopback whose answer to each path is a function of the handler."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.answers: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                answer = outer.answers.get(self.path)
                if answer is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(OSError):  # the client hung up
                    answer(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile()
    yield h
    h.close()


def test_a_store_that_streams_for_ever_is_refused_at_the_bound(hostile: Hostile) -> None:
    def endless(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b"a: " + b"b" * 65536 + b"\n"
        for _ in range(8 * LARGE_FILE // len(chunk)):  # twice the bound (a client without one reads it all)
            if hostile.release.is_set():
                return
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")

    hostile.answers["/index.yaml"] = endless
    store = HttpSnapStore(hostile.url, timeout=60)
    with pytest.raises(StoreError) as err:
        store.names()
    assert str(err.value) == (f"cannot read store entry {hostile.url}index.yaml: the store's answer is larger "
                              f"than {4 * LARGE_FILE} bytes, the most an entry of a store may have")


def test_a_store_that_announces_gigabytes_is_refused_before_they_come(hostile: Hostile) -> None:
    def huge(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(10 * 2**30))
        h.end_headers()
        h.wfile.flush()
        hostile.release.wait(60)  # and sends nothing: only the announced length can refuse it in time

    hostile.answers["/snaps/hello/channels.yaml"] = huge
    store = HttpSnapStore(hostile.url, timeout=60)
    with pytest.raises(StoreError, match=f"larger than {4 * SMALL_FILE} bytes"):
        store.channels("hello")


def test_a_download_that_trickles_ends_at_its_deadline_as_a_transient_error(hostile: Hostile) -> None:
    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(2**20))
        h.end_headers()
        h.close_connection = True
        for _ in range(1500):  # 30 s at most, then it hangs up (a client without a deadline sees a short body)
            if hostile.release.wait(0.02):
                return
            h.wfile.write(b"x")
            h.wfile.flush()

    hostile.answers["/snaps/hello/1.snap"] = trickle
    store = HttpSnapStore(hostile.url, timeout=0.2)
    snap = StoreSnap("hello", "1", "x" * 32, "0" * 64, 1024, Path("/nonexistent"))  # its deadline: 0.2 s + 1 KiB
    with store.open(snap) as f, pytest.raises(OSError) as err:  # at 16 KiB/s
        while f.read(65536):
            pass
    assert err.value.errno == errno.ETIMEDOUT and is_transient(err.value)
    assert str(err.value).startswith(f"[Errno {errno.ETIMEDOUT}] cannot download {hostile.url}snaps/hello/1.snap: "
                                     "the store did not send it in time")


def test_a_store_timeout_must_be_a_positive_number() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(StoreError, match="give a positive number of seconds"):
            HttpSnapStore("http://127.0.0.1:1/", timeout=bad)
