# SPDX-License-Identifier: GPL-3.0-or-later
"""A store served over HTTP on a loopback port: installs, refreshes, resumed and verified downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Status
from managers import StoreError
from managers.snapstore import HttpSnapStore, serve_in_thread
from tests.support.system import System


@pytest.fixture
def served(system: System) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    server, url = serve_in_thread(system.base / "store")
    yield url, server.RequestHandlerClass.requests  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_install_and_refresh_from_an_http_store(system: System, served: tuple[str, list[tuple[str, str]]]) -> None:
    url, requests = served
    system.publish("hello", "1.0")
    system.restart(store=url)
    assert isinstance(system.sm.snap_store, HttpSnapStore)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is Status.DONE, system.err(cid)
    system.publish("hello", "2.0", channels=("beta",))
    cid = system.run(lambda sm: sm.refresh("hello", channel="beta"))
    assert system.status(cid) is Status.DONE, system.err(cid)
    with system.o.state:
        assert (system.sm.info("hello").current, system.sm.info("hello").tracking) == ("2", "latest/beta")
    assert ("/snaps/hello/2.snap", "") in requests
    store = HttpSnapStore(url)
    assert store.names() == ["hello"]
    assert store.channels("hello") == {"latest/stable": "1", "latest/beta": "2"}
    with pytest.raises(StoreError, match="read only"):
        store.release("hello", "1", ["edge"])


def test_a_partial_download_resumes_with_a_range_and_is_verified(
        system: System, served: tuple[str, list[tuple[str, str]]]) -> None:
    url, requests = served
    system.publish("hello", "1.0")
    blob = (system.base / "store/snaps/hello/1.snap").read_bytes()
    partial = system.root / "var/lib/snaps/partial/hello_1.snap.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    half = len(blob) // 2
    partial.write_bytes(blob[:half])
    system.restart(store=url)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is Status.DONE, system.err(cid)
    assert ("/snaps/hello/1.snap", f"bytes={half}-") in requests
    assert (system.root / "var/lib/snaps/hello_1.snap").read_bytes() == blob

    # A partial copy that is not the file's beginning: the resumed copy does not verify, so it is fetched again
    # whole (and verified).
    system.publish("world", "1.0")
    wblob = (system.base / "store/snaps/world/1.snap").read_bytes()
    (partial.parent / "world_1.snap.partial").write_bytes(b"\0" * (len(wblob) // 2))
    requests.clear()
    cid = system.run(lambda sm: sm.install("world"))
    assert system.status(cid) is Status.DONE, system.err(cid)
    gets = [r for r in requests if r[0] == "/snaps/world/1.snap"]
    assert gets == [("/snaps/world/1.snap", f"bytes={len(wblob) // 2}-"), ("/snaps/world/1.snap", "")]
    assert (system.root / "var/lib/snaps/world_1.snap").read_bytes() == wblob


def test_the_server_hides_what_is_not_the_store(system: System, served: tuple[str, list[tuple[str, str]]]) -> None:
    import httpx

    url, _ = served
    system.publish("hello", "1.0")
    (system.base / "store" / ".staging").mkdir(exist_ok=True)
    (system.base / "store" / ".staging" / "secret").write_text("x")
    for path in ("", "snaps/", ".lock", ".staging/secret", "../root", "snaps/hello/../../store.yaml"):
        assert httpx.get(url + path).status_code == 404, path
    assert httpx.get(url + "snaps/hello/1.yaml").status_code == 200
    r = httpx.get(url + "snaps/hello/1.snap", headers={"Range": "bytes=5-9"})
    assert (r.status_code, r.headers["content-range"], len(r.content)) == (
        206, f"bytes 5-9/{(system.base / 'store/snaps/hello/1.snap').stat().st_size}", 5)


def test_a_store_without_an_index_says_so(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    server, url = serve_in_thread(tmp_path / "store")
    try:
        with pytest.raises(StoreError, match=r"it has no index\.yaml"):
            HttpSnapStore(url).snap("hello")
    finally:
        server.shutdown()
        server.server_close()


def test_a_declaration_over_http_reads_the_index_once(system: System,
                                                       served: tuple[str, list[tuple[str, str]]]) -> None:
    url, requests = served
    system.publish("hello", "1.0")
    store = HttpSnapStore(url)
    requests.clear()
    decl = store.declaration("hello")
    assert decl is not None and decl.header("snap-name") == "hello"
    assert [r for r in requests if r[0] == "/index.yaml"] == [("/index.yaml", "")]
    assert store.declaration("nosuchsnap") is None
