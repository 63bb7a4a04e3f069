# SPDX-License-Identifier: GPL-3.0-or-later
"""Snaps through a real daemon (a SystemOverlord on a sample store): the CLI verbs, the API, crashes, access."""

from __future__ import annotations

import http.client
import json
import pwd
import socket
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from managers.asserts.build import account
from managers.snap import pack
from overlord.client import ApiError
from overlord.samples import SEED, SNAPS, SampleStore, build_store, keys
from tests.support.daemon import START_TIMEOUT, DaemonProcess, child_env, overlord_cmd

from .test_access import as_nobody  # noqa: F401  (a fixture)
from .test_api import raw
from .test_watch import _wait_for


class SystemDaemon(DaemonProcess):
    """SystemDaemon is a daemon with the sample store and its trusted root key."""

    def __init__(self, base: Path, *extra: str) -> None:
        root_key, publisher_key = keys(base / "keys")
        self.sample: SampleStore = build_store(base / "store", root_key, publisher_key, build_dir=base / "snaps")
        super().__init__(base, "--store", str(base / "store"), "--trusted-key", str(base / "keys" / "root.pub.pem"),
                         *extra)

    def hold_mount(self) -> Path:
        """hold_mount makes installs wait in mount-snap until the returned file is removed."""
        hold = self.state_dir / "hold-mount"
        hold.touch()
        return hold

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        p = self.cli(*args)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p


@pytest.fixture
def system(base: Path) -> Iterator[SystemDaemon]:
    d = SystemDaemon(base)
    d.start()
    yield d
    (d.state_dir / "hold-mount").unlink(missing_ok=True)
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_an_older_revision_of_a_stored_assertion_is_refused(system: SystemDaemon, base: Path) -> None:
    """The assert manager's revision rule (managers.errors.AssertionRevisionError) is a 400 the client can read."""
    root = keys(base / "keys")[0]
    newer, older = (account(root, "root", "revisions", "Revisions", revision=r).text.encode() for r in (2, 1))
    got, env = raw(system, "POST", "/v2/assertions", newer)
    assert got == 200, env
    got, env = raw(system, "POST", "/v2/assertions", older)
    assert (got, env["result"]["kind"]) == (400, "assertion-refused")
    assert env["result"]["message"] == ("cannot add account 'revisions': revision 1 is older than the stored "
                                        "revision 2")


def _task(chg: dict, kind: str) -> dict:
    return next(t for t in chg["tasks"] if t["kind"] == kind)


def test_install_refresh_revert_disable_enable_remove_through_the_cli(system: SystemDaemon) -> None:
    d = system
    p = d.ok("install", "hello")
    assert "Change 1 (install): Install \"hello\" snap - Done" in p.stdout
    assert p.stdout.rstrip().endswith("hello 1.0 from ACME Corp (acme) installed")
    assert (d.root / "snap" / "hello" / "1" / "meta" / "snap.yaml").is_file()
    assert d.ok("list").stdout.splitlines()[1].split() == ["hello", "1.0", "1", "stable", "acme", "-"]

    d.sample.publish("2.0")
    assert d.ok("refresh").stdout.rstrip().endswith("hello 2.0 from ACME Corp (acme) refreshed")
    assert (d.root / "snap" / "hello" / "current").readlink() == Path("2")
    p = d.ok("refresh", "hello")
    assert (p.stdout, p.stderr) == ("", "snap 'hello' has no updates available\n")
    assert d.ok("refresh").stderr == "All snaps up to date.\n"

    assert d.ok("revert", "hello").stdout.rstrip().endswith("hello reverted to 1.0")
    rows = [line.split()[:3] + line.split()[-1:] for line in d.ok("list", "--all").stdout.splitlines()[1:]]
    assert rows == [["hello", "1.0", "1", "-"], ["hello", "2.0", "2", "disabled"]]
    assert d.ok("disable", "hello").stdout.rstrip().endswith("hello disabled")
    assert "disabled" in d.ok("list").stdout
    assert d.ok("enable", "hello").stdout.rstrip().endswith("hello enabled")

    cid = d.ok("remove", "hello", "--revision", "2", "--no-wait").stdout.strip()
    assert cid.isdigit()
    assert "Remove revision 2 of \"hello\" snap - Done" in d.ok("watch", cid).stdout
    # The only revision left: its removal is the snap's, and is titled and told so.
    p = d.ok("remove", "hello", "--revision", "1")
    assert "Remove \"hello\" snap - Done" in p.stdout and p.stdout.rstrip().endswith("\nhello removed")
    assert d.ok("list").stdout == "No snaps are installed yet. Try 'overlord install hello'.\n"
    assert not (d.root / "snap" / "hello").exists()

    # Changes about hello, and nothing else: changes [SNAP] filters on what the snap manager records.
    other = d.new_change("Not about hello", {"kind": "quick", "summary": "x"})
    d.wait_change(other, lambda c: c["ready"])
    listed = json.loads(d.ok("changes", "hello", "--json").stdout)
    assert [c["kind"] for c in listed] == ["install", "refresh", "revert", "disable", "enable", "remove", "remove"]
    assert other not in d.ok("changes", "hello").stdout.split()


def test_api_shapes_and_errors(system: SystemDaemon) -> None:
    d = system
    with d.client() as c:
        assert c.snaps() == []
        with pytest.raises(ApiError) as e:
            c.snap("hello")
        assert (e.value.status_code, e.value.kind) == (404, "snap-not-found")
        cid, names = c.snaps_action("install", ["hello"])
        assert names == ["hello"]
        chg = d.wait_change(cid, lambda x: x["ready"])
        assert chg["status"] == "Done" and chg["data"] == {"snap-names": ["hello"]}
        snap = c.snap("hello")
        assert {k: snap[k] for k in ("name", "version", "revision", "status", "developer", "dangerous")} == {
            "name": "hello", "version": "1.0", "revision": "1", "status": "active", "developer": "acme",
            "dangerous": False}
        assert snap["publisher"] == {"id": "acme", "username": "acme", "display-name": "ACME Corp",
                                     "validation": "unproven"}
        assert {a["name"]: a.get("daemon") for a in snap["apps"]} == {"hello": None, "greeter": "simple"}
        assert snap["channels"]["stable"]["revision"] == "1"  # the store's, in GET /v2/snaps/NAME only
        assert c.snaps() == [{k: v for k, v in snap.items() if k != "channels"}]
    cases = [
        ("/v2/snaps/hello", {"action": "install"}, 400, "snap-already-installed",
         "cannot install snap 'hello': it is installed already (revision 1); refresh it instead"),
        ("/v2/snaps/world", {"action": "install"}, 404, "snap-not-found", "cannot find snap 'world' in the store"),
        ("/v2/snaps/world", {"action": "remove"}, 404, "snap-not-installed", "cannot remove snap 'world'"),
        ("/v2/snaps/hello", {"action": "frobnicate"}, 400, "bad-request", "unknown action 'frobnicate'"),
        ("/v2/snaps/hello", {"action": "enable"}, 400, "bad-request", "it is enabled already"),
        ("/v2/snaps/hello", {"action": "enable", "channel": "edge"}, 400, "bad-request",
         "field 'channel' is not an option of enable"),
        ("/v2/snaps/hello", {"action": "switch"}, 400, "bad-request", "field 'channel' is missing"),
        ("/v2/snaps/hello", {"action": "switch", "channel": "nightly"}, 400, "bad-request",
         "its risk must be one of stable, candidate, beta, edge"),
        ("/v2/snaps/hello", {"action": "revert", "revision": True}, 400, "bad-request",
         "field 'revision' must be a string or a number"),
        ("/v2/snaps/Not_A_Name", {"action": "install"}, 400, "bad-request", "invalid snap name 'Not_A_Name'"),
        ("/v2/snaps", {"action": "install"}, 400, "bad-request", "missing field 'snaps'"),
        ("/v2/snaps", {"action": "revert", "snaps": ["hello"]}, 400, "bad-request", "unknown action 'revert'"),
    ]
    for path, body, status, kind, message in cases:
        got, env = raw(d, "POST", path, json.dumps(body).encode())
        assert (got, env["result"]["kind"]) == (status, kind), (path, body, env)
        assert message in env["result"]["message"], env
    got, env = raw(d, "GET", "/v2/snaps?select=bogus")
    assert (got, env["result"]["kind"]) == (400, "bad-request")


def test_a_conflicting_install_is_a_409_and_exits_10(system: SystemDaemon) -> None:
    d = system
    busy = d.new_change("Busy with hello", {"kind": "gated", "summary": "Hold", "total": 3, "affects": ["hello"]})
    d.wait_change(busy, lambda c: c["tasks"][0]["status"] == "Doing")
    got, env = raw(d, "POST", "/v2/snaps/hello", b'{"action": "install"}')
    assert (got, env["result"]["kind"]) == (409, "snap-change-conflict")
    assert env["result"]["value"] == {"change-id": busy, "change-kind": "test"}
    p = d.cli("install", "hello")
    assert (p.returncode, p.stdout) == (10, "")
    assert p.stderr == (f"error: cannot start a change for snap 'hello': change {busy} (test) is in progress "
                        "for it\n")
    d.open_gate()
    d.wait_change(busy, lambda c: c["ready"])
    d.ok("install", "hello")


def test_an_install_asked_to_wait_for_conflicts_runs_once_the_busy_change_is_done(system: SystemDaemon) -> None:
    d = system
    busy = d.new_change("Busy with hello", {"kind": "gated", "summary": "Hold", "total": 3, "affects": ["hello"]})
    d.wait_change(busy, lambda c: c["tasks"][0]["status"] == "Doing")
    cid = d.ok("install", "hello", "--wait-for-conflicts", "--no-wait").stdout.strip()
    chg = d.wait_change(cid, lambda c: c["status"] == "Do")
    assert [t["kind"] for t in chg["tasks"]] == ["run-queued-request"]
    got, env = raw(d, "POST", "/v2/snaps/hello", b'{"action": "install", "wait-for-conflicts": "yes"}')
    assert (got, env["result"]["message"]) == (400, "cannot decode request body: field 'wait-for-conflicts' "
                                                    "must be true or false, not a string")
    d.open_gate()
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"
    assert d.wait_change(busy, lambda c: c["ready"])["status"] == "Done"
    assert d.ok("list").stdout.splitlines()[1].split()[0] == "hello"


def test_remove_or_connect_while_the_install_runs_is_a_conflict_not_not_installed(system: SystemDaemon) -> None:
    """As in snapd, the conflict check comes before the installed check: the snap is busy, not missing."""
    d = system
    hold = d.hold_mount()
    cid = d.ok("install", "hello", "--no-wait").stdout.strip()
    d.wait_change(cid, lambda c: _task(c, "mount-snap")["status"] == "Doing")
    message = f"error: cannot start a change for snap 'hello': change {cid} (install) is in progress for it\n"
    for args in (("remove", "hello"), ("connect", "hello:network"), ("disconnect", "hello:network"),
                 ("revert", "hello"), ("disable", "hello")):
        p = d.cli(*args)
        assert (p.returncode, p.stdout, p.stderr) == (10, "", message), args
    got, env = raw(d, "POST", "/v2/snaps/hello", b'{"action": "remove"}')
    assert (got, env["result"]["kind"]) == (409, "snap-change-conflict")
    assert env["result"]["value"] == {"change-id": cid, "change-kind": "install"}
    body = {"action": "connect", "plugs": [{"snap": "hello", "plug": "network"}], "slots": [{"snap": "", "slot": ""}]}
    got, env = raw(d, "POST", "/v2/interfaces", json.dumps(body).encode())
    assert (got, env["result"]["value"]) == (409, {"change-id": cid, "change-kind": "install"})
    hold.unlink()
    assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Done"
    p = d.cli("remove", "world")  # with nothing in progress, a snap that is not there is "not installed"
    assert (p.returncode, p.stderr) == (1, "error: cannot remove snap 'world': it is not installed\n")


def test_sigkill_in_the_middle_of_an_install_then_watch_follows_it_to_done(system: SystemDaemon) -> None:
    d = system
    hold = d.hold_mount()
    cid = d.ok("install", "hello", "--no-wait").stdout.strip()
    d.wait_change(cid, lambda c: _task(c, "mount-snap")["status"] == "Doing")
    asked = f'"GET /v2/changes/{cid} HTTP/1.1" 200'
    before = d.log_text().count(asked)
    watch = subprocess.Popen(overlord_cmd("watch", cid, "--state-dir", str(d.state_dir)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        _wait_for("watch asking the daemon", d.log_text, lambda log: log.count(asked) > before)
        d.kill()  # SIGKILL while mount-snap runs
        assert (d.root / "snap" / "hello").exists()  # half done, as a crash leaves it
        d.start()  # the same state: mount-snap runs again, and waits again
        d.wait_change(cid, lambda c: _task(c, "mount-snap")["status"] == "Doing")
        hold.unlink()
        out, err = watch.communicate(timeout=START_TIMEOUT)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    assert f"Change {cid} (install): Install \"hello\" snap - Done" in out
    assert d.ok("list").stdout.splitlines()[1].split()[:3] == ["hello", "1.0", "1"]
    assert sorted(p.name for p in (d.root / "snap" / "hello").iterdir()) == ["1", "current"]


def test_abort_an_install_in_the_middle_undoes_it(system: SystemDaemon) -> None:
    d = system
    before = sorted(str(p.relative_to(d.root)) for p in d.root.rglob("*"))
    hold = d.hold_mount()
    cid = d.ok("install", "hello", "--no-wait").stdout.strip()
    d.wait_change(cid, lambda c: _task(c, "mount-snap")["status"] == "Doing")
    d.ok("abort", cid)
    hold.unlink()
    p = d.cli("watch", cid)
    assert p.returncode == 1 and "Undone" in p.stdout, p.stderr
    chg = d.wait_change(cid, lambda c: c["ready"])
    assert chg["status"] == "Undone"
    assert d.ok("list").stdout.startswith("No snaps are installed yet.")
    assert sorted(str(p.relative_to(d.root)) for p in d.root.rglob("*")) == before


def test_ack_and_known(system: SystemDaemon) -> None:
    d = system
    store = d.base / "store" / "assertions"
    assert d.ok("known", "account").stdout == ""
    rev = next((store / "snap-revision").iterdir())
    p = d.cli("ack", str(rev))  # its chain is not known yet: refused, naming the link
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("error: cannot add snap-revision ") and p.stderr.count("\n") == 1
    assert "no account-key for its signing key" in p.stderr
    p = d.cli("ack", str(d.base / "keys" / "root.pub.pem"))
    assert p.returncode == 1 and p.stderr.startswith("error: cannot decode assertion 1")
    account = (store / "account" / "acme").read_text()
    key = next((store / "account-key").iterdir()).read_text()
    decl = next((store / "snap-declaration" / "16").iterdir()).read_text()
    stream = d.base / "chain.assert"
    stream.write_text("\n".join([account, key, decl, rev.read_text()]))
    assert d.ok("ack", str(stream)).stdout == ""
    assert d.ok("known", "account", "account-id=acme").stdout == account
    assert d.ok("known", "account", "account-id=someone").stdout == ""
    assert d.ok("ack", str(stream)).returncode == 0  # the same again: nothing changes
    [found] = json.loads(d.ok("known", "snap-declaration", "--json").stdout)
    assert found["headers"]["snap-name"] == "hello" and "body" not in found
    with d.client() as c:
        assert c.assertion_types() == ["account", "account-key", "snap-declaration", "snap-revision"]
        text = c.known("account-key")
        assert text == key
    got, env = raw(d, "GET", "/v2/assertions/bogus")
    assert (got, env["result"]["kind"]) == (400, "bad-request")
    p = d.cli("known", "account", "nonsense")
    assert p.returncode == 2 and "'nonsense' is not HEADER=VALUE" in p.stderr


def test_install_an_uploaded_snap_file(system: SystemDaemon) -> None:
    d = system
    snap = pack(SNAPS / "hello-2.0", d.base / "local")
    p = d.cli("install", str(snap))  # no assertions for this file: refused, and the upload is gone
    assert p.returncode == 1 and p.stderr.startswith(f"error: cannot install uploaded file '{snap.name}': no "
                                                     "snap-revision assertion for its sha3-384 ")
    assert list((d.state_dir / "uploads").iterdir()) == []
    p = d.ok("install", str(snap), "--dangerous")
    assert p.stdout.rstrip().endswith("hello 2.0 installed")
    [info] = json.loads(d.ok("list", "--json").stdout)
    assert (info["revision"], info["dangerous"], info["publisher"]) == ("x1", True, None)
    assert d.ok("list").stdout.splitlines()[1].split() == ["hello", "2.0", "x1", "-", "-", "dangerous"]
    assert list((d.state_dir / "uploads").iterdir()) == []  # the change's cleanup deleted it
    # The change names the file the client sent, not the daemon's copy of it.
    [chg] = [c for c in json.loads(d.ok("changes", "--json").stdout) if c["kind"] == "install"]
    assert chg["summary"] == f'Install "hello" snap from file "{snap.name}"', chg["summary"]
    bad = d.base / "bad.snap"
    bad.write_bytes(b"not a zip")
    p = d.cli("install", str(bad), "--dangerous")
    assert (p.returncode, p.stderr) == (1, "error: cannot open snap uploaded file 'bad.snap': it is not a snap (zip) "
                                           "file (it is too short)\n")
    # A body announced larger than the limit is refused before it is read.
    from overlord.daemon.upload import MAX_UPLOAD

    got, env = raw(d, "POST", "/v2/snaps", b"x", {"Content-Type": "multipart/form-data; boundary=b",
                                                   "Content-Length": str(MAX_UPLOAD + 1)})
    assert (got, env["result"]["kind"]) == (413, "request-too-large")


def _get(d: DaemonProcess, path: str) -> int:
    """_get answers the status of a GET from a client of its own, given 10 s (generous) to be answered."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(d.socket))

    conn = Conn("localhost", timeout=10)
    try:
        conn.request("GET", path)
        rsp = conn.getresponse()
        rsp.read()
        return rsp.status
    finally:
        conn.close()


@pytest.mark.parametrize("what", ["upload", "seed"])
def test_other_clients_are_answered_while_an_upload_or_a_seed_is_checked(system: SystemDaemon, what: str) -> None:
    d = system
    d.ok("install", "hello")
    snap = pack(SNAPS / "hello-2.0", d.base / "local")
    hold, checking = d.state_dir / "hold-check", d.state_dir / "checking"
    hold.touch()  # the daemon's check waits while it is there (tests/support/daemon_hooks.py)
    outcome: dict[str, Any] = {}

    def post() -> None:
        try:
            with d.client() as c:
                if what == "upload":
                    outcome["change"] = c.sideload(snap, dangerous=True)
                else:
                    c.request("POST", "/v2/seed", body={"action": "seed", "path": str(SEED)})
        except ApiError as e:
            outcome["error"] = e

    poster = threading.Thread(target=post)
    poster.start()
    try:
        _wait_for("the check to start", lambda: str(checking.exists()), lambda seen: seen == "True")
        # The check is in progress, and the state lock is free: other clients are answered.
        assert _get(d, "/v2/snaps") == 200
        assert _get(d, "/v2/changes?select=all") == 200
        assert poster.is_alive(), "the check finished early: the test proves nothing"
    finally:
        hold.unlink(missing_ok=True)
        poster.join(START_TIMEOUT)
    if what == "upload":
        chg = d.wait_change(outcome["change"], lambda c: c["ready"])
        assert chg["status"] == "Done"
        assert d.ok("list").stdout.splitlines()[1].split()[:3] == ["hello", "2.0", "x1"]
    else:  # this daemon trusts another root than the sample seed's: checked, then refused, one line
        assert "cannot seed the system from" in str(outcome["error"]) and "\n" not in str(outcome["error"])


HOSTILE_YAML = {
    "nested": ("plugs:\n  p:\n    a: " + "[" * 5000 + "]" * 5000 + "\n", "it nests deeper than 32 levels"),
    "huge number": ("plugs:\n  p:\n    a: " + "9" * 5000 + "\n", "the number 999999999999999999999999... is too long"),
    "duplicate key": ("name: evil\n", "key 'name' is given twice"),
}


def test_a_hostile_snap_yaml_upload_is_a_one_line_400(system: SystemDaemon) -> None:
    d = system
    for case, (extra, message) in HOSTILE_YAML.items():
        path = d.base / f"{case.replace(' ', '-')}.snap"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("meta/snap.yaml", "name: hello\nversion: '1'\nsummary: s\n" + extra)
        p = d.cli("install", str(path), "--dangerous")
        assert p.returncode == 1 and p.stdout == "", (case, p.stderr)
        assert p.stderr.startswith(f"error: cannot install snap '{path.name}': invalid meta/snap.yaml in uploaded "
                                   f"file '{path.name}': it is not valid YAML ({message}"), p.stderr
        assert p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in d.log_text()
    assert list((d.state_dir / "uploads").iterdir()) == []


def test_nobody_may_list_but_not_install(as_nobody: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
                                         system: SystemDaemon) -> None:
    d = system
    d.ok("install", "hello")
    state = ["--state-dir", str(d.state_dir)]
    p = as_nobody("list", *state)
    assert p.returncode == 0 and "hello" in p.stdout, p.stderr
    assert as_nobody("known", "account", *state).returncode == 0
    uid = pwd.getpwnam("nobody").pw_uid
    for args, path in ((["remove", "hello"], "/v2/snaps/hello"), (["refresh"], "/v2/snaps"),
                       (["ack", "/dev/null"], "/v2/assertions")):
        p = as_nobody(*args, *state)
        assert (p.returncode, p.stdout) == (1, ""), p.stderr
        assert p.stderr.endswith(f"access denied: POST {path} needs root (uid {uid})\n"), p.stderr
        assert p.stderr.startswith("error: cannot "), p.stderr  # it says what it could not do
    assert d.ok("list").stdout.splitlines()[1].startswith("hello")


def test_the_trusted_key_comes_from_the_flag_or_the_state_directory(base: Path) -> None:
    from managers.asserts import load_public_key

    d = SystemDaemon(base)
    key_id = load_public_key(base / "keys" / "root.pub.pem").id
    d.extra_args = ("--store", str(base / "store"))  # no --trusted-key: the state directory's file
    d.state_dir.mkdir(parents=True)
    (d.state_dir / "trusted-root.pub.pem").write_bytes((base / "keys" / "root.pub.pem").read_bytes())
    d.start()
    try:
        with d.client() as c:
            info = c.system_info()
        assert (info["trusted-key"], info["trusted-authority"]) == (key_id, "root")
        d.ok("install", "hello")  # the chain verifies to that key
    finally:
        assert d.stop() == 0
    (d.state_dir / "trusted-root.pub.pem").unlink()
    d.start()
    try:
        with d.client() as c:
            assert c.system_info()["trusted-key"] is None
        p = d.cli("ack", str(next((base / "store" / "assertions" / "account").iterdir())))
        assert (p.returncode, p.stderr) == (1, "error: cannot add account acme: no trusted root key is configured\n")
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--trusted-key", "/nonexistent.pem"], "error: cannot read key /nonexistent.pem: No such file or directory"),
    (["--store", "ftp://store.example.com"], "error: cannot use store ftp://store.example.com: only local "
                                             "directories, file:// and http(s):// URLs are supported"),
])
def test_a_bad_key_or_store_is_one_line(base: Path, args: list[str], message: str) -> None:
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(base / "s"), "--root", str(base / "r"), *args),
                       capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)
    assert p.returncode == 1
    assert p.stderr == message + "\n"
