# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap manager's changes, on real files in temporary roots, through a SystemOverlord."""

from __future__ import annotations

import errno
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from engine import ChangeConflictError, Status
from managers import (
    AssertionVerifyError,
    InvalidSnapError,
    NoUpdateAvailableError,
    SnapAlreadyInstalledError,
    SnapNotFoundError,
    SnapNotInstalledError,
    SnapOperationError,
)
from managers.asserts import PrivateKey
from managers.asserts.build import account, account_key, snap_declaration
from managers.snap.naming import RESERVED_SNAP_NAMES
from managers.snapstate import SnapManager
from managers.snapstate.backend import Backend
from tests.support.system import KINDS, System, make_snap, tree

D, U, E, H = Status.DONE, Status.UNDONE, Status.ERROR, Status.HOLD

# run-hook: the install hook; then, last, the configure hook (both run only if the snap has them).
INSTALL = ["prerequisites", "download-snap", "validate-snap", "mount-snap", "copy-snap-data", "setup-profiles",
           "link-snap", "auto-connect", "run-hook", "start-snap-services", "cleanup", "run-hook"]
# run-hook: pre-refresh, post-refresh, configure.
REFRESH = ["prerequisites", "download-snap", "validate-snap", "mount-snap", "run-hook", "stop-snap-services",
           "unlink-current-snap", "copy-snap-data", "setup-profiles", "link-snap", "auto-connect", "run-hook",
           "start-snap-services", "cleanup", "run-hook"]


def kinds(system: System, cid: str) -> list[str]:
    return [k for k, _ in system.tasks(cid)]


def run_app(system: System, name: str) -> str:
    out = subprocess.run([str(system.root / "snap" / "bin" / name)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_install_from_the_store(system: System) -> None:
    rev = system.publish("hello", "1.0")
    assert rev == "1"
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert system.tasks(cid) == [(k, D) for k in INSTALL]
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        assert (chg.kind, chg.summary, chg.get("snap-names")) == ("install", 'Install "hello" snap', ["hello"])
        snapst = system.sm.info("hello")
        download = next(t for t in chg.tasks() if t.kind == "download-snap")
        size = snapst.info.size
        assert download.progress() == ("Download snap 'hello'", size, size)
    assert (snapst.current, snapst.active, snapst.revisions) == ("1", True, ["1"])
    info = snapst.info
    assert (info.version, info.snap_id, info.publisher_id, info.size > 0) == ("1.0", info.snap_id, "acme", True)
    assert len(info.sha3_384) == 64
    t = tree(system.root)
    assert t["snap/hello/current"] == ("link", "1")
    assert t["snap/hello/1/bin/run"][:2] == ("file", 0o755)
    assert t["var/snap/hello/1"][0] == t["var/snap/hello/common"][0] == "dir"
    assert "var/lib/snaps/hello_1.snap" in t
    assert not list((system.root / "var/lib/snaps/partial").iterdir())
    assert run_app(system, "hello") == "hello 1.0"
    assert system.sm.backend.services("hello")["svc"]["active"] is True
    assert "snap/bin/hello.svc" in t


def test_install_twice_or_unknown_is_refused(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    with system.o.state:
        with pytest.raises(SnapAlreadyInstalledError, match="installed already"):
            system.sm.install("hello")
        with pytest.raises(SnapNotFoundError, match="cannot find snap 'nothere'"):
            system.sm.install("nothere")
        with pytest.raises(SnapNotInstalledError):
            system.sm.info("world")
        with pytest.raises(ValueError):
            system.sm.install([])


def test_verbs_need_the_state_lock(system: System) -> None:
    system.publish("hello", "1.0")
    with pytest.raises(RuntimeError, match="lock"):
        system.sm.install("hello")
    with pytest.raises(RuntimeError, match="lock"):
        system.sm.snaps()


def test_refresh_copies_data_and_revert_goes_back(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    (system.root / "var/snap/hello/1/settings").write_text("mine")
    (system.root / "var/snap/hello/common/shared").write_text("shared")
    with system.o.state, pytest.raises(NoUpdateAvailableError, match="no updates available"):
        system.sm.refresh("hello")
    system.publish("hello", "2.0")
    cid = system.run(lambda sm: sm.refresh())
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid) == REFRESH
    assert (system.root / "var/snap/hello/2/settings").read_text() == "mine"
    assert run_app(system, "hello") == "hello 2.0"
    with system.o.state:
        snapst = system.sm.info("hello")
        assert (snapst.current, snapst.revisions) == ("2", ["1", "2"])

    cid = system.run(lambda sm: sm.revert("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid) == ["prepare-snap", "stop-snap-services", "unlink-current-snap", "setup-profiles",
                                  "link-snap", "auto-connect", "start-snap-services", "run-hook"]
    assert run_app(system, "hello") == "hello 1.0"
    assert system.sm.backend.services("hello")["svc"] == {
        "active": True, "app": "svc", "command": "bin/run --serve", "daemon": "simple", "revision": "1",
        "snap": "hello"}
    with system.o.state:
        snapst = system.sm.info("hello")
        assert (snapst.current, snapst.revisions) == ("1", ["1", "2"])
        with pytest.raises(SnapOperationError, match="no revision to revert to"):
            system.sm.revert("hello")

    # Refreshing to a revision still installed does not download it again.
    cid = system.run(lambda sm: sm.refresh("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert "download-snap" not in kinds(system, cid) and "mount-snap" not in kinds(system, cid)
    assert kinds(system, cid)[:2] == ["prerequisites", "prepare-snap"]
    assert run_app(system, "hello") == "hello 2.0"


def test_refresh_keeps_the_retained_revisions(system: System) -> None:
    for v in ("1.0", "2.0"):
        system.publish("hello", v)
        system.run(lambda sm: sm.refresh("hello") if sm.snaps() else sm.install("hello"))
    system.publish("hello", "3.0")
    cid = system.run(lambda sm: sm.refresh("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid)[-4:] == ["clear-snap", "discard-snap", "cleanup", "run-hook"]
    with system.o.state:
        assert system.sm.info("hello").revisions == ["2", "3"]
    t = tree(system.root)
    assert "snap/hello/1" not in t and "var/snap/hello/1" not in t and "var/lib/snaps/hello_1.snap" not in t
    assert "snap/hello/2" in t and "var/snap/hello/2" in t


def test_retain_is_configurable(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: Any) -> None:
    system = System(tmp_path, root_key, acme_key, clock, retain=3)
    try:
        for v in ("1.0", "2.0", "3.0", "4.0"):
            system.publish("hello", v)
            system.run(lambda sm: sm.refresh("hello") if sm.snaps() else sm.install("hello"))
        with system.o.state:
            assert system.sm.info("hello").revisions == ["2", "3", "4"]
    finally:
        system.stop()
    with pytest.raises(ValueError, match="at least 2"):
        System(tmp_path / "x", root_key, acme_key, clock, retain=1)


def test_remove_puts_the_root_back(system: System) -> None:
    system.o.state_engine.start_up()  # the directories every snap shares
    empty = tree(system.root)
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.publish("hello", "2.0")
    system.run(lambda sm: sm.refresh("hello"))
    cid = system.run(lambda sm: sm.remove("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid) == ["stop-snap-services", "run-hook", "auto-disconnect", "unlink-snap", "remove-profiles",
                                  "clear-snap", "discard-snap", "clear-snap", "discard-snap"]
    assert tree(system.root) == empty
    assert system.snaps_state() == {}
    with system.o.state, pytest.raises(SnapNotInstalledError):
        system.sm.remove("hello")


def test_remove_one_revision(system: System) -> None:
    for v in ("1.0", "2.0"):
        system.publish("hello", v)
        system.run(lambda sm: sm.refresh("hello") if sm.snaps() else sm.install("hello"))
    with system.o.state:
        with pytest.raises(SnapOperationError, match="current revision"):
            system.sm.remove("hello", revision="2")
        with pytest.raises(SnapNotInstalledError):
            system.sm.remove("hello", revision="7")
    cid = system.run(lambda sm: sm.remove("hello", revision="1"))
    assert kinds(system, cid) == ["clear-snap", "discard-snap"]
    with system.o.state:
        assert system.sm.info("hello").revisions == ["2"]
        assert system.o.state.change(cid).summary == 'Remove revision 1 of "hello" snap'  # type: ignore[union-attr]
    assert not (system.root / "snap/hello/1").exists()
    assert run_app(system, "hello") == "hello 2.0"
    # The only revision left: removing it removes the snap, and the change says so.
    cid = system.run(lambda sm: sm.remove("hello", revision="2"))
    assert kinds(system, cid)[-2:] == ["clear-snap", "discard-snap"] and "unlink-snap" in kinds(system, cid)
    with system.o.state:
        assert system.o.state.change(cid).summary == 'Remove "hello" snap'  # type: ignore[union-attr]
    assert system.snaps_state() == {}


def test_disable_and_enable(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    cid = system.run(lambda sm: sm.disable("hello"))
    assert system.tasks(cid) == [("stop-snap-services", D), ("unlink-snap", D), ("remove-profiles", D)]
    assert not (system.root / "snap/hello/current").is_symlink()
    assert not (system.root / "snap/bin/hello").exists()
    assert (system.root / "snap/hello/1").is_dir() and (system.root / "var/snap/hello/1").is_dir()
    with system.o.state:
        assert system.sm.info("hello").active is False
        with pytest.raises(SnapOperationError, match="disabled"):
            system.sm.refresh("hello")
        with pytest.raises(SnapOperationError, match="disabled already"):
            system.sm.disable("hello")
    cid = system.run(lambda sm: sm.enable("hello"))
    assert kinds(system, cid) == ["prepare-snap", "setup-profiles", "link-snap", "start-snap-services"]
    assert run_app(system, "hello") == "hello 1.0"
    assert system.sm.backend.active_services("hello") == ["svc"]
    with system.o.state:
        assert system.sm.info("hello").active is True
        with pytest.raises(SnapOperationError, match="enabled already"):
            system.sm.enable("hello")


def test_install_a_local_file_dangerously(system: System) -> None:
    first = make_snap(system.base / "local", "hello", "0.1")
    second = make_snap(system.base / "local2", "hello", "0.2")
    cid = system.run(lambda sm: sm.install_path(first, dangerous=True))
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid) == ["prerequisites", "prepare-snap", "mount-snap", "copy-snap-data",
                                  "setup-profiles", "link-snap", "auto-connect", "run-hook", "start-snap-services",
                                  "cleanup", "run-hook"]
    cid = system.run(lambda sm: sm.install_path(second, dangerous=True, remove_path=True))
    assert system.status(cid) is D, system.err(cid)
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None and chg.kind == "refresh"
        snapst = system.sm.info("hello")
        assert (snapst.revisions, snapst.info.snap_id) == (["x1", "x2"], "")
        with pytest.raises(NoUpdateAvailableError, match="local file"):
            system.sm.refresh("hello")
    assert not second.exists(), "remove_path: the file given was deleted at cleanup"
    assert first.exists()
    assert run_app(system, "hello") == "hello 0.2"


def _zip_snap(path: Path, name: str) -> Path:
    """_zip_snap writes a snap by hand (pack refuses a reserved name, as an install does)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta/snap.yaml", f"name: {name}\nversion: '1'\nsummary: S\napps:\n  {name}:\n"
                                     "    command: bin/run\n")
        info = zipfile.ZipInfo("bin/run")
        info.external_attr = 0o100755 << 16
        z.writestr(info, f"#!/bin/sh\necho {name}\n")
    return path


def test_a_snap_named_like_the_layout_cannot_land_in_another_ones_place(system: System) -> None:
    """A snap named bin would be <root>/snap/bin, where every snap's wrappers are; no name may collide."""
    system.publish("hello", "1.0")
    assert system.status(system.run(lambda sm: sm.install("hello"))) is D
    bad = _zip_snap(system.base / "bin.snap", "bin")
    with system.o.state:
        with pytest.raises(InvalidSnapError, match="field name: 'bin' is reserved: <root>/snap/bin holds the"):
            system.sm.install_path(bad, dangerous=True)
        with pytest.raises(SnapOperationError, match="cannot install snap 'bin': the name is reserved"):
            system.sm.install("bin")
    # Every entry of the directories where snap names live is an installed snap, or reserved.
    with system.o.state:
        installed = {s.info.name for s in system.sm.snaps()}
    for where in ("snap", "var/snap", "var/lib/profiles"):
        for entry in (system.root / where).iterdir():
            assert entry.name in installed or entry.name in RESERVED_SNAP_NAMES, f"{where}/{entry.name}"
    # Names of the layout's other fixed entries are snap names like any other: nothing of hello moves.
    before = tree(system.root)
    names = ["partial", "snaps", "services", "profiles", "common", "current", "hello-bin"]
    for name in names:
        cid = system.run(lambda sm, n=name: sm.install_path(_zip_snap(system.base / f"{n}.snap", n),  # type: ignore[misc]
                                                             dangerous=True))
        assert system.status(cid) is D, system.err(cid)
        assert run_app(system, name) == name
    assert run_app(system, "hello") == "hello 1.0"
    assert system.status(system.run(lambda sm: sm.remove(names))) is D
    assert tree(system.root) == before
    assert run_app(system, "hello") == "hello 1.0"


def test_install_a_local_file_needs_its_assertions(system: System) -> None:
    system.publish("hello", "1.0")
    snap = system.sample.snap_store.snap("hello").path
    with system.o.state, pytest.raises(AssertionVerifyError, match="no snap-revision assertion"):
        system.sm.install_path(snap)
    # Acknowledge the assertions (what `snap ack` does), then it installs as store revision 1.
    text = "".join((system.sample.snap_store.root / "assertions").joinpath(*p).read_text() for p in (
        ("account", "acme"), ("account-key", system.sample.publisher_key.id),
        ("snap-declaration", "16", system.sample.snap_store.snap("hello").snap_id),
        ("snap-revision", system.sample.snap_store.snap("hello").sha3_384)))
    with system.o.state:
        assert len(system.o.assert_manager.add(text)) == 4
    cid = system.run(lambda sm: sm.install_path(snap))
    assert system.status(cid) is D, system.err(cid)
    assert "validate-snap" in kinds(system, cid)
    with system.o.state:
        info = system.sm.info("hello").info
        assert (info.revision, info.publisher_id) == ("1", "acme")


# -- what validate-snap refuses ------------------------------------------------------------------------


def _no_snap_revision(system: System) -> None:
    ss = system.sample.snap_store.snap("hello")
    (system.sample.snap_store.root / "assertions" / "snap-revision" / ss.sha3_384).unlink()


def _no_account_key(system: System) -> None:
    (system.sample.snap_store.root / "assertions" / "account-key" / system.sample.publisher_key.id).unlink()


def _other_publisher(system: System) -> None:
    # A second publisher with a genuine key publishes a revision of hello: not theirs.
    evil = PrivateKey.generate()
    root = system.sample.root_key
    system.sample.snap_store.add_assertion(account(root, "root", "evil", "Evil"))
    system.sample.snap_store.add_assertion(account_key(root, "root", "evil", evil.public_key))
    snap = make_snap(system.base / "evil", "hello", "6.6")
    system.sample.snap_store.publish(snap, key=evil, developer_id="evil",
                                     snap_id=system.sample.snap_store.snap("hello").snap_id)


def _declaration_of_another_name(system: System) -> None:
    ss = system.sample.snap_store.snap("hello")
    system.sample.snap_store.add_assertion(snap_declaration(system.sample.root_key, "root", "world", "acme",
                                                       snap_id=ss.snap_id, revision=1))


def _unsigned_root(system: System) -> None:
    # The account of the publisher signed by a key that is not the trusted root's.
    fake = PrivateKey.generate()
    system.sample.snap_store.add_assertion(account_key(fake, "root", "acme", system.sample.publisher_key.public_key))


@pytest.mark.parametrize(("break_store", "message"), [
    (_no_snap_revision, "no snap-revision assertion for its sha3-384"),
    (_no_account_key, "no account-key for its signing key"),
    (_other_publisher, "its developer 'evil' is not the publisher of snap id"),
    (_declaration_of_another_name, "is for the snap named 'world'"),
    (_unsigned_root, "no account-key for its signing key"),
], ids=["no-snap-revision", "no-account-key", "other-publisher", "declaration-names-another", "fake-root"])
def test_validate_snap_refuses_a_broken_chain(system: System, break_store: Any, message: str) -> None:
    system.o.state_engine.start_up()  # the directories every snap shares
    before = tree(system.root)
    system.publish("hello", "1.0")
    break_store(system)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is E
    assert message in system.err(cid)
    assert dict(system.tasks(cid))["validate-snap"] is E
    assert tree(system.root) == before
    assert system.snaps_state() == {}


def test_a_store_file_that_does_not_match_is_refused(system: System) -> None:
    system.o.state_engine.start_up()  # the directories every snap shares
    before = tree(system.root)
    system.publish("hello", "1.0")
    path = system.sample.snap_store.snap("hello").path
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is E
    assert "expected" in system.err(cid) and "sha3-384" in system.err(cid)
    assert tree(system.root) == before


# -- conflicts ------------------------------------------------------------------------------------------


def test_a_change_for_a_snap_with_an_unready_change_conflicts(system: System) -> None:
    for name in ("hello", "world"):
        system.publish(name, "1.0")
    with system.o.state:
        first = system.sm.install("hello").id
    with system.o.state:
        for verb in (lambda: system.sm.install(["world", "hello"]), lambda: system.sm.install("hello")):
            with pytest.raises(ChangeConflictError) as e:
                verb()
            assert e.value.change_id == first
            assert f"change {first} (install) is in progress" in str(e.value)
            assert e.value.subject == "hello"
        other = system.sm.install("world").id  # another snap: no conflict
    system.o.settle(60)
    assert system.status(first) is D and system.status(other) is D
    with system.o.state:
        chg = system.sm.refresh if False else system.sm.remove("hello")
        for verb in (lambda: system.sm.disable("hello"), lambda: system.sm.revert("hello"),
                     lambda: system.sm.refresh("hello"), lambda: system.sm.remove("hello")):
            with pytest.raises((ChangeConflictError, SnapOperationError, NoUpdateAvailableError)):
                verb()
        with pytest.raises(ChangeConflictError, match=f"change {chg.id} \\(remove\\)"):
            system.sm.disable("hello")
    system.o.settle(60)
    with system.o.state:
        system.sm.install("hello")  # the remove is done: no conflict any more


def test_a_verb_asked_to_wait_for_conflicts_runs_once_the_change_in_progress_is_done(system: System) -> None:
    system.publish("hello", "1.0")
    with system.o.state:
        first = system.sm.install("hello")
        # Both wait for the install (and the second for the first): built when their turn comes, checked then.
        again = system.sm.install("hello", on_conflict="queue")
        remove = system.sm.remove("hello", on_conflict="queue")
        assert [t.kind for t in remove.tasks()] == ["run-queued-request"]
        assert (again.kind, remove.kind) == ("install", "remove")
        assert [c.id for c in system.o.state.affecting(["snap:hello"])] == [first.id, again.id, remove.id]
        ids = first.id, again.id, remove.id
    system.o.settle(60)
    assert [system.status(cid) for cid in ids] == [D, E, D]
    assert "it is installed already" in system.err(ids[1])  # checked when its turn came, not when asked
    with system.o.state:
        assert system.sm.info_or_none("hello") is None  # the remove ran last
        assert len([t for t in system.o.state.change(ids[2]).tasks()]) > 1  # its task sets joined it
        system.sm.install("hello", on_conflict="queue")  # nothing in progress: made at once, not queued
        assert system.o.state.changes()[-1].tasks()[0].kind != "run-queued-request"


def test_an_unready_change_of_a_state_from_before_affected_keys_conflicts_after_start_up(system: System) -> None:
    """A change written by an older version declared nothing: start_up declares its snaps from its data."""
    with system.o.state:
        old = system.o.state.new_change("install", "Install hello (written by an older version)")
        old.add_task(system.o.state.new_task("hold-me", "never runs"))
        old.set("snap-names", ["hello"])
        assert old.affects() == []
    system.sm.start_up()
    with system.o.state:
        assert old.affects() == ["snap:hello"]
        with pytest.raises(ChangeConflictError, match=f"change {old.id} \\(install\\)"):
            system.sm.remove("hello")


# -- failures undo everything ---------------------------------------------------------------------------

# kind -> the backend method its do calls last, made to fail once it has done its work.
BACKEND = {"unlink-current-snap": "unlink", "copy-snap-data": "copy_data", "link-snap": "link",
           "start-snap-services": "start_services"}


def fail_before(sm: SnapManager, kind: str) -> None:
    _do, undo = KINDS[kind]
    h = sm.handlers

    def failing(task: Any, tomb: Any) -> None:
        raise RuntimeError(f"injected failure in {kind}")

    sm.runner.add_handler(kind, failing, getattr(h, undo) if undo else None)


def fail_in_backend(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """fail_in_backend makes the next call of a backend method fail once it has done its work."""
    real = getattr(Backend, method)
    armed = [True]

    def broken(self: Backend, *args: Any, **kw: Any) -> Any:
        real(self, *args, **kw)
        if armed.pop() if armed else False:
            raise OSError(errno.ENOSPC, f"injected failure after {method}")

    monkeypatch.setattr(Backend, method, broken)


# The steps of a refresh after unlink-current-snap (and that one), each made to fail.
AFTER_UNLINK = ["unlink-current-snap", "copy-snap-data", "setup-profiles", "link-snap", "auto-connect",
                "start-snap-services", "cleanup"]
CASES = [(k, "before") for k in AFTER_UNLINK] + [(k, "backend") for k in BACKEND]


@pytest.mark.parametrize(("kind", "where"), CASES, ids=[f"{k}-{w}" for k, w in CASES])
def test_a_failed_refresh_puts_back_the_previous_revision(system: System, monkeypatch: pytest.MonkeyPatch,
                                                          kind: str, where: str) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    (system.root / "var/snap/hello/1/settings").write_text("mine")
    system.publish("hello", "2.0")
    before = system.snapshot()
    if where == "before":
        fail_before(system.sm, kind)
    else:
        fail_in_backend(monkeypatch, BACKEND[kind])
    cid = system.run(lambda sm: sm.refresh("hello"))
    monkeypatch.undo()
    assert system.status(cid) is E
    assert "injected failure" in system.err(cid)
    statuses = dict(system.tasks(cid))
    assert statuses[kind] is E
    assert statuses["download-snap"] is U and statuses["unlink-current-snap"] in (U, E)
    after = system.snapshot()
    assert after[1] == before[1], "the state of the snap is not what it was"
    assert after[0] == before[0], "the root is not what it was"
    assert run_app(system, "hello") == "hello 1.0"
    assert system.sm.backend.active_services("hello") == ["svc"]


# With revisions 1, 2, 3 (3 current) and retain 3, a refresh to 4 discards revision 1 (clear-snap, then
# discard-snap) before its cleanup: where it fails, and the sequence the undo leaves (snapd's).
DISCARD_CASES = [("clear-snap", "before", ["1", "2", "3"]), ("discard-snap", "before", ["1", "2", "3"]),
                 ("discard-snap", "backend", ["2", "3"]), ("cleanup", "before", ["2", "3"])]


@pytest.mark.parametrize(("kind", "where", "sequence"), DISCARD_CASES,
                         ids=[f"{k}-{w}" for k, w, _ in DISCARD_CASES])
def test_undo_of_a_refresh_does_not_bring_back_discarded_revisions(
        tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: Any, monkeypatch: pytest.MonkeyPatch,
        kind: str, where: str, sequence: list[str]) -> None:
    """The sequence after the undo lists exactly the revisions on disk; revert to a discarded one is refused."""
    system = System(tmp_path, root_key, acme_key, clock, retain=3)
    try:
        for v in ("1.0", "2.0", "3.0"):
            system.publish("hello", v)
            system.run(lambda sm: sm.refresh("hello") if sm.snaps() else sm.install("hello"))
        system.publish("hello", "4.0")
        if where == "before":
            fail_before(system.sm, kind)
        else:
            fail_in_backend(monkeypatch, "discard")
        cid = system.run(lambda sm: sm.refresh("hello"))
        monkeypatch.undo()
        assert system.status(cid) is E and dict(system.tasks(cid))[kind] is E
        with system.o.state:
            snapst = system.sm.info("hello")
            assert (snapst.revisions, snapst.current, snapst.active) == (sequence, "3", True)
        on_disk = sorted(p.name for p in (system.root / "snap/hello").iterdir() if p.name != "current")
        assert on_disk == sequence
        assert sorted(p.name for p in (system.root / "var/lib/snaps").glob("hello_*.snap")) == [
            f"hello_{r}.snap" for r in sequence]
        assert run_app(system, "hello") == "hello 3.0"
        if "1" not in sequence:
            with system.o.state, pytest.raises(SnapNotInstalledError, match="it has no revision 1"):
                system.sm.revert("hello", revision="1")
        cid = system.run(lambda sm: sm.revert("hello", revision="2"))
        assert system.status(cid) is D, system.err(cid)
        assert run_app(system, "hello") == "hello 2.0"
    finally:
        system.stop()


def test_one_failing_snap_of_several_is_undone_alone(system: System) -> None:
    for name in ("hello", "world", "other"):
        system.publish(name, "1.0")
    ss = system.sample.snap_store.snap("world")
    (system.sample.snap_store.root / "assertions" / "snap-revision" / ss.sha3_384).unlink()
    cid = system.run(lambda sm: sm.install(["hello", "world", "other"]))
    assert system.status(cid) is E
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        assert chg.summary == 'Install snaps "hello", "world", "other"'
        lanes: dict[int, set[str]] = {}
        for t in chg.tasks():
            (lane,) = t.lanes()
            lanes.setdefault(lane, set()).add(t.status.value)
        assert len(lanes) == 3
        assert sorted(lanes.values(), key=sorted) == sorted(
            [{"Done"}, {"Done"}, {"Done", "Undone", "Error", "Hold"}], key=sorted)
        assert [s.name for s in system.sm.snaps()] == ["hello", "other"]
    assert "world" in system.err(cid) and "no snap-revision" in system.err(cid)
    assert not (system.root / "snap/world").exists()
    assert run_app(system, "other") == "other 1.0"


# -- downloads -----------------------------------------------------------------------------------------


def test_transient_download_errors_are_retried(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    system.publish("hello", "1.0")
    store = system.sm.snap_store
    assert store is not None
    real = type(store).open
    failures = [errno.EIO, errno.ETIMEDOUT]

    def flaky(self: Any, snap: Any) -> Any:
        if failures:
            raise OSError(failures.pop(0), "injected I/O error")
        return real(self, snap)

    monkeypatch.setattr(type(store), "open", flaky)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is D, system.err(cid)
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        download = next(t for t in chg.tasks() if t.kind == "download-snap")
        assert download.attempts == 2
        assert any("retrying after attempt 2 failed" in line for line in download.log())


def test_a_download_that_cannot_work_fails_at_once(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    system.publish("hello", "1.0")
    store = system.sm.snap_store
    assert store is not None

    def denied(self: Any, snap: Any) -> Any:
        raise PermissionError(errno.EACCES, "injected permission error")

    monkeypatch.setattr(type(store), "open", denied)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is E
    assert "injected permission error" in system.err(cid)
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        assert next(t for t in chg.tasks() if t.kind == "download-snap").attempts == 1


def test_a_partial_download_is_resumed(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    system.publish("hello", "1.0")
    ss = system.sample.snap_store.snap("hello")
    partial = system.sm.backend.partial_blob("hello", "1")
    partial.parent.mkdir(parents=True, exist_ok=True)
    data = ss.path.read_bytes()
    partial.write_bytes(data[:100])
    seeks: list[int] = []
    store = system.sm.snap_store
    assert store is not None
    real = type(store).open

    class Recording:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *a: Any) -> None:
            self.f.close()

        def seek(self, n: int) -> None:
            seeks.append(n)
            self.f.seek(n)

        def read(self, n: int) -> bytes:
            return bytes(self.f.read(n))

    monkeypatch.setattr(type(store), "open", lambda self, snap: Recording(real(self, snap)))
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert seeks == [100]
    assert system.sm.backend.blob("hello", "1").read_bytes() == data


def test_a_refresh_of_every_snap_skips_the_up_to_date(system: System) -> None:
    for name in ("hello", "world"):
        system.publish(name, "1.0")
    system.run(lambda sm: sm.install(["hello", "world"]))
    with system.o.state, pytest.raises(NoUpdateAvailableError, match="no snaps have updates"):
        system.sm.refresh()
    system.publish("world", "2.0")
    cid = system.run(lambda sm: sm.refresh())
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None and chg.get("snap-names") == ["world"]
        assert {s.name: s.current for s in system.sm.snaps()} == {"hello": "1", "world": "2"}


def test_a_refresh_of_every_snap_leaves_out_snaps_the_store_does_not_have(system: System) -> None:
    """As snapd: `refresh` with no names refreshes what the store has; naming a snap it lacks is an error."""
    import shutil

    for name in ("hello", "world"):
        system.publish(name, "1.0")
    system.run(lambda sm: sm.install(["hello", "world"]))
    shutil.rmtree(system.base / "store" / "snaps" / "hello")  # the store no longer has it
    system.publish("world", "2.0")
    cid = system.run(lambda sm: sm.refresh())
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None and chg.get("snap-names") == ["world"]
        with pytest.raises(SnapNotFoundError):
            system.sm.refresh(["hello"])


def test_remove_a_disabled_snap(system: System) -> None:
    system.o.state_engine.start_up()  # the directories every snap shares
    empty = tree(system.root)
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.run(lambda sm: sm.disable("hello"))
    cid = system.run(lambda sm: sm.remove("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert kinds(system, cid) == ["run-hook", "auto-disconnect", "remove-profiles", "clear-snap", "discard-snap"]
    assert tree(system.root) == empty
    assert system.snaps_state() == {}
