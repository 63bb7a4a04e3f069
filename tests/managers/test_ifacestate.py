# SPDX-License-Identifier: GPL-3.0-or-later
"""The InterfaceManager on a real root: checks at install, auto-connect rules, connect and disconnect with
undo, refresh and remove, the profiles written, conflicts."""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import ChangeConflictError, Status
from engine.testing import FakeClock
from managers import InterfaceError, NotConnectedError, SnapNotInstalledError
from managers.asserts import PrivateKey
from managers.asserts.build import account, account_key, snap_declaration
from managers.ifacestate import InterfaceManager
from managers.ifacestate.interfaces import INTERFACES, BadAttribute, Layout, Side, system_info
from managers.snap import PlugInfo, SnapInfo
from managers.system import SystemOverlord
from tests.support.system import System, snap_id, tree

D = Status.DONE

LIBRARY = """slots:
  books:
    interface: content
    read: [$SNAP/books]
    write: [$SNAP_DATA/notes]
"""
READER = """plugs:
  books:
    interface: content
    target: $SNAP_DATA/library
    default-provider: library
  network:
  home:
  logs:
    interface: system-files
    read: [/var/log/syslog]
    write: [/srv/reader]
"""
# Published by another account (globex): its content plug fits the library's slot, but is not auto-connected.
STRANGER = """plugs:
  books:
    interface: content
    target: $SNAP_COMMON/books
"""


class Iface(System):
    """Iface is a System whose store has the snaps of these tests; stranger is published by globex."""

    def __init__(self, base: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> None:
        super().__init__(base, root_key, acme_key, clock, names=("library", "reader", "hello", "stranger"))
        store = self.sample.snap_store
        self.globex = PrivateKey.generate()
        store.add_assertion(account(root_key, "root", "globex", "Globex", timestamp="2030-01-01T00:00:00Z"))
        store.add_assertion(account_key(root_key, "root", "globex", self.globex.public_key))
        store.add_assertion(snap_declaration(root_key, "root", "stranger", "globex", timestamp="2030-01-01T00:00:00Z"))

    @property
    def im(self) -> InterfaceManager:
        return self.o.interface_manager

    def publish_snap(self, name: str, version: str = "1.0") -> str:
        extra = {"library": LIBRARY, "reader": READER, "stranger": STRANGER}.get(name, "")
        if name != "stranger":
            return self.publish(name, version, extra=extra, files={"books/a.txt": "a book\n"})
        from tests.support.system import make_snap

        (self.base / "build").mkdir(exist_ok=True)
        snap = make_snap(self.base / "build", name, version, extra=extra)
        return self.sample.snap_store.publish(snap, key=self.globex, developer_id="globex",
                                              snap_id=snap_id(name)).revision

    def install(self, *names: str) -> None:
        for name in names:
            self.publish_snap(name)
            cid = self.run(lambda sm, n=name: sm.install(n))  # type: ignore[misc]
            assert self.status(cid) is D, self.err(cid)

    def conns(self) -> dict[str, Any]:
        with self.o.state:
            return json.loads(json.dumps(self.o.state.get("conns", {})))

    def profile(self, name: str) -> dict[str, Any] | None:
        path = self.root / "var" / "lib" / "profiles" / name
        return json.loads(path.read_text()) if path.exists() else None

    def act(self, verb: str, *args: Any, **kw: Any) -> str:
        """act runs an interface manager verb as a change and returns its id."""
        with self.o.state:
            cid = getattr(self.im, verb)(*args, **kw).id
        self.o.settle(60)
        return cid


@pytest.fixture
def sys_(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> Iterator[Iface]:
    s = Iface(tmp_path, root_key, acme_key, clock)
    yield s
    s.stop()


def auto(interface: str) -> dict[str, Any]:
    return {"interface": interface, "auto": True, "undesired": False}


def manual(interface: str) -> dict[str, Any]:
    return {"interface": interface, "auto": False, "undesired": False}


def test_install_auto_connects_per_policy_and_writes_the_profiles(sys_: Iface) -> None:
    sys_.install("library", "reader", "hello")
    # network and home yes; content from the same publisher yes; system-files never.
    assert sys_.conns() == {"reader:books library:books": auto("content"), "reader:home system:home": auto("home"),
                            "reader:network system:network": auto("network")}
    root = str(sys_.root.absolute())
    assert sys_.profile("reader") == {
        "snap": "reader", "revision": "1", "network": True,
        "read": [f"{root}/home"], "write": [f"{root}/home"],
        "mounts": [{"source": f"{root}/snap/library/1/books", "target": f"{root}/var/snap/reader/1/library/books",
                    "mode": "ro"},
                   {"source": f"{root}/var/snap/library/1/notes", "target": f"{root}/var/snap/reader/1/library/notes",
                    "mode": "rw"}],
        "connections": [{"interface": "content", "plug": "reader:books", "slot": "library:books"},
                        {"interface": "home", "plug": "reader:home", "slot": "system:home"},
                        {"interface": "network", "plug": "reader:network", "slot": "system:network"}]}
    assert sys_.profile("library") == {
        "snap": "library", "revision": "1", "network": False, "read": [], "write": [], "mounts": [],
        "connections": [{"interface": "content", "plug": "reader:books", "slot": "library:books"}]}
    assert sys_.profile("hello") == {"snap": "hello", "revision": "1", "network": False, "read": [], "write": [],
                                     "mounts": [], "connections": []}
    text = (sys_.root / "var/lib/profiles/reader").read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "snap": "reader"')
    assert not list((sys_.root / "var/lib/profiles").glob(".*")), "a temporary file was left behind"


def test_the_slot_side_auto_connects_too_and_rewrites_the_plug_snaps_profile(sys_: Iface) -> None:
    sys_.install("reader")
    assert "reader:books library:books" not in sys_.conns()
    assert sys_.profile("reader")["mounts"] == []  # type: ignore[index]
    sys_.install("library")
    assert sys_.conns()["reader:books library:books"] == auto("content")
    assert [m["mode"] for m in sys_.profile("reader")["mounts"]] == ["ro", "rw"]  # type: ignore[index]


def test_content_from_another_publisher_is_only_connected_by_hand(sys_: Iface) -> None:
    sys_.install("library", "stranger")
    assert sys_.conns() == {}
    cid = sys_.act("connect", "stranger", "books", "library")  # the only fitting slot of library
    assert sys_.status(cid) is D, sys_.err(cid)
    with sys_.o.state:
        chg = sys_.o.state.change(cid)
        assert chg is not None and chg.kind == "connect" and chg.get("snap-names") == ["library", "stranger"]
        assert [t.kind for t in chg.tasks()] == ["connect", "setup-profiles", "setup-profiles"]
    assert sys_.conns() == {"stranger:books library:books": manual("content")}
    root = str(sys_.root.absolute())
    assert sys_.profile("stranger")["mounts"][0]["target"] == f"{root}/var/snap/stranger/common/books/books"  # type: ignore[index]
    with sys_.o.state:
        shown = sys_.im.connections()
    assert [(str(c.ref), c.manual) for c in shown.established] == [("stranger:books library:books", True)]


def test_connect_and_disconnect_system_files_by_hand(sys_: Iface) -> None:
    sys_.install("reader")
    root = str(sys_.root.absolute())
    before = sys_.profile("reader")
    cid = sys_.act("connect", "reader", "logs")
    assert sys_.status(cid) is D, sys_.err(cid)
    assert sys_.conns()["reader:logs system:system-files"] == manual("system-files")
    p = sys_.profile("reader")
    assert p is not None
    assert f"{root}/var/log/syslog" in p["read"] and p["write"] == [f"{root}/home", f"{root}/srv/reader"]
    again = sys_.act("connect", "reader", "logs", "system", "system-files")  # connected already: Done at once
    with sys_.o.state:
        chg = sys_.o.state.change(again)
        assert chg is not None and chg.status is D and [t.kind for t in chg.tasks()] == ["connect"]
        assert "is connected already: nothing to do" in chg.tasks()[0].log()[-1]
    cid = sys_.act("disconnect", "reader", "logs")
    assert sys_.status(cid) is D, sys_.err(cid)
    assert "reader:logs system:system-files" not in sys_.conns()  # a manual connection is simply gone
    assert sys_.profile("reader") == before
    with sys_.o.state, pytest.raises(NotConnectedError, match="reader:logs: it has no connections"):
        sys_.im.disconnect("reader", "logs")


def test_a_disconnect_sticks_through_refreshes_manual_connections_survive_and_forget_lets_it_come_back(
        sys_: Iface) -> None:
    sys_.install("library", "reader")
    assert sys_.status(sys_.act("connect", "reader", "logs")) is D
    assert sys_.status(sys_.act("disconnect", "reader", "network")) is D
    assert sys_.conns()["reader:network system:network"] == {"interface": "network", "auto": True, "undesired": True}
    assert sys_.profile("reader")["network"] is False  # type: ignore[index]
    sys_.publish_snap("reader", "2.0")
    cid = sys_.run(lambda sm: sm.refresh("reader"))
    assert sys_.status(cid) is D, sys_.err(cid)
    conns = sys_.conns()
    assert conns["reader:network system:network"]["undesired"] is True, "auto-connect undid a person's disconnect"
    assert conns["reader:logs system:system-files"] == manual("system-files")
    assert conns["reader:books library:books"] == auto("content")
    p = sys_.profile("reader")
    assert p is not None and p["revision"] == "2" and p["network"] is False
    assert all("/var/snap/reader/2/library/" in m["target"] for m in p["mounts"])
    with sys_.o.state:
        shown = sys_.im.connections(all=True)
    assert [str(c.ref) for c in shown.undesired] == ["reader:network system:network"]
    assert sys_.status(sys_.act("disconnect", "reader", "network", "", "network", forget=True)) is D
    assert "reader:network system:network" not in sys_.conns()
    sys_.publish_snap("reader", "3.0")
    assert sys_.status(sys_.run(lambda sm: sm.refresh("reader"))) is D
    assert sys_.conns()["reader:network system:network"] == auto("network")
    assert sys_.profile("reader")["network"] is True  # type: ignore[index]
    assert_profiles_follow_the_state(sys_)


def test_a_refresh_of_the_provider_moves_the_consumers_mounts(sys_: Iface) -> None:
    sys_.install("library", "reader")
    sys_.publish_snap("library", "2.0")
    assert sys_.status(sys_.run(lambda sm: sm.refresh("library"))) is D
    p = sys_.profile("reader")
    assert p is not None and p["revision"] == "1"
    assert [m["source"].split("/library/")[1] for m in p["mounts"]] == ["2/books", "2/notes"]
    cid = sys_.run(lambda sm: sm.revert("library"))
    assert sys_.status(cid) is D, sys_.err(cid)
    assert [m["source"].split("/library/")[1] for m in sys_.profile("reader")["mounts"]] == ["1/books", "1/notes"]  # type: ignore[index]
    assert_profiles_follow_the_state(sys_)


def test_removing_a_snap_disconnects_it_first(sys_: Iface) -> None:
    sys_.install("library", "reader")
    cid = sys_.run(lambda sm: sm.remove("library"))
    assert sys_.status(cid) is D, sys_.err(cid)
    with sys_.o.state:
        chg = sys_.o.state.change(cid)
        assert chg is not None
        task = next(t for t in chg.tasks() if t.kind == "auto-disconnect")
        assert task.log()[-1].endswith("Disconnected reader:books from library:books")
    assert "reader:books library:books" not in sys_.conns()
    assert sys_.profile("library") is None
    assert sys_.profile("reader")["mounts"] == []  # type: ignore[index]
    assert_profiles_follow_the_state(sys_)
    cid = sys_.run(lambda sm: sm.remove("reader"))
    assert sys_.status(cid) is D, sys_.err(cid)
    assert sys_.conns() == {}
    assert list((sys_.root / "var/lib/profiles").iterdir()) == []


def test_a_failing_setup_profiles_undoes_the_connect_and_puts_every_profile_back(
        sys_: Iface, monkeypatch: pytest.MonkeyPatch) -> None:
    sys_.install("library", "stranger")
    before = tree(sys_.root), sys_.conns()
    from managers.ifacestate import backend

    real = backend.atomic_write
    writes: list[Path] = []

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        writes.append(path)
        if path.name == "stranger" and len(writes) == 2:  # the second setup-profiles, after library's was done
            raise OSError(errno.EIO, "injected I/O error", str(path))
        real(path, data, mode)

    monkeypatch.setattr(backend, "atomic_write", failing)
    cid = sys_.act("connect", "stranger", "books", "library", "books")
    assert sys_.status(cid) is Status.ERROR
    assert "injected I/O error" in sys_.err(cid)
    assert [k for k, s in sys_.tasks(cid)] == ["connect", "setup-profiles", "setup-profiles"]
    assert [s for k, s in sys_.tasks(cid)] == [Status.UNDONE, Status.UNDONE, Status.ERROR]
    assert (tree(sys_.root), sys_.conns()) == before


def test_a_failing_setup_profiles_undoes_the_disconnect(sys_: Iface, monkeypatch: pytest.MonkeyPatch) -> None:
    sys_.install("library", "reader")
    before = tree(sys_.root), sys_.conns()
    from managers.ifacestate import backend

    real = backend.atomic_write
    failed: list[Path] = []

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "reader" and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, "injected: no space left", str(path))
        real(path, data, mode)

    monkeypatch.setattr(backend, "atomic_write", failing)
    cid = sys_.act("disconnect", "reader", "books", "library", "books")
    assert sys_.status(cid) is Status.ERROR
    assert (tree(sys_.root), sys_.conns()) == before  # the connection is back, auto and wanted


def test_connect_conflicts_with_a_change_in_progress_on_either_snap(sys_: Iface) -> None:
    sys_.install("library", "reader")
    sys_.publish_snap("library", "2.0")
    with sys_.o.state:
        refresh = sys_.sm.refresh("library")
        with pytest.raises(ChangeConflictError, match=f"change {refresh.id} \\(refresh\\)") as e:
            sys_.im.disconnect("reader", "books")
        assert e.value.change_id == refresh.id
        sys_.im.connect("reader", "logs")  # the system and reader are free
    sys_.o.settle(60)
    with sys_.o.state:
        chg = sys_.im.disconnect("reader", "books")
        with pytest.raises(ChangeConflictError, match="\\(disconnect\\)"):
            sys_.sm.remove("library")  # the disconnect in progress touches library
    sys_.o.settle(60)
    with sys_.o.state:
        assert chg.status is D, chg.err()


@pytest.mark.parametrize(("yaml", "problem"), [
    ("plugs:\n  data: {interface: content}\n", "plug 'data' (content): attribute 'target': missing"),
    ("plugs:\n  data: {interface: content, target: /etc/x}\n",
     "plug 'data' (content): attribute 'target': '/etc/x' must start with $SNAP_DATA or $SNAP_COMMON"),
    ("plugs:\n  data: {interface: content, target: $SNAP_DATA/../x}\n", "attribute 'target': '$SNAP_DATA/../x'"),
    ("plugs:\n  data: {interface: content, target: $SNAP_DATA/x, colour: red}\n",
     "plug 'data' (content): attribute 'colour': unknown attribute"),
    ("slots:\n  share: {interface: content}\n", "slot 'share' (content): attribute 'read': missing"),
    ("slots:\n  share: {interface: content, write: [$SNAP/x]}\n",
     "attribute 'write': '$SNAP/x' must start with $SNAP_DATA or $SNAP_COMMON"),
    ("plugs:\n  etc: {interface: system-files, read: [/etc/shadow]}\n",
     "plug 'etc' (system-files): attribute 'read': '/etc/shadow' is never granted"),
    ("plugs:\n  etc: {interface: system-files, read: [/etc]}\n",
     "plug 'etc' (system-files): attribute 'read': '/etc' is never granted: it holds /etc/shadow"),
    ("plugs:\n  etc: {interface: system-files, write: [/etc/hosts]}\n",
     "attribute 'write': '/etc/hosts' is not under /srv, /var/log"),
    ("plugs:\n  etc: {interface: system-files, read: ['/etc/*']}\n", "attribute 'read': '/etc/*': paths cannot"),
    ("plugs:\n  network: {colour: red}\n", "plug 'network': attribute 'colour': unknown attribute (known: none)"),
    ("plugs:\n  camera:\n", "plug 'camera': unknown interface 'camera'"),
    ("slots:\n  network:\n", "slot 'network': only the system offers network slots"),
])
def test_bad_plugs_and_slots_are_refused_at_install(sys_: Iface, yaml: str, problem: str) -> None:
    sys_.publish("hello", "1.0", extra=yaml)
    cid = sys_.run(lambda sm: sm.install("hello"))
    assert sys_.status(cid) is Status.ERROR
    assert "cannot install snap 'hello': " in sys_.err(cid) and problem in sys_.err(cid)
    with sys_.o.state:
        assert sys_.sm.snaps() == []
    assert sys_.profile("hello") is None and not (sys_.root / "snap/hello/1").exists()


DENIED_GRANTS = [
    "/", "/etc", "/etc/", "//etc", "/etc//", "/etc/.", "/etc/shadow", "/etc/shadow-", "/etc/gshadow",
    "/etc/gshadow-", "/etc/./shadow", "/etc//shadow", "/etc/shadow/", "/etc/ssh/../shadow", "/srv/../etc/shadow",
    "/etc/sudoers", "/etc/sudoers.d", "/etc/sudoers.d/admins", "/etc/ssh", "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssl", "/etc/ssl/private", "/etc/ssl/private/server.key", "/etc/security", "/etc/security/opasswd",
    "/var/lib/overlord", "/var/lib/overlord/state.db", "/var/lib/profiles", "/var/lib/snaps/hello_1.snap",
    "/srv/../var/lib/overlord", "/var/log/../../etc/gshadow-",
]


@pytest.mark.parametrize("attr", ["read", "write"])
@pytest.mark.parametrize("path", DENIED_GRANTS)
def test_system_files_never_grants_what_equals_holds_or_lies_under_a_denied_path(path: str, attr: str) -> None:
    """Compared after lexical normalisation, whatever the allow-lists (read: /etc, /srv...) say."""
    iface = INTERFACES["system-files"]
    plug = PlugInfo("files", "system-files", {attr: [path]})
    with pytest.raises(BadAttribute, match="is never granted"):
        iface.check_plug(plug)
    assert "never granted" in str(iface.compatible(plug, PlugInfo("system-files", "system-files")))


def test_a_profile_never_lists_a_denied_path(tmp_path: Path) -> None:
    """A plug recorded before the rule tightened (never checked again) still gets no denied path."""
    plug = PlugInfo("files", "system-files", {"read": ["/etc", "/var/log/app"], "write": ["/srv/../etc/shadow"]})
    info = SnapInfo("old", "1", "Old", plugs={"files": plug}, revision="1")
    rules = INTERFACES["system-files"].plug_rules(Side(info, plug), Side(system_info(), PlugInfo("s", "s")),
                                                  Layout(tmp_path))
    assert (rules.read, rules.write) == ((str(tmp_path / "var/log/app"),), ())


@pytest.mark.parametrize("path", ["/etc/hosts", "/etc/shadowed", "/etc/ssl/certs", "/etc/ssl/certs/ca.pem",
                                  "/var/log/syslog", "/usr/share/doc"])
def test_system_files_grants_what_is_next_to_a_denied_path(path: str) -> None:
    INTERFACES["system-files"].check_plug(PlugInfo("files", "system-files", {"read": [path]}))


def test_the_state_directory_under_the_root_is_never_granted(tmp_path: Path, root_key: PrivateKey,
                                                              clock: FakeClock) -> None:
    root = tmp_path / "root"
    o = SystemOverlord(root / "srv" / "overlord", root, trusted_key=root_key.public_key, clock=clock)
    try:
        for path in ("/srv", "/srv/overlord", "/srv/overlord/state.db", "/srv/x/../overlord/trusted-root.pub.pem"):
            info = SnapInfo("spy", "1", "A spy", plugs={"db": PlugInfo("db", "system-files", {"read": [path]})})
            with pytest.raises(InterfaceError, match=f"'{re.escape(path)}' is never granted"):
                o.interface_manager.check_snap(info, None)
        ok = SnapInfo("fine", "1", "Fine", plugs={"db": PlugInfo("db", "system-files", {"write": ["/srv/data"]})})
        o.interface_manager.check_snap(ok, None)
    finally:
        o.stop()


@pytest.mark.parametrize(("args", "error", "message"), [
    (("nosuch", "x"), SnapNotInstalledError, "cannot connect nosuch:x: snap 'nosuch' is not installed"),
    (("reader", "nosuch"), InterfaceError, "cannot connect reader:nosuch: snap 'reader' has no plug named 'nosuch'"),
    (("reader", "books", "hello"), InterfaceError, "snap 'hello' has no content slot that fits it"),
    (("reader", "books", "library", "nosuch"), InterfaceError, "snap 'library' has no slot named 'nosuch'"),
    (("reader", "network", "system", "home"), InterfaceError,
     "cannot connect reader:network (network) to system:home (home): they are not of one interface"),
    (("system", "network"), InterfaceError, "cannot connect system:network: the system has no plugs"),
])
def test_connect_refuses_what_cannot_be(sys_: Iface, args: tuple[str, ...], error: type[Exception],
                                        message: str) -> None:
    sys_.install("library", "reader", "hello")
    with sys_.o.state, pytest.raises(error) as e:
        sys_.im.connect(*args)
    assert message in str(e.value)


def test_queries_list_interfaces_plugs_and_slots(sys_: Iface) -> None:
    sys_.install("library", "reader")
    with sys_.o.state:
        infos = sys_.im.interfaces()
        connected = sys_.im.interfaces(connected=True)
        shown = sys_.im.connections(all=True)
        only = sys_.im.connections("library")
    assert [i.name for i in infos] == ["content", "home", "network", "system-files"]
    assert [i.name for i in connected] == ["content", "home", "network"]
    assert [str(p.ref) for p in infos[3].plugs] == ["reader:logs"]
    assert [str(s.ref) for s in infos[3].slots] == ["system:system-files"]
    assert [(str(v.port.ref), [str(r) for r in v.connections]) for v in shown.plugs] == [
        ("reader:books", ["library:books"]), ("reader:home", ["system:home"]), ("reader:logs", []),
        ("reader:network", ["system:network"])]
    assert [str(c.ref) for c in only.established] == ["reader:books library:books"]
    assert [str(v.port.ref) for v in only.plugs] == ["reader:books"]
    assert [str(v.port.ref) for v in only.slots] == ["library:books"]


def assert_profiles_follow_the_state(sys_: Iface) -> None:
    """assert_profiles_follow_the_state checks every profile is what the state says it is, and that every
    enabled snap has one."""
    from managers.ifacestate import compute, render

    with sys_.o.state:
        repo = sys_.im.repository()
        enabled = {s.name for s in sys_.sm.snaps() if s.active}
    d = sys_.root / "var/lib/profiles"
    assert {p.name for p in d.iterdir()} == enabled
    for name in enabled:
        assert (d / name).read_text() == render(compute(name, repo, sys_.im.backend.layout)), name


def test_changes_on_two_consumers_at_once_leave_the_shared_providers_profile_right(sys_: Iface) -> None:
    sys_.install("library")
    hello = READER.replace("default-provider: library", "content: books").split("  network:")[0]
    sys_.publish("hello", "1.0", extra=hello)
    sys_.publish_snap("reader")
    with sys_.o.state:
        first, second = sys_.sm.install("reader"), sys_.sm.install("hello")  # two changes, run side by side
    sys_.o.settle(60)
    with sys_.o.state:
        assert first.status is D and second.status is D, (first.err(), second.err())
    assert {k for k in sys_.conns() if k.endswith("library:books")} == {"reader:books library:books",
                                                                         "hello:books library:books"}
    assert_profiles_follow_the_state(sys_)
    assert [c["plug"] for c in sys_.profile("library")["connections"]] == ["hello:books", "reader:books"]  # type: ignore[index]
    assert sys_.status(sys_.act("disconnect", "library", "books")) is D  # every connection of the slot
    assert {k for k in sys_.conns() if not sys_.conns()[k]["undesired"]} == {
        "reader:home system:home", "reader:network system:network"}
    assert_profiles_follow_the_state(sys_)
    assert sys_.status(sys_.run(lambda sm: sm.disable("reader"))) is D
    assert_profiles_follow_the_state(sys_)
    assert sys_.status(sys_.run(lambda sm: sm.enable("reader"))) is D
    assert_profiles_follow_the_state(sys_)
