# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap format: snap.yaml checks, hostile archives, deterministic pack."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from managers import InvalidSnapError
from managers.snap import Limits, SnapFile, SnapInfo, pack, read_info, valid_snap_name
from managers.snap.info import service_order
from tests.support.helpers import REPO, mount_namespace

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
    ("name: bin\nversion: '1'\nsummary: s\n", "field name: 'bin' is reserved: <root>/snap/bin holds the command"),
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
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: 'x `id`'\n", "must be text of"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: $1\n",
     "field apps.a.command: '$1' must be a relative path inside the snap"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: $SNAP/bin/x\n", "a relative path inside"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: bin/x $1\n",
     "field apps.a.command: '$1' is not a variable a command may name ($SNAP, $SNAP_COMMON"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: bin/x $HOME/x\n", "'$HOME' is not a var"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: bin/x $SNAP_DATAX\n", "'$SNAP_DATAX' is not"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: bin/x a$\n", "'$' is not a variable"),
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
    ("name: hello\nversion: '1'\nsummary: s\nname: evil\n", "key 'name' is given twice"),
    ("name: hello\nversion: '1'\nsummary: s\napps:\n  a:\n    command: bin/a\n  a:\n    command: bin/b\n",
     "key 'a' is given twice"),
    ("name: hello\nversion: '1'\nsummary: s\n<<: {name: evil}\n", "merge keys (<<) are not allowed"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: " + "[" * 5000 + "]" * 5000 + "\n",
     "it nests deeper than 32 levels"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
     "it nests deeper than 32 levels"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: " + "9" * 5000 + "\n",
     "the number 999999999999999999999999... is too long"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: " + "1:" * 20 + "1\n", "is too long"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: 9223372036854775808\n",
     "the number 9223372036854775808 does not fit in 64 bits"),
    ("name: hello\nversion: '1'\nsummary: s\nplugs:\n  p:\n    a: 1.0e+99999\n", "numbers must be finite"),
    ("name: hello\nversion: " + "9" * 5000 + "\nsummary: s\n", "is too long"),
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
    ("symlink-loop", (("x", b"y", LINK), ("y", b"x", LINK)), {}, "is part of a loop of symlinks"),
    ("symlink-self", (("x", b"x/a", LINK),), {}, "is part of a loop of symlinks"),
    ("symlink-deep-out", (("a/b", b"../c", LINK), ("c", b"d/../../..", LINK)), {}, "points outside the snap"),
    ("newline-name", (("bin/a\nb", b"x"),), {}, "has a control character (NUL, line break...) in its name"),
    ("cr-name", (("bin/a\rb", b"x"),), {}, "has a control character"),
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


# -- the check is bounded by the limits, whatever the archive holds ---------------------------------------


def chain(k: int, under: str = "", twice: bool = True) -> list[tuple[Any, ...]]:
    """chain is k+1 symlinks, each going through the next twice (l0 -> l1/l1, ..., lK -> .), or once."""
    d = f"{under}/" if under else ""
    return [(f"{d}l{i}", (f"l{i + 1}/l{i + 1}" if twice else f"l{i + 1}").encode(), LINK)
            for i in range(k)] + [(f"{d}l{k}", b".", LINK)]


# Resolving each link afresh takes hours at 30 links that go through the next twice: these tests fail by
# their timeout without the memo.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [30, 300])
def test_a_chain_of_symlinks_through_each_other_is_refused_quickly(tmp_path: Path, k: int) -> None:
    for name, links in (("chain", chain(k)), ("backwards", list(reversed(chain(k))))):
        path = archive(tmp_path / f"{name}.snap", *links)
        with pytest.raises(InvalidSnapError, match="goes through more than 40 symlinks \\(the kernel's limit\\)") \
                as e:
            SnapFile(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.timeout(60)
def test_the_chain_repeated_costs_steps_in_proportion_to_the_links(tmp_path: Path) -> None:
    twice = [e for n in range(100) for e in chain(30, f"d{n}")]  # 3,100 links
    with pytest.raises(InvalidSnapError, match="goes through more than 40 symlinks"):
        SnapFile(archive(tmp_path / "twice.snap", *reversed(twice)))
    once = [e for n in range(100) for e in chain(30, f"d{n}", twice=False)]
    path = archive(tmp_path / "once.snap", *once)
    with SnapFile(path) as snap:
        assert snap.info().name == "hello"
        assert snap.link_steps <= 2 * len(once), "each link is resolved once"
    # Past the archive's budget of resolution steps it is refused, not slow.
    with pytest.raises(InvalidSnapError, match="past the limit of 1000 symlink resolution steps"):
        SnapFile(path, Limits(max_link_steps=1000))
    longest = archive(tmp_path / "forty.snap", *chain(39, twice=False))
    with SnapFile(longest) as snap:
        snap.extract(tmp_path / "forty")
    # The kernel resolves what the check accepted, to the same place, and refuses one link more.
    assert os.path.samefile(tmp_path / "forty" / "l0", tmp_path / "forty")
    os.symlink("l0", tmp_path / "forty" / "l-1")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        os.stat(tmp_path / "forty" / "l-1")
    with pytest.raises(InvalidSnapError, match="goes through more than 40 symlinks"):
        SnapFile(archive(tmp_path / "forty-one.snap", *chain(40, twice=False)))


class _Spy(zipfile.ZipFile):
    """_Spy is zipfile.ZipFile, counting the archives whose index it built (opened to read)."""

    built = 0

    def __init__(self, file: Any, mode: str = "r", *args: Any, **kw: Any) -> None:
        if mode == "r":
            type(self).built += 1
        super().__init__(file, mode, *args, **kw)


def test_the_index_is_bounded_before_zipfile_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import managers.snap.container as container

    monkeypatch.setattr(container.zipfile, "ZipFile", _Spy)
    many = archive(tmp_path / "many.snap", *[(f"f{i}", b"") for i in range(150)])
    with pytest.raises(InvalidSnapError, match="it has 152 entries, more than the limit of 100"):
        SnapFile(many, Limits(max_entries=100))
    with pytest.raises(InvalidSnapError, match=r"its index \(central directory\) is \d+ bytes, more than the "
                                               "limit of 4096"):
        SnapFile(many, Limits(max_index=4096))
    # The end record's count lies (says 2): the entries are counted as the directory is read.
    data = bytearray(many.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8:eocd + 12] = (2).to_bytes(2, "little") * 2
    many.write_bytes(bytes(data))
    with pytest.raises(InvalidSnapError, match="more than the limit of 100 entries"):
        SnapFile(many, Limits(max_entries=100))
    assert _Spy.built == 0, "zipfile built an index the limits refuse"
    with SnapFile(archive(tmp_path / "ok.snap")) as snap:
        assert snap.info().name == "hello"
    assert _Spy.built == 1


def test_a_name_with_nul_is_refused_though_zipfile_cuts_it(tmp_path: Path) -> None:
    path = archive(tmp_path / "nul.snap", ("bin/helloXevil", b"x"))
    data = path.read_bytes()
    assert data.count(b"bin/helloXevil") == 2  # the local header and the central directory
    path.write_bytes(data.replace(b"bin/helloXevil", b"bin/hello\x00evil"))
    with zipfile.ZipFile(path) as z:
        assert "bin/hello\x00evil" not in z.namelist()  # zipfile shows the name cut at NUL
    with pytest.raises(InvalidSnapError, match=r"has a control character \(NUL, line break\.\.\.\) in its name"):
        SnapFile(path)


def test_the_path_limit_counts_the_prefix_of_the_system_root(tmp_path: Path) -> None:
    from managers.snapstate.backend import Backend

    long_name = "/".join(["d" * 200] * 12)  # 2,411 bytes: fits in 4096 alone
    path = archive(tmp_path / "long.snap", (long_name + "/f", b"x"))
    with SnapFile(path) as snap:
        assert snap.members[long_name + "/f"].size == 1
    root = tmp_path / ("r" * 250) / ("o" * 250) / ("o" * 250) / ("t" * 250) / ("s" * 250) / ("s" * 250) / ("s" * 250)
    backend = Backend(root)
    assert backend.limits.prefix >= len(str(root)) + len("/snap/") + 40 + 1
    with pytest.raises(InvalidSnapError, match="has a path that is too long"):
        SnapFile(path, backend.limits)
    # Extracting checks the real target too, before writing anything.
    deep = tmp_path / ("x" * 250) / ("y" * 250) / ("z" * 250) / ("w" * 250) / ("v" * 250) / ("u" * 250) / ("t" * 250)
    deep.parent.mkdir(parents=True)
    with SnapFile(path) as snap, pytest.raises(InvalidSnapError, match="would be longer than 4096 bytes there"):
        snap.extract(deep)
    assert not deep.exists()


FREE_SPACE = r"""
import json, os, subprocess, sys, zipfile
from pathlib import Path
from managers import ManagerError
from managers.snap import SnapFile
mnt, bomb, small = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
out = {}
with SnapFile(bomb) as snap:
    out["declared"] = snap.declared_size()
    try:
        snap.extract(mnt / "bomb")
    except ManagerError as e:
        out["error"] = str(e)
out["after-bomb"] = sorted(os.listdir(mnt))
with SnapFile(small) as snap:
    snap.extract(mnt / "small")
out["after-small"] = sorted(os.listdir(mnt))
print(json.dumps(out))
"""


def test_extraction_is_refused_when_the_declared_size_does_not_fit(tmp_path: Path) -> None:
    cmd = mount_namespace()
    if cmd is None:
        pytest.skip("needs unshare and the right to make a mount namespace (root, or user namespaces)")
    bomb = archive(tmp_path / "bomb.snap", ("big", b"\0" * (32 * 1024 * 1024)))
    assert bomb.stat().st_size < 100_000
    small = archive(tmp_path / "small.snap")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([*cmd, sys.executable, "-c", FREE_SPACE, str(mnt), str(bomb), str(small)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    if proc.returncode != 0 and "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["declared"] > 32 * 1024 * 1024
    assert out["error"].startswith(f"cannot extract snap {bomb} into {mnt}/bomb: it needs ")
    assert "are free" in out["error"]
    assert out["after-bomb"] == [], "nothing is written before the space is known to be there"
    assert out["after-small"] == ["small"]


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


def test_pack_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    d = sample_dir(tmp_path)
    out = tmp_path / "public"
    out.mkdir()
    victims = []
    # Links planted where the output and a predictable temporary name would go.
    for name in ("hello_1.0.snap", ".hello_1.0.snap.partial", ".hello_1.0.snap.tmp", "hello_1.0.snap.partial"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious\n")
        os.symlink(victim, out / name)
        victims.append(victim)
    made = pack(d, out)
    assert made == out / "hello_1.0.snap"
    assert not made.is_symlink() and read_info(made).name == "hello"
    assert [v.read_text() for v in victims] == ["precious\n"] * len(victims)
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == ["hello_1.0.snap"]
    assert stat.S_IMODE(made.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


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
