# SPDX-License-Identifier: GPL-3.0-or-later
"""Publishing to a store: init, push (keys, declarations, revisions, channels), release, and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from managers import SnapNotFoundError, StoreError
from managers.asserts import PrivateKey, decode, file_sha3_384
from managers.asserts.build import account, account_key
from managers.snapstore import SnapStore
from tests.support.system import make_snap, tree


def visible(root: Path) -> dict[str, Any]:
    """visible is what readers of a store see: everything but the writer's lock and staging area."""
    return {k: v for k, v in tree(root).items() if not k.startswith((".lock", ".staging"))}


@pytest.fixture
def store(tmp_path: Path, root_key: PrivateKey) -> SnapStore:
    return SnapStore.init(tmp_path / "store", root_key_id=root_key.id, authority="root")


def test_init_makes_an_empty_store_and_refuses_other_directories(tmp_path: Path, store: SnapStore) -> None:
    assert sorted(visible(store.root)) == ["assertions", "index.yaml", "snaps", "store.yaml"]
    assert store.config() == {"format": 1, "root-key": store.config()["root-key"], "authority": "root"}
    assert store.names() == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="it is not empty and not a store"):
        SnapStore.init(tmp_path / "other")
    SnapStore.init(store.root)  # again: fine, keeps the root key
    assert store.config()["authority"] == "root"


def test_push_with_the_root_key_declares_the_snap(tmp_path: Path, store: SnapStore, root_key: PrivateKey) -> None:
    snap = make_snap(tmp_path, "hello", "1.0")
    ss = store.push(snap, key=root_key, channels=["stable", "edge"])
    assert (ss.name, ss.revision, ss.version) == ("hello", "1", "1.0")
    assert (ss.sha3_384, ss.size) == file_sha3_384(snap)
    decl = decode(store.assertion("snap-declaration", ("16", ss.snap_id)) or "")
    assert (decl.header("snap-name"), decl.header("publisher-id")) == ("hello", "root")
    rev = decode(store.assertion("snap-revision", (ss.sha3_384,)) or "")
    assert (rev.header("snap-revision"), rev.header("developer-id"), rev.sign_key_id) == ("1", "root", root_key.id)
    assert store.channels("hello") == {"latest/stable": "1", "latest/edge": "1"}
    with pytest.raises(StoreError, match="it is revision 1 of snap 'hello' already"):
        store.push(snap, key=root_key)
    ss2 = store.push(make_snap(tmp_path, "hello", "2.0"), key=root_key, channels=["beta"])
    assert ss2.revision == "2" and store.channel_revision("hello", "edge") == "1"
    assert store.channel_revision("hello", "stable") == "1"
    assert store.snap("hello", channel="beta").revision == "2"
    assert store.names() == ["hello"]


def test_push_with_a_developer_key_needs_the_declaration(tmp_path: Path, store: SnapStore, root_key: PrivateKey,
                                                        acme_key: PrivateKey) -> None:
    store.add_assertion(account(root_key, "root", "acme", "ACME Corp"))
    store.add_assertion(account_key(root_key, "root", "acme", acme_key.public_key))
    snap = make_snap(tmp_path, "hello", "1.0")
    before = visible(store.root)
    with pytest.raises(StoreError, match=r"cannot push hello_1\.0\.snap: the store has no snap-declaration for snap "
                                         "'hello'"):
        store.push(snap, key=acme_key, channels=["stable"])
    assert visible(store.root) == before
    with pytest.raises(StoreError, match="neither the store's root key"):
        store.push(snap, key=PrivateKey.generate())
    # the root declares it for acme (its first revision signed by the root), acme pushes the next ones
    store.push(snap, key=root_key, publisher="acme")
    ss = store.push(make_snap(tmp_path, "hello", "2.0"), key=acme_key, channels=["stable"])
    rev = decode(store.assertion("snap-revision", (ss.sha3_384,)) or "")
    assert (rev.authority_id, rev.header("developer-id"), rev.sign_key_id) == ("acme", "acme", acme_key.id)
    assert store.snap("hello").revision == "2"
    with pytest.raises(StoreError, match="publisher 'nobody' has no account"):
        store.push(make_snap(tmp_path, "world", "1.0"), key=root_key, publisher="nobody")


def test_a_revision_pushed_to_no_channel_is_offered_nowhere(tmp_path: Path, store: SnapStore,
                                                              root_key: PrivateKey) -> None:
    store.push(make_snap(tmp_path, "hello", "1.0"), key=root_key)
    assert store.channels("hello") == {} and store.revisions("hello") == [1]
    with pytest.raises(SnapNotFoundError, match="no revision is released there"):
        store.snap("hello")
    store.release("hello", "1", ["edge"])
    assert store.snap("hello", channel="edge").revision == "1"


def test_release_moves_channels(tmp_path: Path, store: SnapStore, root_key: PrivateKey) -> None:
    store.push(make_snap(tmp_path, "hello", "1.0"), key=root_key, channels=["stable"])
    store.push(make_snap(tmp_path, "hello", "2.0"), key=root_key)
    assert store.channels("hello") == {"latest/stable": "1"}  # pushed, released nowhere
    assert store.release("hello", "2", ["candidate", "2.0/edge"]) == {
        "latest/stable": "1", "latest/candidate": "2", "2.0/edge": "2"}
    assert store.snap("hello", channel="beta").revision == "2"  # beta follows candidate
    assert store.snap("hello", channel="2.0/edge").revision == "2"
    with pytest.raises(StoreError, match="its risk must be one of"):
        store.release("hello", "1", ["unstable"])
    with pytest.raises(Exception, match="cannot find revision 9"):
        store.release("hello", "9", ["stable"])


class Killed(BaseException):
    """Killed stands for the process dying at that call."""


@pytest.mark.parametrize("fn", ["os.replace", "write_synced", "os.unlink"])
def test_a_push_killed_at_any_step_leaves_the_store_as_it_was_or_done(
        tmp_path: Path, store: SnapStore, root_key: PrivateKey, monkeypatch: pytest.MonkeyPatch, fn: str) -> None:
    import managers.snapstore.directory as directory
    import managers.snapstore.files as files

    store.push(make_snap(tmp_path, "hello", "1.0"), key=root_key, channels=["stable"])
    snap = make_snap(tmp_path, "hello", "2.0")
    before = visible(store.root)
    clean = SnapStore.init(tmp_path / "clean", root_key_id=root_key.id)
    clean.push(make_snap(tmp_path, "hello", "1.0"), key=root_key, channels=["stable"])
    clean.push(snap, key=root_key, channels=["stable"])
    outcomes = set()
    n = 0
    while True:
        n += 1
        calls = [0]
        target = {"os.replace": os.replace, "os.unlink": os.unlink}.get(fn) or files.write_synced

        def dying(*args: Any, target: Any = target, calls: list[int] = calls, n: int = n, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] == n:
                raise Killed()
            return target(*args, **kw)

        with monkeypatch.context() as m:
            if fn == "os.replace":
                m.setattr(os, "replace", dying)
            elif fn == "os.unlink":
                m.setattr(Path, "unlink", lambda self, missing_ok=False: dying(self))
            else:  # the store's own writes and those of atomic_write
                m.setattr(directory, "write_synced", dying)
                m.setattr(files, "write_synced", dying)
            try:
                store.push(snap, key=root_key, channels=["stable"])
                finished = True
            except Killed:
                finished = False
        if finished:
            break
        # What readers are offered is whole: a revision with its file, digest and snap-revision.
        for rev in store.revisions("hello"):
            ss = store.snap("hello", str(rev))
            assert file_sha3_384(ss.path) == (ss.sha3_384, ss.size), f"{fn} #{n}"
            assert store.assertion("snap-revision", (ss.sha3_384,)) is not None
        store.recover()  # the next writer finishes or drops it
        after = visible(store.root)
        assert not list((store.root / ".staging").iterdir())
        if after == before:
            outcomes.add("as it was")
        else:
            assert store.snap("hello").revision == "2" and store.channels("hello") == {"latest/stable": "2"}
            assert sorted(after) == sorted(visible(clean.root))
            outcomes.add("done")
            # undo the push to try the next step
            for rel in ("snaps/hello/2.snap", "snaps/hello/2.yaml"):
                (store.root / rel).unlink()
            for p in (store.root / "assertions/snap-revision").iterdir():
                if p.name != store.snap("hello", "1").sha3_384:
                    p.unlink()
            store.release("hello", "1", ["stable"])
            assert visible(store.root) == before
    assert n > 1 and ("as it was" in outcomes or fn == "os.unlink")  # the marker is the only file unlinked
