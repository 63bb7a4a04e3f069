# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap format: snap.yaml checks, hostile archives, deterministic pack."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from managers import InvalidSnapError
from managers.snap import Limits, SnapFile, SnapInfo, pack, read_info, valid_snap_name
from managers.snap.info import service_order

YAML = "name: hello\nversion: '1.0'\nsummary: Hi\napps:\n  hello:\n    command: bin/hello\n"


@pytest.mark.parametrize(("name", "ok"), [
    ("hello", True), ("a1", True), ("hello-world", True), ("1a", True), ("a" * 40, True),
    ("a", False), ("a" * 41, False), ("Hello", False), ("-hello", False), ("hello-", False), ("hel--lo", False),
    ("12", False), ("hello_world", False), ("héllo", False), ("", False),
])
def test_snap_names(name: str, ok: bool) -> None:
    assert valid_snap_name(name) is ok


SVC = "name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: x\n    daemon: simple\n"


@pytest.mark.parametrize(("text", "message"), [
    ("name: hello\n", "field version: missing"),
    ("version: '1'\nsummary: s\n", "field name: missing"),
    ("name: Hello\nversion: '1'\nsummary: s\n", "field name: 'Hello' is not a valid snap name"),
    ("name: hello\nversion: 1.0\nsummary: s\n", "field version: 1.0 must be text"),
    ("name: hello\nversion: '-1'\nsummary: s\n", "field version: '-1' is not a valid version"),
    ("name: hello\nversion: '1'\n", "field summary: missing"),
    ("name: hello\nversion: '1'\nsummary: " + "x" * 129 + "\n", "field summary: must be one line"),
    ("name: hello\nversion: '1'\nsummary: s\ncolour: red\n", "field colour: unknown field"),
    ("name: hello\nversion: '1'\nsummary: s\napps: [a]\n", "field apps: must be a mapping"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a_b:\n    command: x\n", "field apps.a_b: 'a_b' is not"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    daemon: simple\n", "field apps.a.command: missing"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: ../x\n", "a relative path inside"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: /bin/sh\n", "a relative path inside"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: 'x; rm -rf'\n", "must be text of"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: x\n    daemon: forever\n",
     "field apps.a.daemon: 'forever' is not one of"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: x\n    deamon: simple\n",
     "field apps.a.deamon: unknown field"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  Net: network\n", "field plugs.Net: 'Net' is not a valid"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    interface: Bad\n", "field plugs.p.interface"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    when: 2020-01-01\n",
     "field plugs.p.when: date values are not allowed"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  x: network\nslots:\n  x: network\n",
     "field slots.x: a plug and a slot cannot have the same name"),
    ("a: &x [1]\nb: *x\n", "aliases"),
    (SVC + "    restart-condition: sometimes\n", "field apps.a.restart-condition: 'sometimes' is not one of"),
    (SVC + "    restart-delay: 10\n", "field apps.a.restart-delay: 10 is not a duration"),
    (SVC + "    stop-timeout: 2d\n", "field apps.a.stop-timeout: '2d' is not a duration"),
    (SVC + "    stop-timeout: 25h\n", "field apps.a.stop-timeout: '25h' is longer than a day"),
    (SVC + "    install-mode: maybe\n", "field apps.a.install-mode: 'maybe' is not one of enable, disable"),
    (SVC + "    after: [b]\n", "field apps.a.after: 'b' is not an app of the snap"),
    (SVC + "    after: b\n", "field apps.a.after: must be a list of app names"),
    (SVC + "    before: [a]\n", "field apps.a.before: a service cannot be ordered against itself"),
    (SVC + "    after: [c]\n  c:\n    command: x\n", "field apps.a.after: 'c' is not a service"),
    (SVC + "    after: [c]\n  c:\n    command: x\n    daemon: simple\n    after: [a]\n",
     "field apps: services a, c are ordered in a cycle"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: x\n    restart-delay: 1s\n",
     "field apps.a.restart-delay: only a service (an app with daemon:) may have it"),
    ("name: [unclosed\n", "it is not valid YAML"),
    ("- a list\n", "it must be a mapping of fields"),
])
def test_snap_yaml_errors_name_the_file_and_field(text: str, message: str) -> None:
    with pytest.raises(InvalidSnapError) as e:
        SnapInfo.from_yaml(text, "meta/snap.yaml in x.snap")
    assert str(e.value).startswith("invalid meta/snap.yaml in x.snap: ")
    assert message in str(e.value)


def test_snap_yaml_fields() -> None:
    info = SnapInfo.from_yaml(
        "name: hello\nversion: '1.0+git~1'\nsummary: '  Hi  '\ndescription: Long\n"
        "apps:\n  hello:\n    command: bin/hello --flag $SNAP_DATA\n  srv:\n    command: bin/srv\n"
        "    daemon: simple\nplugs:\n  network:\n  files: system-files\n  data:\n    interface: content\n"
        "    target: $SNAP/data\n    read: [a, b]\nslots:\n  shared:\n    interface: content\n    write: [x]\n")
    assert (info.name, info.version, info.summary, info.description) == ("hello", "1.0+git~1", "Hi", "Long")
    assert [a.name for a in info.services] == ["srv"]
    assert info.apps["hello"].executable == "bin/hello"
    assert {n: p.interface for n, p in info.plugs.items()} == {"network": "network", "files": "system-files",
                                                               "data": "content"}
    assert info.plugs["data"].attrs == {"target": "$SNAP/data", "read": ["a", "b"]}
    assert info.slots["shared"].attrs == {"write": ["x"]}
    again = SnapInfo.from_dict(info.with_side(revision="3", snap_id="a" * 32).to_dict())
    assert again == info.with_side(revision="3", snap_id="a" * 32)
    with pytest.raises(InvalidSnapError, match="more than the limit"):
        SnapInfo.from_yaml("description: " + "x" * 70000)


# -- hostile archives ---------------------------------------------------------------------------------


def entry(z: zipfile.ZipFile, name: str, data: bytes = b"", mode: int = stat.S_IFREG | 0o644) -> None:
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.create_system = 3
    zi.external_attr = mode << 16
    z.writestr(zi, data, compress_type=zipfile.ZIP_DEFLATED)


def archive(path: Path, *extra: tuple[Any, ...], yaml: str = YAML, with_program: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        if yaml:
            entry(z, "meta/snap.yaml", yaml.encode())
        if with_program:
            entry(z, "bin/hello", b"#!/bin/sh\n", stat.S_IFREG | 0o755)
        for e in extra:
            entry(z, *e)
    return path


LINK = stat.S_IFLNK | 0o777
HOSTILE: list[tuple[str, tuple[tuple[Any, ...], ...], dict[str, Any], str]] = [
    ("dotdot", (("../evil", b"x"),), {}, "has a '..' in its path"),
    ("dotdot-inside", (("meta/../../evil", b"x"),), {}, "has a '..' in its path"),
    ("absolute", (("/etc/evil", b"x"),), {}, "has an absolute path"),
    ("backslash", (("..\\evil", b"x"),), {}, "backslash"),
    ("empty-part", (("a//b", b"x"),), {}, "empty or '.' part"),
    ("dot-part", (("./a", b"x"),), {}, "empty or '.' part"),
    ("symlink-out", (("link", b"../../etc", LINK),), {}, "points outside the snap"),
    ("symlink-absolute", (("link", b"/etc/passwd", LINK),), {}, "points to the absolute path"),
    ("symlink-chain-out", (("a/up", b"..", LINK), ("b", b"a/up/..", LINK)), {}, "points outside the snap"),
    ("symlink-loop", (("x", b"y", LINK), ("y", b"x", LINK)), {}, "points outside the snap"),
    ("below-symlink", (("d", b"bin", LINK), ("d/x", b"x")), {}, "is below 'd', which is a link"),
    ("below-file", (("f", b"x"), ("f/x", b"x")), {}, "is below 'f', which is a file"),
    ("char-device", (("dev", b"", stat.S_IFCHR | 0o600),), {}, "is a character device"),
    ("block-device", (("dev", b"", stat.S_IFBLK | 0o600),), {}, "is a block device"),
    ("fifo", (("fifo", b"", stat.S_IFIFO | 0o600),), {}, "is a FIFO"),
    ("socket", (("sock", b"", stat.S_IFSOCK | 0o600),), {}, "is a socket"),
    ("duplicate", (("bin/hello", b"again", stat.S_IFREG | 0o755),), {}, "appears twice"),
    ("no-snap-yaml", (), {"yaml": ""}, "it has no meta/snap.yaml"),
    ("snap-yaml-symlink", (("meta/snap.yaml", b"../x", LINK),), {"yaml": ""}, "meta/snap.yaml is a link"),
    ("bad-snap-yaml", (), {"yaml": "name: [\n"}, "it is not valid YAML"),
    ("missing-program", (), {"with_program": False}, "its command 'bin/hello' is not in the snap"),
    ("program-not-executable", (("bin/hello", b"x", stat.S_IFREG | 0o644),), {"with_program": False},
     "is not an executable file"),
]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(("extra", "kw", "message"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path: Path, extra: Any, kw: Any,
                                                             message: str) -> None:
    path = archive(tmp_path / "evil.snap", *extra, **kw)
    target = tmp_path / "out" / "target"
    target.parent.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidSnapError) as e, SnapFile(path) as snap:
        snap.info()
        snap.extract(target)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_size_bombs_are_refused(tmp_path: Path) -> None:
    zeros = b"\0" * (4 * 1024 * 1024)
    path = archive(tmp_path / "bomb.snap", ("big", zeros))
    assert path.stat().st_size < 100_000, "a compressed bomb"
    with pytest.raises(InvalidSnapError, match="more than the limit of 1048576 bytes"):
        SnapFile(path, Limits(max_size=1024 * 1024))
    with pytest.raises(InvalidSnapError, match="more than the limit of 10"):
        SnapFile(archive(tmp_path / "many.snap", *[(f"f{i}", b"x") for i in range(10)]), Limits(max_entries=10))
    # A member whose header lies about its size is stopped while it is extracted.
    liar = tmp_path / "liar.snap"
    archive(liar, ("big", zeros))
    data = bytearray(liar.read_bytes())
    with zipfile.ZipFile(liar) as z:
        zi = z.getinfo("big")
    # Patch the uncompressed size in the central directory and the local header to 10 bytes.
    size = zi.file_size.to_bytes(4, "little")
    assert data.count(size) >= 2
    data = data.replace(size, (10).to_bytes(4, "little"))
    liar.write_bytes(bytes(data))
    target = tmp_path / "liar-out"
    with pytest.raises(InvalidSnapError) as e, SnapFile(liar) as snap:
        snap.extract(target)
    assert "holds more than it declares" in str(e.value) or "cannot extract" in str(e.value)
    big = target / "big"
    assert not big.exists() or big.stat().st_size <= 10


def test_not_a_zip_and_encrypted(tmp_path: Path) -> None:
    (tmp_path / "junk.snap").write_bytes(b"not a zip at all")
    with pytest.raises(InvalidSnapError, match="it is not a snap \\(zip\\) file"):
        SnapFile(tmp_path / "junk.snap")
    with pytest.raises(InvalidSnapError, match="no such file"):
        SnapFile(tmp_path / "nothere.snap")
    path = archive(tmp_path / "enc.snap")
    data = bytearray(path.read_bytes())
    # Set the "encrypted" flag bit of every central directory entry.
    i = 0
    while (i := data.find(b"PK\x01\x02", i)) >= 0:
        data[i + 8] |= 0x1
        i += 4
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidSnapError, match="is encrypted"):
        SnapFile(path)


def test_extract_keeps_good_symlinks_and_modes(tmp_path: Path) -> None:
    path = archive(tmp_path / "ok.snap", ("bin/hi", b"hello", LINK), ("share/", b"", stat.S_IFDIR | 0o700),
                   ("share/doc", b"doc", stat.S_IFREG | 0o4777), ("lib/a/b", b"b"), ("up", b"lib/a/../a", LINK))
    with SnapFile(path) as snap:
        assert snap.info().name == "hello"
        snap.extract(tmp_path / "out")
    out = tmp_path / "out"
    assert os.readlink(out / "bin/hi") == "hello"
    assert stat.S_IMODE((out / "share/doc").stat().st_mode) == 0o755  # no setuid
    assert stat.S_IMODE((out / "share").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "bin/hello").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "lib/a/b").stat().st_mode) == 0o644
    assert (out / "up" / "b").read_text() == "b"
    with pytest.raises(InvalidSnapError, match="File exists"), SnapFile(path) as snap:
        snap.extract(out)


# -- pack -------------------------------------------------------------------------------------------


def sample_dir(base: Path) -> Path:
    d = base / "hello"
    (d / "meta").mkdir(parents=True)
    (d / "bin").mkdir()
    (d / "meta" / "snap.yaml").write_text(YAML)
    (d / "bin" / "hello").write_text("#!/bin/sh\necho hi\n")
    os.chmod(d / "bin" / "hello", 0o755)
    (d / "empty").mkdir()
    os.symlink("hello", d / "bin" / "hi")
    return d


def test_pack_is_deterministic(tmp_path: Path) -> None:
    d = sample_dir(tmp_path)
    first = pack(d, tmp_path)
    assert first.name == "hello_1.0.snap"
    data = first.read_bytes()
    os.utime(d / "bin" / "hello", (1, 1))
    os.chmod(d / "meta" / "snap.yaml", 0o600)
    second = pack(d, tmp_path / "again.snap")
    assert second.read_bytes() == data
    info = read_info(second)
    assert info.name == "hello"
    with zipfile.ZipFile(second) as z:
        names = z.namelist()
        assert names == sorted(names)
        assert {zi.date_time for zi in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "empty/" in names
    with SnapFile(second) as snap:
        assert snap.members["bin/hi"].target == "hello"
        assert snap.members["bin/hello"].mode == 0o755
        assert snap.members["meta/snap.yaml"].mode == 0o644


def test_pack_refuses_what_install_would(tmp_path: Path) -> None:
    d = sample_dir(tmp_path)
    os.mkfifo(d / "fifo")
    with pytest.raises(InvalidSnapError, match="fifo is not a file, directory or symlink"):
        pack(d, tmp_path)
    (d / "fifo").unlink()
    os.symlink("../../etc/passwd", d / "escape")
    with pytest.raises(InvalidSnapError, match="points outside the snap"):
        pack(d, tmp_path)
    assert list(tmp_path.glob("*.snap")) == [] and list(tmp_path.glob(".*partial")) == []
    (d / "escape").unlink()
    (d / "meta" / "snap.yaml").write_text("name: hello\n")
    with pytest.raises(InvalidSnapError, match="field version: missing"):
        pack(d, tmp_path)
    with pytest.raises(InvalidSnapError, match="not a directory"):
        pack(tmp_path / "nothere", tmp_path)


def test_service_fields_are_read_and_kept() -> None:
    info = SnapInfo.from_yaml(
        "name: hello\nversion: '1'\nsummary: s\napps:\n  web:\n    command: bin/web\n    daemon: simple\n"
        "    restart-condition: always\n    restart-delay: 1m30s\n    stop-timeout: 500ms\n    after: [db]\n"
        "  db:\n    command: bin/db\n    daemon: notify\n    before: [web]\n    install-mode: disable\n")
    web = info.apps["web"]
    assert (web.restart_condition, web.restart_delay, web.stop_timeout, web.after) == ("always", 90.0, 0.5, ("db",))
    assert info.apps["db"].install_mode == "disable"
    assert SnapInfo.from_dict(info.to_dict()) == info
    assert [a.name for a in service_order(list(info.apps.values()))] == ["db", "web"]
