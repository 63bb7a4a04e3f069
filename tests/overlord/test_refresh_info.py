# SPDX-License-Identifier: GPL-3.0-or-later
"""Through a real daemon: refresh --hold/--unhold/--time/--list, find and info, GET /v2/find."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlord.client import ApiError

from .test_snaps import SystemDaemon


@pytest.fixture
def system(base: Path) -> Iterator[SystemDaemon]:
    d = SystemDaemon(base)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_holds_time_and_list(system: SystemDaemon) -> None:
    d = system
    d.ok("install", "hello")
    assert d.ok("refresh", "--list").stderr == "All snaps up to date.\n"
    d.sample.publish("2.0")
    rows = [line.split() for line in d.ok("refresh", "--list").stdout.splitlines()]
    assert rows[0] == ["Name", "Version", "Rev", "Channel", "Size", "Publisher"]
    assert rows[1][:4] == ["hello", "2.0", "2", "stable"] and rows[1][5] == "acme"
    assert d.ok("refresh", "--hold", "hello").stdout == "Auto-refresh of hello held indefinitely\n"
    p = d.ok("refresh", "--hold=48h")
    assert p.stdout.startswith("Auto-refresh of all snaps held until 20")
    bad = d.cli("refresh", "--hold=forever")
    assert bad.returncode == 1 and bad.stderr == ("error: cannot hold every refresh for longer than 90 days: hold "
                                                  "snaps by name to hold them longer\n")
    lines = d.ok("refresh", "--time").stdout.splitlines()
    assert lines[0] == "timer: 00:00~24:00/4" and lines[1] == "last: n/a" and lines[2].startswith("next: 20")
    assert lines[3].startswith("hold: 20") and lines[4] == "held: hello (forever)"
    with d.client() as c:
        assert c.snap("hello")["hold"] == "forever"
        updates = c.find(select="refresh")
        assert [(u["name"], u["revision"], u["channel"]) for u in updates] == [("hello", "2", "latest/stable")]
        info = c.unhold(["hello"])
        assert "held-snaps" not in info and "hold" in info
        assert "hold" not in c.snap("hello")
        assert "hold" not in c.unhold([])
        with pytest.raises(ApiError, match="field 'time' must be"):
            c.request("POST", "/v2/snaps", body={"action": "hold", "snaps": []})
    # a held snap still refreshes when asked
    d.ok("refresh", "--hold", "hello")
    assert d.ok("refresh", "hello").stdout.rstrip().endswith("hello 2.0 from ACME Corp (acme) refreshed")


def test_find_and_info(system: SystemDaemon) -> None:
    d = system
    d.sample.publish("2.0")
    d.sample.snap_store.release("hello", "2", ["edge"])
    rows = [line.rstrip().split(None, 3) for line in d.ok("find", "hello").stdout.splitlines()]
    assert rows[0] == ["Name", "Version", "Publisher", "Summary"] and rows[1][:3] == ["hello", "2.0", "acme"]
    assert d.cli("find", "nothing-like-it").returncode == 1
    with d.client() as c:
        [found] = c.find("SAYS")  # the summary, any case
        assert found["channels"] == {"stable": {"revision": "2", "version": "2.0", "size": found["download-size"]},
                                     "candidate": {"revision": "2", "version": "2.0",
                                                   "size": found["download-size"]},
                                     "beta": {"revision": "2", "version": "2.0", "size": found["download-size"]},
                                     "edge": {"revision": "2", "version": "2.0", "size": found["download-size"]}}
        assert found["publisher"]["username"] == "acme"  # (its display name once its account is known)
        with pytest.raises(ApiError) as e:
            c.find(name="nope")
        assert e.value.kind == "snap-not-found"
    d.ok("install", "hello", "--revision", "1")
    with d.client() as c:  # the installed snap, with the store's channels
        snap = c.snap("hello")
        assert (snap["revision"], snap["channels"]["edge"]["revision"], snap["channels"]["stable"]["version"]) == (
            "1", "2", "2.0")
    text = d.ok("info", "hello").stdout
    assert "publisher: ACME Corp (acme)" in text and "tracking:  stable" in text and "installed: 1.0 (1)" in text
    assert "channels:\n  stable:" in text and "description: |\n  A sample snap" in text
    data = json.loads(d.ok("info", "hello", "--json").stdout)
    assert data["local"]["revision"] == "1" and data["store"]["revision"] == "2"
    p = d.cli("info", "nope")
    assert p.returncode == 1
    assert p.stderr == "error: cannot find snap 'nope': it is neither installed nor in the store\n"
