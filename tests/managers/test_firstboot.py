# SPDX-License-Identifier: GPL-3.0-or-later
"""FirstBoot: the sample seed, seeding order, broken seeds refused with nothing changed, seeding twice,
a failed seed retried, and a real SIGKILL in the middle of seeding."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import ChangeConflictError, Status
from engine.testing import FakeClock
from managers import AlreadySeededError, InvalidSeedError, ManagerError, SystemOverlord
from managers.asserts import PrivateKey, decode_stream, file_sha3_384
from managers.asserts.build import snap_id_for, snap_revision
from managers.assertstate import AssertionBook
from managers.snap import pack
from overlord.samples import SEED, SNAPS, TEST_KEYS, build_seed, sample_keys
from tests.managers.test_snap_crash import outcome
from tests.support.crash_workload import ForkServer
from tests.support.system import tree


@pytest.fixture
def system(tmp_path: Path, clock: FakeClock) -> Iterator[SystemOverlord]:
    o = SystemOverlord(tmp_path / "state", tmp_path / "root", trusted_key=TEST_KEYS / "root.pub.pem", clock=clock,
                       synchronous="NORMAL")
    yield o
    o.stop()


def copy_seed(tmp: Path, name: str = "seed") -> Path:
    d = tmp / name
    shutil.copytree(SEED, d)
    return d


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_sample_seed_in_the_repository_is_what_the_script_builds(tmp_path: Path) -> None:
    built = build_seed(tmp_path / "seed", *sample_keys())
    assert files(built) == files(SEED), "overlord/samples/seed is stale: run python -m overlord.samples.make_seed"
    assert "TEST" in (TEST_KEYS / "README.md").read_text()


def test_seeding_installs_every_snap_in_one_change_providers_first(system: SystemOverlord) -> None:
    o = system
    with o.state:
        chg = o.first_boot.seed(SEED)
        assert chg.kind == "seed" and chg.summary == "Initialize system state"
        assert chg.get("snap-names") == ["library", "reader"]  # seed.yaml lists reader first
        tasks = chg.tasks()
        mark = tasks[-1]
        assert mark.kind == "mark-seeded" and mark.lanes() == [0]  # in no lane
        by_lane: dict[int, list[Any]] = {}
        for t in tasks[:-1]:
            (lane,) = t.lanes()
            by_lane.setdefault(lane, []).append(t)
        first, second = (by_lane[k] for k in sorted(by_lane))
        assert first[0].get("snap-setup")["name"] == "library"
        assert second[0].get("snap-setup")["name"] == "reader"
        assert second[0].wait_tasks() == [first[-1]], "reader's install does not wait for library's"
        assert {t.id for t in mark.wait_tasks()} == {first[-1].id, second[-1].id}
        assert [t.kind for t in first] == ["prerequisites", "prepare-snap", "validate-snap", "mount-snap",
                                           "copy-snap-data", "setup-profiles", "link-snap", "auto-connect",
                                           "run-hook", "start-snap-services", "cleanup", "run-hook"]
        assert not o.first_boot.seeded
    o.settle(60)
    with o.state:
        assert chg.status is Status.DONE, chg.err()
        assert o.first_boot.seeded and o.state.get("seeded") is True
        assert [s.name for s in o.snap_manager.snaps()] == ["library", "reader"]
        assert o.snap_manager.info("reader").info.publisher_id == "acme"
        conns = o.state.get("conns")
    assert conns == {"reader:books library:books": {"interface": "content", "auto": True, "undesired": False},
                     "reader:network system:network": {"interface": "network", "auto": True, "undesired": False}}
    profile = json.loads((o.root_dir / "var/lib/profiles/reader").read_text())
    assert profile["mounts"] == [{"source": str((o.root_dir / "snap/library/1/books").absolute()),
                                  "target": str((o.root_dir / "var/snap/reader/1/books").absolute()), "mode": "ro"}]
    assert SEED.joinpath("snaps", "reader_1.0.snap").is_file(), "seeding must not consume the seed"


def test_seeding_a_seeded_system_does_nothing_and_says_so(system: SystemOverlord) -> None:
    o = system
    with o.state:
        first = o.first_boot.seed(SEED)
        with pytest.raises(ChangeConflictError, match=f"change {first.id} is seeding it already"):
            o.first_boot.seed(SEED)
    o.settle(60)
    with o.state:
        assert first.status is Status.DONE, first.err()
        n = len(o.state.changes())
        with pytest.raises(AlreadySeededError, match=f"it is seeded already \\(by change {first.id}\\); nothing"):
            o.first_boot.seed(SEED)
        assert len(o.state.changes()) == n


def _resign(seed: Path, name: str, yaml_edit: Callable[[str], str], tmp: Path) -> None:
    """_resign replaces a snap of the seed with an edited copy, with a snap-revision signed by acme."""
    src = tmp / f"src-{name}"
    shutil.copytree(SNAPS / f"{name}-1.0", src)
    y = src / "meta" / "snap.yaml"
    y.write_text(yaml_edit(y.read_text()))
    (seed / "snaps" / f"{name}_1.0.snap").unlink()
    snap = pack(src, seed / "snaps" / f"{name}_1.0.snap")
    digest, size = file_sha3_384(snap)
    _, acme = sample_keys()
    decl = _stream(seed, name)[0]
    rev = snap_revision(acme, "acme", digest, size, snap_id_for(name), 1, "acme", timestamp="2025-01-01T00:00:00Z")
    (seed / "assertions" / f"{name}.assert").write_text(f"{decl.text}\n{rev.text}")


def _stream(seed: Path, name: str) -> list[Any]:
    return decode_stream((seed / "assertions" / f"{name}.assert").read_text())


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


BROKEN: dict[str, tuple[Callable[[Path, Path], Any], str]] = {
    "no seed.yaml": (lambda s, t: (s / "seed.yaml").unlink(), "seed.yaml is missing or not a regular file"),
    "unknown field": (lambda s, t: (s / "seed.yaml").write_text("snaps: []\nchannel: stable\n"),
                      "seed.yaml must be a mapping with one field, snaps"),
    "path in file": (lambda s, t: (s / "seed.yaml").write_text("snaps:\n  - {name: reader, file: ../x.snap}\n"),
                     "file '../x.snap' must be the name of a .snap file in snaps/"),
    "listed twice": (lambda s, t: (s / "seed.yaml").write_text(
        "snaps:\n  - {name: reader, file: reader_1.0.snap}\n  - {name: reader, file: reader_1.0.snap}\n"),
        "snap 'reader' is listed twice"),
    "duplicate key": (lambda s, t: (s / "seed.yaml").write_text(
        "snaps:\n  - {name: reader, file: reader_1.0.snap}\nsnaps:\n  - {name: library, file: library_1.0.snap}\n"),
        "seed.yaml is not valid YAML (key 'snaps' is given twice"),
    "duplicate key in an entry": (lambda s, t: (s / "seed.yaml").write_text(
        "snaps:\n  - {name: reader, file: reader_1.0.snap, name: library}\n"), "key 'name' is given twice"),
    "deep nesting": (lambda s, t: (s / "seed.yaml").write_text("snaps: " + "[" * 5000 + "]" * 5000 + "\n"),
                     "seed.yaml is not valid YAML (it nests deeper than 32 levels"),
    "huge number": (lambda s, t: (s / "seed.yaml").write_text("snaps:\n  - {name: " + "9" * 5000 + ", file: x}\n"),
                    "seed.yaml is not valid YAML (the number 999999999999999999999999... is too long"),
    "missing file": (lambda s, t: (s / "snaps" / "library_1.0.snap").unlink(),
                     "snaps/library_1.0.snap (snap 'library') is missing"),
    "wrong name": (lambda s, t: (s / "seed.yaml").write_text(
        "snaps:\n  - {name: reader, file: library_1.0.snap}\n  - {name: library, file: reader_1.0.snap}\n"),
        "snaps/library_1.0.snap is snap 'library', seed.yaml says 'reader'"),
    "not a snap": (lambda s, t: (s / "snaps" / "library_1.0.snap").write_bytes(b"not a zip"), "library_1.0.snap"),
    "file changed": (lambda s, t: (s / "snaps" / "reader_1.0.snap").write_bytes(
        (s / "snaps" / "reader_1.0.snap").read_bytes() + b"\0"),
        "snap 'reader' (reader_1.0.snap): no snap-revision assertion for its sha3-384"),
    "no declaration": (lambda s, t: (s / "assertions" / "library.assert").write_text(_stream(s, "library")[1].text),
        "it needs snap-declaration 16/f741f7acdb799eb29905ecfd3330430d, which is not known"),
    "no assertions": (lambda s, t: shutil.rmtree(s / "assertions"), "it has no assertions/ directory"),
    "bad signature": (lambda s, t: _flip(s / "assertions" / "acme.assert", -10),
                      "its signature does not verify with key"),
    "untrusted root": (lambda s, t: (shutil.rmtree(s), build_seed(s, PrivateKey.generate(), sample_keys()[1])),
                       "no account-key for its signing key"),
    "provider missing": (lambda s, t: (s / "seed.yaml").write_text(
        "snaps:\n  - {name: reader, file: reader_1.0.snap}\n"),
                         "snap 'reader' plug 'books' needs content 'books' from snap 'library', which is neither in "
                         "the seed nor installed"),
    "provider offers other content": (lambda s, t: _resign(s, "library", lambda y: y.replace(
        "    read: [$SNAP/books]", "    content: music\n    read: [$SNAP/books]"), t),
        "needs content 'books' from snap 'library', which has no content slot offering it"),
    "bad attribute": (lambda s, t: _resign(s, "reader", lambda y: y.replace("/var/log/syslog", "/etc/shadow"), t),
                      "cannot install snap 'reader': plug 'logs' (system-files): attribute 'read': '/etc/shadow' "
                      "is never granted"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_seed_is_refused_whole_with_nothing_changed(system: SystemOverlord, tmp_path: Path,
                                                             case: str) -> None:
    o = system
    seed = copy_seed(tmp_path)
    breaker, message = BROKEN[case]
    breaker(seed, tmp_path)
    o.state_engine.start_up()
    before = tree(o.root_dir)
    with o.state, pytest.raises(InvalidSeedError) as e:
        o.first_boot.seed(seed)
    assert str(e.value).startswith(f"cannot seed the system from {seed}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    with o.state:
        assert o.state.changes() == [] and not o.first_boot.seeded
        assert AssertionBook(o.state).find("account") == []
    assert tree(o.root_dir) == before


def test_without_a_trusted_root_nothing_is_seeded(tmp_path: Path) -> None:
    o = SystemOverlord(tmp_path / "state", tmp_path / "root")
    try:
        with o.state, pytest.raises(InvalidSeedError, match="no trusted root key is configured"):
            o.first_boot.seed(SEED)
    finally:
        o.stop()


def test_a_failed_seed_leaves_the_system_unseeded_and_a_retry_finishes_it(system: SystemOverlord) -> None:
    o = system
    failures = ["reader"]

    def flaky(info: Any, current: Any) -> None:
        if info.name in failures:
            failures.remove(info.name)
            raise ManagerError(f"cannot mount snap {info.name!r}: injected failure")

    o.snap_manager.add_check_snap(flaky)
    with o.state:
        chg = o.first_boot.seed(SEED)
    o.settle(60)
    with o.state:
        assert chg.status is Status.ERROR
        err = chg.err()
        assert err is not None and "injected failure" in str(err)
        assert not o.first_boot.seeded
        assert [s.name for s in o.snap_manager.snaps()] == ["library"]  # its lane was done; reader's undone
        assert next(t for t in chg.tasks() if t.kind == "mark-seeded").status is Status.HOLD
        retry = o.first_boot.seed(SEED)
        assert retry.get("snap-names") == ["reader"]
    o.settle(60)
    with o.state:
        assert retry.status is Status.DONE, retry.err()
        assert o.first_boot.seeded
        assert [s.name for s in o.snap_manager.snaps()] == ["library", "reader"]
        assert "reader:books library:books" in o.state.get("conns")


# -- a real SIGKILL ------------------------------------------------------------------------------


def life(server: ForkServer, base: Path, mode: str, *, kill_at: tuple[str, int] | None = None) -> int | None:
    """life runs tests/support/snap_crash_child.py once (a fork of server, a process of its own); with kill_at
    (kind, n) it SIGKILLs it once the journal shows the n-th task of that kind Doing."""
    base.mkdir(parents=True, exist_ok=True)
    journal = base / "journal"
    journal.touch()
    start = journal.stat().st_size
    proc = server.run_module("tests.support.snap_crash_child", [mode, str(base)], base / "stderr",
                             {"SNAP_CRASH_SLOW": "0.01"})
    if kill_at is None:
        return proc.wait(120)
    kind, n = kill_at
    deadline = time.monotonic() + 60
    while journal.read_text()[start:].count(f"{kind} Doing") < n:
        assert proc.poll() is None, f"the child exited ({proc.returncode}) before {kind} #{n} ran"
        assert time.monotonic() < deadline, f"{kind} #{n} never ran"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the child ended before the kill in {kind} #{n}"
    return None


def _seeded(base: Path) -> tuple[Any, ...]:
    """_seeded is what a seeded system ended with; paths inside profiles are made relative to its root."""
    t, snaps, statuses = outcome(base)
    root = str((base / "root").absolute())
    profiles = {p.name: p.read_text().replace(root, "<root>") for p in (base / "root/var/lib/profiles").iterdir()}
    t = {k: v for k, v in t.items() if not k.startswith("var/lib/profiles/")}
    import sqlite3

    con = sqlite3.connect(base / "state" / "state.db")
    try:
        keys = dict(con.execute("SELECT key, value FROM state_data WHERE key IN ('conns', 'seeded')").fetchall())
        kinds = [r[0] for r in con.execute("SELECT kind FROM changes ORDER BY id")]
    finally:
        con.close()
    return t, snaps, statuses, profiles, keys, kinds


@pytest.mark.heavy
@pytest.mark.timeout(240)
def test_sigkill_in_the_middle_of_seeding_finishes_the_same_change_after_restart(tmp_path: Path) -> None:
    # The lives are forks of a process that imported the managers once (ForkServer): a fork costs
    # milliseconds where a new interpreter costs over a second.
    server = ForkServer(preload=("tests.support.snap_crash_child",))
    try:
        _seed_killed_and_resumed(server, tmp_path)
    finally:
        server.close()


def _seed_killed_and_resumed(server: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    shutil.copy(TEST_KEYS / "root.pub.pem", tmp_path / "keys" / "root.pub.pem")
    shutil.copytree(SEED, tmp_path / "seed")
    assert life(server, tmp_path / "ref", "seed") == 0, (tmp_path / "ref" / "stderr").read_text()[-2000:]
    ref = _seeded(tmp_path / "ref")
    assert ref[2] == ["Done"] and ref[5] == ["seed"] and json.loads(ref[4]["seeded"]) is True
    for kill_at in (("mount-snap", 1), ("auto-connect", 2), ("link-snap", 2)):
        base = tmp_path / f"kill-{kill_at[0]}-{kill_at[1]}"
        life(server, base, "seed", kill_at=kill_at)
        killed = _seeded(base)
        # The journal notes Doing before the claim commits: a kill may land on either side of it.
        assert killed[2] in (["Do"], ["Doing"]) and "seeded" not in killed[4], f"killed in {kill_at}: {killed[2]}"
        assert life(server, base, "resume") == 0, (base / "stderr").read_text()[-2000:]
        got = _seeded(base)
        assert got == ref, f"killed in {kill_at}: the seeded system differs"


def test_a_change_in_progress_on_a_seed_snap_is_a_conflict_before_anything_is_written(system: SystemOverlord) -> None:
    from managers.snapstate import SnapSetup

    o = system
    with o.state:
        chg = o.state.new_change("hold", "Hold reader", affects=["snap:reader"])  # what conflicts find
        t = o.state.new_task("hold", "Hold reader")
        t.set("snap-setup", SnapSetup("reader").to_dict())
        chg.add_task(t)
    with o.state, pytest.raises(ChangeConflictError, match=f"change {chg.id} \\(hold\\) is in progress"):
        o.first_boot.seed(SEED)
    with o.state:
        assert AssertionBook(o.state).find("account") == [] and [c.id for c in o.state.changes()] == [chg.id]
