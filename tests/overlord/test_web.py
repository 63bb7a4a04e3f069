# SPDX-License-Identifier: GPL-3.0-or-later
"""The web view: a real daemon on a real socket and loopback port, a change made with the real command line,
and a real headless Chromium following it without reloading (tests/support/browser.py); the web port's bounds."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from managers.asserts.build import snap_declaration
from overlord.samples import AUTHORITY, PUBLISHER, SEED_TIME
from tests.support import browser
from tests.support.daemon import START_TIMEOUT, DaemonProcess, short_tempdir

from .test_snaps import SystemDaemon


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """chrome is a headless Chromium for the module's tests (skipped where none can be had; an error in CI)."""
    try:
        paths = browser.find_or_install()
    except browser.Unavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {e}")
        pytest.skip(str(e))
    profile = short_tempdir("ovl-chrome-")
    driver = browser.chrome(*paths, profile=profile)
    driver.set_page_load_timeout(START_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(chrome: Any) -> Iterator[Any]:
    """page is the browser for one test; after it, one blank tab is left (ask for it after the daemon's fixture:
    it is then closed first, and the page's long-poll does not hold the daemon's stop for its grace period)."""
    yield chrome
    for handle in chrome.window_handles[1:]:
        chrome.switch_to.window(handle)
        chrome.close()
    chrome.switch_to.window(chrome.window_handles[0])
    chrome.get("about:blank")


def _wait(driver: Any, what: str, cond: Callable[[Any], Any]) -> Any:
    """_wait waits for a condition on the page (checked every 50 ms, for up to START_TIMEOUT seconds)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # an element read as the page's script swaps <main> is stale: looked for again
        return WebDriverWait(driver, START_TIMEOUT, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond)
    except TimeoutException:
        text = _text(driver, "body")
        pytest.fail(f"the page never showed {what}; it shows:\n{text}")


def _status(driver: Any, selector: str) -> str | None:
    """_status is the data-status of the element the CSS selector finds, or None (not on the page yet)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.dataset.status;",
                                 selector)  # type: ignore[no-any-return]


def _all(driver: Any, selector: str) -> list[tuple[str, str]]:
    """_all is the id and data-status of every element the selector finds, read at one instant."""
    found = driver.execute_script("return Array.from(document.querySelectorAll(arguments[0]))"
                                  ".map(e => [e.id, e.dataset.status || '']);", selector)
    return [(i, s) for i, s in found]


def _text(driver: Any, selector: str) -> str:
    """_text is the text of the element the selector finds ('' when there is none)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                                 selector)  # type: ignore[no-any-return]


def _mark(driver: Any) -> None:
    """_mark leaves a value in the page's window: a reload would lose it."""
    driver.execute_script("window.overlordTestMark = 'not reloaded';")


def _marked(driver: Any) -> bool:
    return bool(driver.execute_script("return window.overlordTestMark === 'not reloaded';"))


def _web_url(d: DaemonProcess) -> str:
    with d.client() as c:
        url = c.system_info()["web"]
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:")
    return url


def _screenshot(driver: Any, name: str) -> Path:
    """_screenshot keeps the whole page (the window made as tall as it, up to 3000 pixels) in test-artifacts/."""
    browser.ARTIFACTS.mkdir(exist_ok=True)
    path = browser.ARTIFACTS / name
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(size["width"], max(size["height"], min(int(height) + 120, 3000)))
    try:
        assert driver.save_screenshot(str(path)), f"cannot save {path}"
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path


@pytest.fixture
def web_system(base: Path) -> Iterator[SystemDaemon]:
    d = SystemDaemon(base, "--web", "127.0.0.1:0")
    d.start()
    yield d
    (d.state_dir / "hold-mount").unlink(missing_ok=True)
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_a_change_made_with_the_cli_appears_and_goes_to_done_without_a_reload(web_system: SystemDaemon,
                                                                               page: Any) -> None:
    d, driver = web_system, page
    url = _web_url(d)
    driver.get(url)  # / sends the browser on to /web/
    _wait(driver, "the list of changes, following the daemon",
          lambda drv: drv.current_url.endswith("/web/") and _text(drv, "#live") == "live")
    assert "No changes yet." in _text(driver, "main")
    _mark(driver)
    changes_tab = driver.current_window_handle

    hold = d.hold_mount()  # the install waits in its mount until the file goes
    p = d.cli("install", "hello", "--no-wait")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    row = f"#change-{cid}"
    _wait(driver, f"change {cid} in progress", lambda drv: _status(drv, row) in ("Do", "Doing"))
    assert "Install \"hello\" snap" in _text(driver, row)

    # The change's own page, in a second tab: its tasks as a graph, following the change too.
    driver.switch_to.new_window("tab")
    driver.get(f"{url}web/changes/{cid}")
    _wait(driver, "the change's graph", lambda drv: _all(drv, "svg.graph .task") and _text(drv, "#live") == "live")
    _mark(driver)
    with d.client() as c:
        chg = c.change(cid)
    assert [i for i, _ in _all(driver, "svg.graph .task")] == [f"task-{t['id']}" for t in chg["tasks"]]
    ids = {t["id"] for t in chg["tasks"]}
    assert len(_all(driver, "svg.graph path.edge")) == sum(1 for t in chg["tasks"] for w in t["wait-tasks"] if w in ids)
    _wait(driver, "a task running", lambda drv: _all(drv, ".task[data-status=Doing]"))
    # Nothing moves while the mount waits: each box says why its task is not running when the API says why.
    with d.client() as c:
        chg = c.change(cid)
    whys = dict(driver.execute_script("return Array.from(document.querySelectorAll('svg.graph .task'))"
                                      ".map(e => [e.id, e.querySelector('.why') && e.querySelector('.why').title]);"))
    assert whys == {f"task-{t['id']}": (t.get("why") or {}).get("message") for t in chg["tasks"]}
    shot = _screenshot(driver, "web-view.png")
    assert shot.stat().st_size > 10_000

    hold.unlink()
    _wait(driver, f"change {cid} Done on its page", lambda drv: _status(drv, "#change-status") == "Done")
    with d.client() as c:
        chg = c.change(cid)
    assert chg["status"] == "Done"
    assert _all(driver, "svg.graph .task") == [(f"task-{t['id']}", t["status"]) for t in chg["tasks"]]
    assert _marked(driver)
    _screenshot(driver, "web-view-done.png")

    driver.close()
    driver.switch_to.window(changes_tab)
    _wait(driver, f"change {cid} Done in the list", lambda drv: _status(drv, row) == "Done")
    assert _marked(driver)  # the list followed without a reload as well
    _screenshot(driver, "web-view-changes.png")


def test_the_page_works_with_the_daemon_on_postgresql(pg_url: str, chrome: Any) -> None:
    base = short_tempdir()
    d = SystemDaemon(base, "--db-url", pg_url, "--web", "127.0.0.1:0")
    d.sample.snap_store.add_assertion(snap_declaration(d.sample.root_key, AUTHORITY, "library", PUBLISHER,
                                                  timestamp=SEED_TIME))
    d.sample.publish("1.0", "library")  # a second snap in the store: installing both makes a lane each
    d.start()
    try:
        url = _web_url(d)
        driver = chrome
        driver.get(f"{url}web/")
        _wait(driver, "the list of changes, following the daemon", lambda drv: _text(drv, "#live") == "live")
        _mark(driver)
        p = d.cli("install", "hello", "library", "--no-wait")  # two snaps: a lane each
        assert p.returncode == 0, p.stderr
        cid = p.stdout.strip()
        _wait(driver, f"change {cid} Done in the list", lambda drv: _status(drv, f"#change-{cid}") == "Done")
        assert _marked(driver)
        driver.find_element("css selector", f"#change-{cid} td.id a").click()
        _wait(driver, "the change's graph", lambda drv: _status(drv, "#change-status") == "Done")
        with d.client() as c:
            chg = c.change(cid)
        assert _all(driver, "svg.graph .task") == [(f"task-{t['id']}", t["status"]) for t in chg["tasks"]]
        lanes = sorted({tuple(t["lanes"]) for t in chg["tasks"]})
        assert len(lanes) >= 2
        assert sorted(driver.execute_script("return Array.from(document.querySelectorAll('svg.graph .band text'))"
                                            ".map(e => e.textContent);")) == sorted(
            ("lane " if len(k) == 1 else "lanes ") + ", ".join(map(str, k)) if k else "no lane" for k in lanes)
        _screenshot(driver, "web-view-lanes.png")
    finally:
        chrome.get("about:blank")  # no long-poll left to hold the daemon's stop
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- the web port, without a browser ------------------------------------------------------


def _get(url: str, path: str, method: str = "GET", host: str | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    hostport = url.removeprefix("http://").rstrip("/")
    conn = http.client.HTTPConnection(hostport, timeout=START_TIMEOUT)
    try:
        headers = {"Host": host} if host is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _unix_get(sock_path: Path, path: str) -> tuple[int, bytes]:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(START_TIMEOUT)
            self.sock.connect(str(sock_path))

    conn = UnixConnection("localhost")
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def web_daemon() -> Iterator[DaemonProcess]:
    base = short_tempdir()
    d = DaemonProcess(base, "--web", "127.0.0.1:0")
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_the_web_port_reads_only_what_the_page_needs(web_daemon: DaemonProcess) -> None:
    d = web_daemon
    cid = d.new_change("Read <b>me</b>", {"kind": "quick", "summary": "one"})
    d.wait_change(cid, lambda c: c["ready"])
    url = _web_url(d)
    status, headers, page = _get(url, "/web/")
    assert status == 200 and f'id="change-{cid}"' in page.decode()
    assert "Read &lt;b&gt;me&lt;/b&gt;" in page.decode()  # text, never markup
    assert "script-src 'self'" in headers["content-security-policy"]
    status, _, body = _get(url, f"/v2/changes/{cid}")  # what the page's script reads
    assert status == 200 and json.loads(body)["result"]["status"] == "Done"
    for path in ("/v2/notices", "/v2/warnings", "/web/static/app.js", "/web/static/style.css"):
        assert _get(url, path)[0] == 200, path

    # Nothing that writes, and nothing the page does not read: the socket serves those.
    status, _, body = _get(url, f"/v2/changes/{cid}", "POST", body=b'{"action": "abort"}')
    assert (status, json.loads(body)["result"]["kind"]) == (405, "method-not-allowed")
    assert _get(url, "/v2/test/changes", "POST", body=b"{}")[0] == 405
    for path in ("/v2/system-info", "/v2/logs", "/v2/snaps", "/v2/openapi.json", "/v2/test/boom"):
        status, _, body = _get(url, path)
        assert (status, json.loads(body)["result"]["kind"]) == (404, "not-found"), path
    # A page of another site that made the browser resolve its name to 127.0.0.1 (DNS rebinding) is refused.
    status, _, body = _get(url, "/v2/changes", host="attacker.example")
    assert (status, json.loads(body)["result"]["kind"]) == (403, "permission-denied")
    assert _get(url, "/web/", host="localhost:8080")[0] == 200

    # The socket serves the page to any local user as well (for ssh -L, or a browser of one's own).
    status, page = _unix_get(d.socket, "/web/")
    assert status == 200 and f'id="change-{cid}"' in page.decode()
    status, page = _unix_get(d.socket, "/web/changes/999")
    assert status == 404 and "cannot find change with id &#39;999&#39;" in page.decode()


def test_no_web_port_where_the_socket_is_closed_to_other_users(base: Path) -> None:
    d = DaemonProcess(base, "--web", "127.0.0.1:0")
    d.state_dir.mkdir(mode=0o700)  # only root reaches the socket: the port must not let the others in
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(START_TIMEOUT) == 1
    d.stop()
    assert (f"error: cannot serve the web view: the directory {d.state_dir.resolve()} is closed to other users, "
            "and the web port would show them what the socket does not") in d.log_text()
    assert not d.socket.exists()


def test_the_web_port_is_loopback_only(base: Path) -> None:
    d = DaemonProcess(base, "--web", "0.0.0.0:8080")
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(START_TIMEOUT) == 1  # it ends by itself, with one line
    d.stop()
    assert ("error: cannot serve the web view on '0.0.0.0:8080': 0.0.0.0 is not a loopback address"
            in d.log_text())
    assert not d.socket.exists()


_READ_AS_USER = """
import http.client, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
for conn in (Unix("localhost", timeout=60), http.client.HTTPConnection(sys.argv[2], timeout=60)):
    for path in ("/web/", "/v2/logs"):
        conn.request("GET", path)
        r = conn.getresponse()
        print(path, r.status, "Guarded" in r.read().decode())
"""


def test_another_user_sees_on_the_web_port_what_the_socket_shows_them(web_daemon: DaemonProcess,
                                                                      nobody: Any) -> None:
    d = web_daemon
    cid = d.new_change("Guarded", {"kind": "quick", "summary": "one"})
    d.wait_change(cid, lambda c: c["ready"])
    hostport = _web_url(d).removeprefix("http://").rstrip("/")
    p = nobody.run("-c", _READ_AS_USER, str(d.socket), hostport, timeout=START_TIMEOUT)
    assert p.returncode == 0, p.stderr
    # The page, to anyone on both; the services' logs (root's) neither: 403 on the socket, not served on the port.
    assert p.stdout.splitlines() == ["/web/ 200 True", "/v2/logs 403 False", "/web/ 200 True", "/v2/logs 404 False"]


def test_the_list_tells_how_far_an_unready_change_is(web_daemon: DaemonProcess) -> None:
    d = web_daemon
    gate = d.state_dir / "list-gate"
    with d.client() as c:
        env = c.request("POST", "/v2/test/changes", body={
            "summary": "Halfway", "gate": str(gate),
            "tasks": [{"kind": "quick", "summary": "one"}, {"kind": "gated", "summary": "two", "total": 3}]})
    cid = str(env["change"])
    d.wait_change(cid, lambda c: c["tasks"][1]["status"] == "Doing")
    try:
        status, page = _unix_get(d.socket, "/web/?part=main")
        row = re.search(rf'<tr id="change-{cid}".*?</tr>', page.decode(), re.S)
        assert status == 200 and row is not None and "1/2 tasks done" in row.group()
        assert 'data-live="1"' in page.decode()  # the script follows progress while something runs
    finally:
        gate.touch()
    d.wait_change(cid, lambda c: c["ready"])
    row = re.search(rf'<tr id="change-{cid}".*?</tr>', _unix_get(d.socket, "/web/")[1].decode(), re.S)
    assert row is not None and 'data-status="Done"' in row.group() and "tasks done" not in row.group()


def test_a_web_port_in_use_stops_the_start_in_one_line(base: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = DaemonProcess(base, "--web", f"127.0.0.1:{port}")
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(START_TIMEOUT) == 1
        d.stop()
    assert f"error: cannot serve the web view on 127.0.0.1:{port}: Address already in use\n" in d.log_text()
    assert "Traceback" not in d.log_text() and not d.socket.exists()
