# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord watch` as a user meets it: live in a real terminal (tmux), Ctrl-C, and a daemon that dies under it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import REPO, START_TIMEOUT, DaemonProcess, child_env, overlord_cmd


def _wait_for(what: str, probe: Callable[[], str], pred: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        seen = probe()
        if pred(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}; last seen:\n{seen}")
        time.sleep(0.05)


def test_watch_survives_a_killed_and_restarted_daemon(base: Path) -> None:
    d = DaemonProcess(base)
    d.start()
    cid = d.new_change("Survive a crash", {"kind": "quick", "summary": "Prepare"},
                       {"kind": "gated", "summary": "Fetch", "total": 6})
    d.wait_change(cid, lambda c: c["tasks"][1]["status"] == "Doing")
    asked = f'"GET /v2/changes/{cid} HTTP/1.1" 200'
    before = d.log_text().count(asked)
    watch = subprocess.Popen(overlord_cmd("watch", cid, "--state-dir", str(d.state_dir)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        _wait_for("watch asking the daemon", d.log_text, lambda log: log.count(asked) > before)
        killed = d.proc.pid  # type: ignore[union-attr]
        d.kill()  # SIGKILL in the middle of the change
        assert watch.poll() is None  # still waiting for the daemon
        d.start()  # on the same state: the stale socket is replaced, the Doing task runs again
        assert d.proc.pid != killed  # type: ignore[union-attr]
        d.open_gate()
        out, err = watch.communicate(timeout=START_TIMEOUT)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    assert f"Change {cid} (test): Survive a crash - Done" in out
    assert re.search(r"Done\s+Fetch .* 6/6 steps", out)
    assert d.stop() == 0


@pytest.fixture
def tmux(base: Path) -> Iterator[Callable[..., str]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (CI machines start without it): the live display is not checked here")
    name = f"ovl-{os.getpid()}-{base.name}"
    started = []

    def run(*args: str) -> str:
        p = subprocess.run(["tmux", "-L", name, "-f", "/dev/null", *args], capture_output=True, text=True,
                           timeout=START_TIMEOUT)
        if args[0] == "new-session":
            started.append(name)
        return p.stdout

    yield run
    if started:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, timeout=START_TIMEOUT)


def _start_watch(tmux: Callable[..., str], d: DaemonProcess, cid: str) -> Callable[[], str]:
    env = child_env()
    shell = (f"cd {shlex.quote(str(REPO))}; env PYTHONPATH={shlex.quote(env['PYTHONPATH'])} "
             f"{shlex.join(overlord_cmd('watch', cid, '--state-dir', str(d.state_dir)))}; "
             "echo watch-exited=$?; sleep 600")
    tmux("new-session", "-d", "-x", "100", "-y", "20", shell)
    return lambda: tmux("capture-pane", "-p")


def test_watch_redraws_live_in_a_terminal(tmux: Callable[..., str], daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Live", {"kind": "quick", "summary": "Prepare [bold]it[/]"},
                            {"kind": "gated", "summary": "Fetch", "total": 50})
    screen = _start_watch(tmux, daemon, cid)
    first = _wait_for("the change running", screen,
                      lambda s: f"Change {cid} (test): Live - Doing" in s and re.search(r"Doing\s+Fetch", s) is not None
                      and re.search(r"[1-9]\d*/50 steps", s) is not None)
    assert re.search(r"Done\s+Prepare \[bold\]it\[/\]\s+━+ 100%", first)
    assert "━" in first.split("Fetch", 1)[1]  # a progress bar, part drawn
    daemon.open_gate()
    last = _wait_for("watch ending", screen, lambda s: "watch-exited=0" in s)
    assert f"Change {cid} (test): Live - Done" in last and re.search(r"Done\s+Fetch\s+━+ 50/50 steps", last)
    assert last.count(f"Change {cid}") == 1  # redrawn in place, not printed again and again


def test_ctrl_c_stops_watching_and_leaves_the_change_running(tmux: Callable[..., str],
                                                              daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Keep going", {"kind": "gated", "summary": "Fetch", "total": 50})
    screen = _start_watch(tmux, daemon, cid)
    _wait_for("the change running", screen, lambda s: re.search(r"Doing\s+Fetch", s) is not None)
    tmux("send-keys", "C-c")
    last = _wait_for("watch ending", screen, lambda s: "watch-exited=" in s)
    assert "watch-exited=130" in last
    assert f"Stopped watching change {cid}; it goes on ('overlord tasks {cid}' shows it)." in last
    assert "Traceback" not in last
    with daemon.client() as c:
        assert c.change(cid)["status"] == "Doing"
