# SPDX-License-Identifier: GPL-3.0-or-later
"""Interfaces and seeding through a real daemon: /v2/seed, /v2/connections, /v2/interfaces, and the verbs
seed, connect, disconnect, connections and interfaces, as a user runs them (real processes, a real socket)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overlord.cli.cmd_interfaces import connections_rows, connections_table, interfaces_table
from overlord.samples import SEED, TEST_KEYS, build_store, sample_keys
from tests.support.daemon import DaemonProcess, short_tempdir

from .test_api import raw
from .test_views import check_snapshot


@pytest.fixture(scope="module")
def system() -> Iterator[DaemonProcess]:
    """system is a daemon running a system on a store of hello, trusting the test root key; not seeded."""
    base = short_tempdir()
    sample = build_store(base / "store", *sample_keys(), versions=("1.0",))
    d = DaemonProcess(base, "--store", str(base / "store"), "--trusted-key", str(TEST_KEYS / "root.pub.pem"))
    d.sample = sample  # type: ignore[attr-defined]
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def seeded(system: DaemonProcess) -> DaemonProcess:
    """seeded is the system daemon once `overlord seed` of the sample seed went through (the test of it runs first)."""
    with system.client() as c:
        if not c.seed_state()["seeded"]:
            assert system.cli("seed", str(SEED)).returncode == 0
    return system


def test_seed_from_the_command_line(system: DaemonProcess, tmp_path: Path) -> None:
    with system.client() as c:
        assert c.seed_state() == {"seeded": False, "change": None, "status": None}
    broken = tmp_path / "seed"
    shutil.copytree(SEED, broken)
    (broken / "snaps" / "library_1.0.snap").unlink()
    bad = system.cli("seed", str(broken))
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == (f"error: cannot seed the system from {broken}: snaps/library_1.0.snap (snap 'library') is "
                          "missing or not a regular file\n")
    with system.client() as c:
        assert c.changes(select="all") == [] and not c.seed_state()["seeded"]
    status, env = raw(system, "POST", "/v2/seed", json.dumps({"action": "seed", "path": "relative/seed"}).encode())
    assert status == 400 and env["result"]["kind"] == "bad-request"
    status, env = raw(system, "POST", "/v2/seed", json.dumps({"action": "seed", "path": str(broken)}).encode())
    assert status == 400 and env["result"]["kind"] == "invalid-seed"

    done = system.cli("seed", str(SEED))
    assert done.returncode == 0, done.stderr
    with system.client() as c:
        state = c.seed_state()
        assert state["seeded"] is True and state["status"] == "Done"
        chg = c.change(state["change"])
    assert chg["kind"] == "seed" and chg["status"] == "Done"
    names = [t["summary"] for t in chg["tasks"] if t["kind"] == "link-snap"]
    assert names == ['Make snap "library" (1) available to the system',
                     'Make snap "reader" (1) available to the system']
    assert sorted({lane for t in chg["tasks"] for lane in t["lanes"]}) == [1, 2]  # a lane per snap
    again = system.cli("seed", str(SEED))
    assert again.returncode == 0
    assert again.stdout == f"The system is seeded already (change {state['change']}): nothing to do.\n"
    status, env = raw(system, "POST", "/v2/seed", json.dumps({"action": "seed", "path": str(SEED)}).encode())
    assert status == 400 and env["result"]["kind"] == "already-seeded"


def newest(d: DaemonProcess) -> str:
    """newest is the id of the newest change."""
    with d.client() as c:
        return str(c.changes(select="all")[-1]["id"])


def _connections(d: DaemonProcess, *args: str) -> str:
    """_connections is what `overlord connections ARGS` prints, trailing blanks of the table's cells left out."""
    got = d.cli("connections", *args)
    assert got.returncode == 0, got.stderr
    return "".join(line.rstrip() + "\n" for line in got.stdout.splitlines())


@pytest.mark.heavy
def test_connect_and_disconnect_from_the_command_line(seeded: DaemonProcess) -> None:
    d = seeded
    assert _connections(d) == (
        "Interface       Plug            Slot           Notes\n"
        "content[books]  reader:books    library:books  -\n"
        "network         reader:network  :network       -\n")
    got = d.cli("connect", "reader:logs")
    assert (got.returncode, got.stderr) == (0, "")
    assert got.stdout.startswith(f"Change {newest(d)} (connect): Connect reader:logs to system:system-files - Done")
    assert _connections(d, "reader") == (
        "Interface       Plug            Slot           Notes\n"
        "content[books]  reader:books    library:books  -\n"
        "network         reader:network  :network       -\n"
        "system-files    reader:logs     :system-files  manual\n")
    assert d.cli("disconnect", "reader:network").returncode == 0
    assert "network" not in _connections(d)
    assert "network         reader:network  -" in _connections(d, "--all")
    with d.client() as c:
        undesired = c.connections(all=True)["undesired"]
    assert [(u["plug"], u["slot"], u["manual"]) for u in undesired] == [
        ({"snap": "reader", "plug": "network"}, {"snap": "system", "slot": "network"}, True)]
    assert d.cli("disconnect", "reader:logs", ":system-files").returncode == 0
    nothing = d.cli("disconnect", "reader:logs")
    assert (nothing.returncode, nothing.stdout) == (0, "No connections to disconnect.\n")
    assert d.cli("disconnect", "reader:network", ":network", "--forget").returncode == 0
    with d.client() as c:
        assert c.connections(all=True)["undesired"] == []
    # Connected already: a change that is Done at once.
    assert d.cli("connect", "reader:books", "library").returncode == 0
    # --no-wait prints the change id; the change runs on.
    started = d.cli("connect", "reader:network", "--no-wait")
    assert started.returncode == 0 and started.stdout.strip().isdigit()
    chg = d.wait_change(started.stdout.strip(), lambda c: c["ready"])
    assert chg["status"] == "Done" and [t["kind"] for t in chg["tasks"]] == ["connect", "setup-profiles"]
    profile = json.loads((d.root / "var/lib/profiles/reader").read_text())
    assert profile["network"] is True
    assert profile["mounts"][0]["source"].endswith("/snap/library/1/books")


@pytest.mark.parametrize(("args", "code", "stderr"), [
    (("connect", "reader:nosuch"), 1, "error: cannot connect reader:nosuch: snap 'reader' has no plug named 'nosuch'"),
    (("connect", "nosuch:x"), 1, "error: cannot connect nosuch:x: snap 'nosuch' is not installed"),
    (("connect", "reader:books", "reader"), 1, "error: cannot connect reader:books: snap 'reader' has no content "
                                              "slot"),
    (("connect", "reader"), 2, "Invalid value for 'SNAP:PLUG': invalid plug 'reader' (want snap:name or :name)"),
    (("connect", ":network"), 2, "the system has no plugs"),
    (("disconnect", "reader:books", "library"), 2, "invalid slot 'library' (want snap:name or :name)"),
    (("disconnect", "reader:nosuch"), 1, "error: cannot disconnect reader:nosuch: snap 'reader' has no plug or slot "
                                         "named 'nosuch'"),
    (("connections", "reader", "--all"), 2, "cannot use --all with a snap name"),
    (("connections", "nosuch"), 1, "error: cannot list connections: snap 'nosuch' is not installed"),
])
def test_the_command_line_refuses_in_one_line(seeded: DaemonProcess, args: tuple[str, ...], code: int,
                                              stderr: str) -> None:
    got = seeded.cli(*args)
    assert got.returncode == code, got
    assert stderr in got.stderr
    if code == 1:
        assert got.stderr.count("\n") == 1


def test_a_change_in_progress_on_the_snap_is_a_conflict(seeded: DaemonProcess) -> None:
    d = seeded
    (d.state_dir / "gate").unlink(missing_ok=True)
    hold = d.new_change("Hold reader", {"kind": "gated", "summary": "Hold reader", "total": 3, "affects": ["reader"]})
    got = d.cli("connect", "reader:logs")
    assert got.returncode == 10
    assert got.stderr == (f"error: cannot start a change for snap 'reader': change {hold} (test) is in progress "
                          "for it\n")
    body = {"action": "disconnect", "plugs": [{"snap": "reader", "plug": "books"}], "slots": [{"snap": "", "slot": ""}]}
    status, env = raw(d, "POST", "/v2/interfaces", json.dumps(body).encode())
    assert status == 409 and env["result"]["kind"] == "snap-change-conflict"
    assert env["result"]["value"] == {"change-id": hold, "change-kind": "test"}
    d.open_gate()
    d.wait_change(hold, lambda c: c["ready"])
    assert d.cli("connect", "reader:logs").returncode == 0
    assert d.cli("disconnect", "reader:logs").returncode == 0


@pytest.mark.parametrize(("body", "message"), [
    ({"action": "plug-in", "plugs": [], "slots": []}, "unknown action 'plug-in': it must be 'connect' or 'disconnect'"),
    ({"action": "connect", "slots": [{"snap": "", "slot": ""}]}, "field 'plugs' must be a list of one"),
    ({"action": "connect", "plugs": [{"snap": "reader", "plug": "logs"}, {"snap": "reader", "plug": "books"}],
      "slots": [{"snap": "", "slot": ""}]}, "cannot act on several plugs at once"),
    ({"action": "connect", "plugs": [{"snap": "reader", "plug": 3}], "slots": [{}]},
     "plugs[0] must be an object with string fields"),
    ({"action": "disconnect", "plugs": [{"snap": "reader", "plug": "logs"}], "slots": [{}], "forget": "yes"},
     "field 'forget' must be a boolean"),
    ({"action": "connect", "plugs": [{"snap": "", "plug": "logs"}], "slots": [{}]}, "the plug's snap name is missing"),
])
def test_bad_interface_requests_are_400s(seeded: DaemonProcess, body: dict[str, Any], message: str) -> None:
    status, env = raw(seeded, "POST", "/v2/interfaces", json.dumps(body).encode())
    assert status == 400 and env["result"]["kind"] == "bad-request"
    assert message in env["result"]["message"]


def test_read_endpoints_answer_snapds_shapes(seeded: DaemonProcess) -> None:
    d = seeded
    with d.client() as c:
        conns = c.connections()
        every = c.connections(all=True)
        content = c.connections(interface="content")
        ifaces = c.interfaces()
        connected = c.interfaces(connected=True)
    assert conns["established"][0] == {"slot": {"snap": "library", "slot": "books"},
                                       "plug": {"snap": "reader", "plug": "books"}, "interface": "content",
                                       "manual": False,
                                       "plug-attrs": {"default-provider": "library", "target": "$SNAP_DATA/books"},
                                       "slot-attrs": {"read": ["$SNAP/books"]}}
    assert {p["plug"] for p in conns["plugs"]} == {"books", "network"}
    assert any(p["plug"] == "logs" and "connections" not in p for p in every["plugs"])
    assert [c["interface"] for c in content["established"]] == ["content"]
    assert [i["name"] for i in ifaces] == ["content", "home", "network", "system-files"]
    assert ifaces[3]["plugs"] == [{"snap": "reader", "plug": "logs", "interface": "system-files",
                                   "attrs": {"read": ["/var/log/syslog"]}}]
    assert [i["name"] for i in connected] == ["content", "network"]
    status, env = raw(d, "GET", "/v2/connections?select=some")
    assert status == 400 and "invalid select parameter 'some'" in env["result"]["message"]
    got = d.cli("connections", "--json")
    assert json.loads(got.stdout) == conns
    listing = d.cli("interfaces")
    assert listing.returncode == 0 and listing.stdout.splitlines()[0].split() == ["Interface", "Summary", "Plugs",
                                                                                 "Slots"]


def test_install_refresh_and_remove_keep_the_connections_right(seeded: DaemonProcess) -> None:
    """The README's story through the daemon: seeded, install hello, refresh it, remove the provider."""
    d = seeded
    got = d.cli("install", "hello")
    assert got.returncode == 0, got.stderr
    assert "network         hello:network   :network       -" in _connections(d)
    d.sample.publish("2.0")  # type: ignore[attr-defined]
    assert d.cli("refresh", "hello").returncode == 0
    assert "network         hello:network   :network       -" in _connections(d)
    assert json.loads((d.root / "var/lib/profiles/hello").read_text())["revision"] == "2"
    removed = d.cli("remove", "library")
    assert removed.returncode == 0, removed.stderr
    with d.client() as c:
        chg = c.change(newest(d))
        assert [t["kind"] for t in chg["tasks"]][:2] == ["stop-snap-services", "run-hook"]
        left = c.connections(all=True)
    assert all("library" not in (e["plug"]["snap"], e["slot"]["snap"]) for e in left["established"] + left["undesired"])
    assert all(sl["snap"] != "library" for sl in left["slots"])
    assert json.loads((d.root / "var/lib/profiles/reader").read_text())["mounts"] == []
    assert not (d.root / "var/lib/profiles/library").exists()


# -- snapshots of the tables, at fixed widths ------------------------------------------------------

CONNECTIONS = {
    "established": [
        {"slot": {"snap": "library", "slot": "books"}, "plug": {"snap": "reader", "plug": "books"},
         "interface": "content", "manual": False, "plug-attrs": {"content": "books", "target": "$SNAP_DATA/books"},
         "slot-attrs": {"read": ["$SNAP/books"]}},
        {"slot": {"snap": "system", "slot": "system-files"}, "plug": {"snap": "reader", "plug": "logs"},
         "interface": "system-files", "manual": True},
        {"slot": {"snap": "system", "slot": "network"}, "plug": {"snap": "a-snap-with-a-rather-long-name",
                                                                 "plug": "network-of-the-snap"},
         "interface": "network", "manual": False},
    ],
    "undesired": [],
    "plugs": [{"snap": "reader", "plug": "home", "interface": "home"}],
    "slots": [{"snap": "system", "slot": "home", "interface": "home"},
              {"snap": "library", "slot": "music", "interface": "content"}],
}
INTERFACES = [
    {"name": "content", "summary": "allows sharing directories between snaps of one publisher",
     "plugs": [{"snap": "reader", "plug": "books"}], "slots": [{"snap": "library", "slot": "books"}]},
    {"name": "home", "summary": "allows access to files under the system's home directory", "plugs": [],
     "slots": [{"snap": "system", "slot": "home"}]},
]
VIEWS = {
    "connections": lambda: connections_table(connections_rows(CONNECTIONS, all=False)),
    "connections-all": lambda: connections_table(connections_rows(CONNECTIONS, all=True)),
    "interfaces": lambda: interfaces_table(INTERFACES),
}


@pytest.mark.parametrize("width", [60, 100])
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_snapshot(name: str, width: int) -> None:
    check_snapshot(VIEWS[name](), name, width)


def test_anyone_may_list_connections_only_root_may_connect(seeded: DaemonProcess, nobody: Any) -> None:
    state = ("--state-dir", str(seeded.state_dir))
    listed = nobody.run("-m", "overlord", "connections", *state, env=nobody.env(COLUMNS="100"))
    assert listed.returncode == 0, listed.stderr
    assert "reader:network" in listed.stdout
    refused = nobody.run("-m", "overlord", "connect", "reader:logs", *state)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: cannot connect reader:logs: access denied: POST /v2/interfaces needs root")
    refused = nobody.run("-m", "overlord", "seed", str(SEED), *state)
    assert refused.returncode == 1 and "access denied: POST /v2/seed needs root" in refused.stderr
