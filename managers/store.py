# SPDX-License-Identifier: GPL-3.0-or-later
"""The store: a local directory (or file:// URL) of snap files and their assertions.

Layout (see docs/managers.md)::

    <store>/snaps/<name>/<revision>.snap    the snap file
    <store>/snaps/<name>/<revision>.yaml    name, revision, snap-id, sha3-384, size
    <store>/assertions/<type>/<primary key parts, as directories>
        e.g. assertions/snap-declaration/16/<snap-id>, assertions/snap-revision/<sha3-384>

The newest revision of a snap is its highest <revision>.yaml. Reading
raises StoreError (or SnapNotFoundError); what is read is checked, because
a store is only trusted as far as its assertions say.
"""

from __future__ import annotations

import errno
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import yaml

from .asserts import Assertion, PrivateKey, sha3_384
from .asserts.build import snap_revision
from .errors import SnapNotFoundError, StoreError
from .snap import read_info, valid_snap_name
from .snap.naming import SNAP_ID

#: The store's small index files are read with libyaml's safe loader where PyYAML has it (10x faster).
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PART = re.compile(r"^[A-Za-z0-9_.-]+$")  # key ids (base64url) may start with "-"
#: TRANSIENT are the errno values a download retries: the store may answer next time.
TRANSIENT = frozenset({errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY,
                       errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET, errno.ECONNABORTED,
                       errno.EHOSTUNREACH})


def is_transient(exc: BaseException) -> bool:
    """is_transient says whether an I/O error may go away if the operation is tried again."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT


@dataclass(frozen=True)
class StoreSnap:
    """StoreSnap is one revision of a snap as the store offers it."""

    name: str
    revision: str
    snap_id: str
    sha3_384: str
    size: int
    path: Path


def location_path(location: str | Path) -> Path:
    """location_path turns a store location (a directory or a file:// URL) into a directory."""
    text = str(location)
    if "://" in text:
        url = urllib.parse.urlparse(text)
        if url.scheme != "file" or url.netloc not in ("", "localhost"):
            raise StoreError(f"cannot use store {text}: only local directories and file:// URLs are supported")
        return Path(urllib.parse.unquote(url.path))
    return Path(text)


class Store:
    """Store reads (and, for tools, writes) a store directory."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.root = location_path(location)

    def _check_dir(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"cannot use store {self.location}: it is not a directory")

    # -- reading ------------------------------------------------------------------

    def snap(self, name: str, revision: str | None = None) -> StoreSnap:
        """snap returns the newest revision of name (or the given one); SnapNotFoundError if none."""
        self._check_dir()
        if not valid_snap_name(name):
            raise SnapNotFoundError(f"cannot find snap {name!r} in the store: it is not a valid snap name")
        d = self.root / "snaps" / name
        revs = sorted((int(p.stem) for p in d.glob("*.yaml") if p.stem.isdigit() and p.stem[0] != "0"),
                      reverse=True) if d.is_dir() else []
        if revision is not None:
            revs = [r for r in revs if str(r) == revision]
        if not revs:
            what = f"revision {revision} of snap {name!r}" if revision else f"snap {name!r}"
            raise SnapNotFoundError(f"cannot find {what} in the store {self.location}")
        return self._read_meta(name, str(revs[0]))

    def _read_meta(self, name: str, revision: str) -> StoreSnap:
        path = self.root / "snaps" / name / f"{revision}.yaml"
        where = f"store entry {path}"
        try:
            data = yaml.load(path.read_text(encoding="utf-8")[:65536], Loader=_YAML_LOADER)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise StoreError(f"cannot read {where}: {e}") from None
        if not isinstance(data, dict):
            raise StoreError(f"cannot read {where}: it is not a mapping")
        snap_id, digest, size = data.get("snap-id"), data.get("sha3-384"), data.get("size")
        if data.get("name") != name or str(data.get("revision")) != revision:
            raise StoreError(f"cannot read {where}: its name or revision do not match its path")
        if not isinstance(snap_id, str) or not SNAP_ID.match(snap_id):
            raise StoreError(f"cannot read {where}: snap-id {snap_id!r} is not a snap id")
        if not isinstance(digest, str) or len(digest) != 64:
            raise StoreError(f"cannot read {where}: sha3-384 {digest!r} is not a digest")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise StoreError(f"cannot read {where}: size {size!r} is not a positive integer")
        return StoreSnap(name, revision, snap_id, digest, size, path.with_suffix(".snap"))

    def open(self, snap: StoreSnap) -> BinaryIO:
        """open opens a snap file of the store for reading (OSError as it comes: some are transient)."""
        return open(snap.path, "rb")

    def assertion(self, type: str, primary_key: tuple[str, ...]) -> str | None:
        """assertion returns the text of an assertion the store has, or None."""
        path = self._assertion_path(type, primary_key)
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read {path}: {e}") from None

    def _assertion_path(self, type: str, primary_key: tuple[str, ...]) -> Path | None:
        parts = (type, *primary_key)
        if not all(_PART.match(p) and p not in (".", "..") for p in parts):
            return None
        return self.root.joinpath("assertions", *parts)

    # -- writing (tools) ------------------------------------------------------------

    def add_assertion(self, a: Assertion) -> Path:
        """add_assertion puts an assertion in the store (replacing the file for its primary key)."""
        path = self._assertion_path(a.type_name, a.primary_key)
        if path is None:
            raise StoreError(f"cannot store {a.ref}: its primary key cannot be a path")
        _atomic_write(path, a.text.encode())
        return path

    def publish(self, snap_file: str | Path, *, key: PrivateKey, developer_id: str, snap_id: str,
                authority_id: str | None = None, revision: int | None = None) -> StoreSnap:
        """publish adds a snap file as its next revision (or the given one), with its snap-revision.

        The snap-revision is signed with key for authority_id (the developer by default).
        """
        info = read_info(snap_file)
        data = Path(snap_file).read_bytes()
        d = self.root / "snaps" / info.name
        d.mkdir(parents=True, exist_ok=True)
        if revision is None:
            existing = [int(p.stem) for p in d.glob("*.yaml") if p.stem.isdigit()]
            revision = max(existing, default=0) + 1
        digest = sha3_384(data)
        rev_a = snap_revision(key, authority_id or developer_id, digest, len(data), snap_id, revision, developer_id)
        _atomic_write(d / f"{revision}.snap", data)
        self.add_assertion(rev_a)
        meta = {"name": info.name, "revision": revision, "snap-id": snap_id, "sha3-384": digest, "size": len(data)}
        _atomic_write(d / f"{revision}.yaml", yaml.safe_dump(meta, sort_keys=True).encode())
        return self._read_meta(info.name, str(revision))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

