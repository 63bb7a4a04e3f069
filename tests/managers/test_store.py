# SPDX-License-Identifier: GPL-3.0-or-later
"""The store: its layout, file:// URLs, and what it refuses to believe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from managers import SnapNotFoundError, StoreError
from managers.asserts import PrivateKey, file_sha3_384
from managers.snapstore import SnapStore, is_transient, location_path
from overlord.samples import build_store


def test_locations() -> None:
    assert location_path("/srv/store") == Path("/srv/store")
    assert location_path("file:///srv/my%20store") == Path("/srv/my store")
    assert location_path("file://localhost/srv/store") == Path("/srv/store")
    for bad in ("ftp://store.example.com/", "file://otherhost/srv"):
        with pytest.raises(StoreError, match="only local directories, file:// and http"):
            location_path(bad)


def test_layout_and_lookups(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey) -> None:
    sample = build_store(tmp_path / "store", root_key, acme_key, versions=("1.0", "2.0"))
    store = SnapStore(f"file://{tmp_path / 'store'}")
    latest = store.snap("hello")
    assert (latest.name, latest.revision) == ("hello", "2")
    assert latest.path == tmp_path / "store" / "snaps" / "hello" / "2.snap"
    assert (latest.sha3_384, latest.size) == file_sha3_384(latest.path)
    assert store.snap("hello", "1").revision == "1"
    meta = yaml.safe_load((tmp_path / "store/snaps/hello/2.yaml").read_text())
    assert {k: meta[k] for k in ("name", "revision", "snap-id", "sha3-384", "size", "version")} == {
        "name": "hello", "revision": 2, "snap-id": latest.snap_id, "sha3-384": latest.sha3_384,
        "size": latest.size, "version": "2.0"}
    assert yaml.safe_load((tmp_path / "store/snaps/hello/channels.yaml").read_text()) == {"latest/stable": 2}
    text = store.assertion("snap-revision", (latest.sha3_384,))
    assert text is not None and f"snap-sha3-384: {latest.sha3_384}" in text
    assert store.assertion("account", ("acme",)) is not None
    assert store.assertion("account", ("nobody",)) is None
    assert store.assertion("account", ("..",)) is None
    assert store.assertion("..", ("account", "acme")) is None
    assert sample.publish("3.0").revision == "3"
    with pytest.raises(SnapNotFoundError, match="cannot find revision 7 of snap 'hello'"):
        store.snap("hello", "7")
    with pytest.raises(SnapNotFoundError, match="cannot find snap 'world'"):
        store.snap("world")
    with pytest.raises(SnapNotFoundError, match="not a valid snap name"):
        store.snap("../etc")
    with pytest.raises(StoreError, match="it is not a directory"):
        SnapStore(tmp_path / "nothere").snap("hello")


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "other"}, "do not match its path"),
    ({"snap-id": "short"}, "is not a snap id"),
    ({"sha3-384": "x"}, "is not a digest"),
    ({"size": -1}, "is not a positive integer"),
    ({"size": "10"}, "is not a positive integer"),
])
def test_store_entries_are_checked(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey,
                                   change: dict[str, object], message: str) -> None:
    build_store(tmp_path / "store", root_key, acme_key, versions=("1.0",))
    path = tmp_path / "store/snaps/hello/1.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}))
    with pytest.raises(StoreError, match=message) as e:
        SnapStore(tmp_path / "store").snap("hello")
    assert str(path) in str(e.value)


def test_transient_errors() -> None:
    import errno

    assert is_transient(OSError(errno.EIO, "x")) and is_transient(TimeoutError(errno.ETIMEDOUT, "x"))
    assert not is_transient(OSError(errno.ENOENT, "x")) and not is_transient(PermissionError(errno.EACCES, "x"))
    assert not is_transient(ValueError("x"))
