# SPDX-License-Identifier: GPL-3.0-or-later
"""The store: a local directory (or file:// URL) of snap files, their assertions and channels.

Layout (see docs/managers.md, "The store")::

    <store>/store.yaml                      format: 1 (and root-key, authority when init was told them)
    <store>/snaps/<name>/<revision>.snap    the snap file
    <store>/snaps/<name>/<revision>.yaml    name, revision, snap-id, sha3-384, size (version, summary, description)
    <store>/snaps/<name>/channels.yaml      channel -> revision ({"latest/stable": 3, "latest/edge": 4})
    <store>/assertions/<type>/<primary key parts, as directories>
        e.g. assertions/snap-declaration/16/<snap-id>, assertions/snap-revision/<sha3-384>
    <store>/.staging/                       pushes in progress (readers ignore it)

A snap without channels.yaml (a store written before channels) has its
highest revision in latest/stable. Reading raises StoreError (or
SnapNotFoundError); what is read is checked, because a store is only
trusted as far as its assertions say. Writing (push, release) is atomic: a
push is staged, then committed by writing its commit marker, then moved
into place; a writer that finds a staged push finishes it (marker present)
or drops it (no marker), so a killed push leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from ..asserts import Assertion, PrivateKey, decode, sha3_384
from ..asserts.build import snap_declaration, snap_id_for, snap_revision
from ..errors import InvalidAssertionError, SnapNotFoundError, StoreError
from ..snap import read_info, valid_snap_name
from ..snap.hostileyaml import load_yaml
from ..snap.naming import SNAP_ID
from ..snap.regular import open_regular
from .channels import DEFAULT_CHANNEL, RISKS, parse_channel, short_channel
from .files import atomic_write, fsync_dir, write_synced
from .records import LARGE_FILE, SMALL_FILE, StoreListing, StoreSnap, location_path

log = logging.getLogger("managers.snapstore")

_PART = re.compile(r"^[A-Za-z0-9_.-]+\Z")  # key ids (base64url) may start with "-"
#: FORMAT is the store layout version store.yaml records.
FORMAT = 1
STAGING = ".staging"


class SnapStore:
    """SnapStore reads (and, for tools, writes) a store directory."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.root = location_path(location)

    def _check_dir(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"cannot use store {self.location}: it is not a directory")

    # -- reading ------------------------------------------------------------------

    def revisions(self, name: str) -> list[int]:
        """revisions are the revisions the store has of name, newest first."""
        d = self.root / "snaps" / name
        if not valid_snap_name(name) or not d.is_dir():
            return []
        return sorted((int(p.stem) for p in d.glob("*.yaml") if p.stem.isdigit() and p.stem[0] != "0"),
                      reverse=True)

    def names(self) -> list[str]:
        """names are the snaps the store has a revision of, sorted."""
        self._check_dir()
        d = self.root / "snaps"
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if valid_snap_name(p.name) and self.revisions(p.name))

    def channels(self, name: str) -> dict[str, str]:
        """channels maps each channel name has a revision released to (no fallback) to that revision."""
        path = self._where(f"snaps/{name}/channels.yaml")
        text = self._read_text(f"snaps/{name}/channels.yaml") if valid_snap_name(name) else None
        if text is None:
            revs = self.revisions(name)  # a store from before channels: the newest revision is stable
            return {DEFAULT_CHANNEL: str(revs[0])} if revs else {}
        try:
            data = load_yaml(text)  # no aliases, deep nesting or huge numbers
        except yaml.YAMLError as e:
            raise StoreError(f"cannot read store entry {path}: {' '.join(str(e).split())}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise StoreError(f"cannot read store entry {path}: it is not a mapping")
        out = {}
        for ch, rev in data.items():
            try:
                full = parse_channel(str(ch))
            except ValueError as e:
                raise StoreError(f"cannot read store entry {path}: {e}") from None
            if not isinstance(rev, int) or isinstance(rev, bool) or rev <= 0:
                raise StoreError(f"cannot read store entry {path}: channel {ch} has revision {rev!r}, "
                                 "not a positive integer")
            out[full] = str(rev)
        return out

    def channel_revision(self, name: str, channel: str) -> str | None:
        """channel_revision is the revision a channel offers, following less risky ones of its track when closed."""
        full = parse_channel(channel)
        track, risk = full.split("/")
        chans = self.channels(name)
        for r in reversed(RISKS[:RISKS.index(risk) + 1]):
            rev = chans.get(f"{track}/{r}")
            if rev is not None:
                return rev
        return None

    def snap(self, name: str, revision: str | None = None, *, channel: str | None = None) -> StoreSnap:
        """snap returns the given revision of name, or the one its channel offers (default latest/stable).

        SnapNotFoundError if there is none.
        """
        self._check_dir()
        if not valid_snap_name(name):
            raise SnapNotFoundError(f"cannot find snap {name!r} in the store: it is not a valid snap name")
        revs = self.revisions(name)
        if revision is not None:
            if revision not in {str(r) for r in revs}:
                raise SnapNotFoundError(f"cannot find revision {revision} of snap {name!r} in the store "
                                        f"{self.location}")
            return self._read_meta(name, revision)
        if not revs:
            raise SnapNotFoundError(f"cannot find snap {name!r} in the store {self.location}")
        try:
            rev = self.channel_revision(name, channel or DEFAULT_CHANNEL)
        except ValueError as e:
            raise SnapNotFoundError(str(e)) from None
        if rev is None:
            shown = short_channel(parse_channel(channel or DEFAULT_CHANNEL))
            raise SnapNotFoundError(f"cannot find snap {name!r} in channel {shown!r} of the store "
                                    f"{self.location}: no revision is released there")
        return self._read_meta(name, rev)

    def listing(self, name: str) -> StoreListing:
        """listing is what the store has of name (SnapNotFoundError if nothing)."""
        newest = self.snap(name, str(self.revisions(name)[0])) if self.revisions(name) else None
        if newest is None:
            raise SnapNotFoundError(f"cannot find snap {name!r} in the store {self.location}")
        return StoreListing(name, newest.snap_id, [str(r) for r in self.revisions(name)], self.channels(name))

    def _where(self, rel: str) -> str:
        """_where names a store file in messages (its path; an HTTP store: its URL)."""
        return str(self.root / rel)

    def _read_text(self, rel: str, limit: int = SMALL_FILE) -> str | None:
        """_read_text reads a store file, refused past limit characters (never cut) or when it is no regular file;
        None when it does not exist."""
        path = self.root / rel
        try:
            with open(open_regular(path), encoding="utf-8") as f:  # a FIFO or a device: refused, not read
                text = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read store entry {path}: {e.strerror if isinstance(e, OSError) else e}") \
                from None
        if len(text) > limit:  # refused, never cut and parsed (as over HTTP)
            raise StoreError(f"cannot read store entry {path}: it is longer than {limit} characters, the most an "
                             "entry of a store may have")
        return text

    def _read_meta(self, name: str, revision: str) -> StoreSnap:
        rel = f"snaps/{name}/{revision}.yaml"
        path = self.root / rel
        where = f"store entry {self._where(rel)}"
        text = self._read_text(rel)
        if text is None:
            raise StoreError(f"cannot read {where}: it is missing (a channel names a revision the store "
                             "does not have)")
        try:
            data = load_yaml(text)  # no aliases, deep nesting or huge numbers
        except yaml.YAMLError as e:
            raise StoreError(f"cannot read {where}: {' '.join(str(e).split())}") from None
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
        extra = {k: data.get(k) for k in ("version", "summary", "description")}
        for k, v in extra.items():
            if v is not None and not isinstance(v, str):
                raise StoreError(f"cannot read {where}: {k} {v!r} is not text")
        return StoreSnap(name, revision, snap_id, digest, size, path.with_suffix(".snap"),
                         str(extra["version"] or ""), str(extra["summary"] or ""), str(extra["description"] or ""))

    def open(self, snap: StoreSnap) -> BinaryIO:
        """open opens a snap file of the store for reading (OSError as it comes: some are transient)."""
        return open(open_regular(snap.path), "rb")  # a FIFO or a device: refused (EINVAL), not read

    def assertion(self, type: str, primary_key: tuple[str, ...]) -> str | None:
        """assertion returns the text of an assertion the store has, or None."""
        path = self._assertion_path(type, primary_key)
        if path is None:
            return None
        return self._read_text(str(path.relative_to(self.root)), LARGE_FILE)

    def _assertion_path(self, type: str, primary_key: tuple[str, ...]) -> Path | None:
        parts = (type, *primary_key)
        if not all(_PART.match(p) and p not in (".", "..") for p in parts):
            return None
        return self.root.joinpath("assertions", *parts)

    def _decoded(self, type: str, primary_key: tuple[str, ...]) -> Assertion | None:
        text = self.assertion(type, primary_key)
        if text is None:
            return None
        try:
            return decode(text)
        except InvalidAssertionError as e:
            raise StoreError(f"cannot read the store's {type} {'/'.join(primary_key)}: {e}") from None

    def declaration(self, name: str) -> Assertion | None:
        """declaration is the store's snap-declaration naming name, or None."""
        d = self.root / "assertions" / "snap-declaration" / "16"
        for sid in ([self.snap(name, str(self.revisions(name)[0])).snap_id] if self.revisions(name) else []) + \
                [snap_id_for(name)] + (sorted(p.name for p in d.iterdir()) if d.is_dir() else []):
            a = self._decoded("snap-declaration", ("16", sid))
            if a is not None and a.header("snap-name") == name:
                return a
        return None

    def config(self) -> dict[str, object]:
        """config is store.yaml ({} for a store made before it)."""
        return self._yaml_map("store.yaml") or {}

    def _yaml_map(self, rel: str, limit: int = SMALL_FILE) -> dict[str, Any] | None:
        text = self._read_text(rel, limit)
        if text is None:
            return None
        try:
            data = load_yaml(text)  # no aliases, deep nesting or huge numbers
        except yaml.YAMLError as e:
            raise StoreError(f"cannot read {self._where(rel)}: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise StoreError(f"cannot read {self._where(rel)}: it is not a mapping")
        return data

    # -- writing (tools) ------------------------------------------------------------

    @staticmethod
    def init(location: str | Path, *, root_key_id: str | None = None, authority: str | None = None) -> SnapStore:
        """init makes an empty store (or records the root key of an existing one); it returns it."""
        store = SnapStore(location)
        root = store.root
        if root.exists() and not root.is_dir():
            raise StoreError(f"cannot make a store in {root}: it is not a directory")
        if root.is_dir() and any(p.name not in ("snaps", "assertions", "store.yaml", "index.yaml", STAGING, ".lock")
                                 for p in root.iterdir()):
            raise StoreError(f"cannot make a store in {root}: it is not empty and not a store")
        (root / "snaps").mkdir(parents=True, exist_ok=True)
        (root / "assertions").mkdir(exist_ok=True)
        conf = {**store.config(), "format": FORMAT}
        if root_key_id is not None:
            conf["root-key"] = root_key_id
            conf["authority"] = authority or "root"
        atomic_write(root / "store.yaml", yaml.safe_dump(conf, sort_keys=True).encode())
        atomic_write(root / "index.yaml", store._index({}))
        return store

    def add_assertion(self, a: Assertion) -> Path:
        """add_assertion puts an assertion in the store (replacing the file for its primary key)."""
        path = self._assertion_path(a.type_name, a.primary_key)
        if path is None:
            raise StoreError(f"cannot store {a.ref}: its primary key cannot be a path")
        atomic_write(path, a.text.encode())
        return path

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """_writing holds the store's writer lock, after finishing or dropping any staged push."""
        self._check_dir()
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.recover()
            yield

    def recover(self) -> None:
        """recover finishes the staged pushes that were committed and drops the others (writer lock held)."""
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        for entry in sorted(staging.iterdir()):
            if entry.suffix == ".commit":
                continue
            if not entry.is_dir() or entry.is_symlink():  # a marker being written when the writer died
                entry.unlink()
                continue
            marker = entry.with_name(entry.name + ".commit")
            if marker.exists():
                log.warning("finishing the push staged in %s (it was interrupted after its commit)", entry)
                self._apply(entry, json.loads(marker.read_text()))
                marker.unlink()
            else:
                log.warning("dropping the push staged in %s (it was interrupted before its commit)", entry)
            shutil.rmtree(entry, ignore_errors=True)
        for marker in staging.glob("*.commit"):
            marker.unlink()

    def _apply(self, stage: Path, files: list[str]) -> None:
        """_apply moves each staged file into place (one already moved is skipped: applying is idempotent)."""
        for rel in files:
            src, dst = stage / rel, self.root / rel
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                fsync_dir(dst.parent)

    def _commit(self, files: dict[str, bytes]) -> None:
        """_commit writes files (relative path -> bytes, in the order readers must see them) atomically."""
        staging = self.root / STAGING
        stage = staging / uuid.uuid4().hex
        for rel, data in files.items():
            path = stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_synced(path, data)
        marker = stage.with_name(stage.name + ".commit")
        atomic_write(marker, json.dumps(list(files)).encode())  # the commit point
        self._apply(stage, list(files))
        marker.unlink()
        shutil.rmtree(stage, ignore_errors=True)

    def _index(self, adding: dict[str, int]) -> bytes:
        """_index is index.yaml: every snap's revisions, for readers that cannot list directories (HTTP)."""
        snaps = {n: sorted(self.revisions(n)) for n in self.names()}
        for n, rev in adding.items():
            snaps[n] = sorted({*snaps.get(n, []), rev})
        return yaml.safe_dump({"format": FORMAT, "snaps": snaps}, sort_keys=True).encode()

    def _next_revision(self, name: str) -> int:
        d = self.root / "snaps" / name
        existing = [int(p.name.split(".")[0]) for p in d.glob("*") if p.name.split(".")[0].isdigit()] \
            if d.is_dir() else []
        return max(existing, default=0) + 1

    def _channels_file(self, name: str, chans: dict[str, str]) -> bytes:
        return yaml.safe_dump({ch: int(rev) for ch, rev in sorted(chans.items())}, sort_keys=True).encode()

    def publish(self, snap_file: str | Path, *, key: PrivateKey, developer_id: str, snap_id: str,
                authority_id: str | None = None, revision: int | None = None,
                channels: Sequence[str] = ("stable",), extra: Sequence[Assertion] = ()) -> StoreSnap:
        """publish adds a snap file as its next revision (or the given one) with its snap-revision, atomically.

        The snap-revision is signed with key for authority_id (the developer by
        default); extra assertions (a snap-declaration) are written with it. The
        revision is released to channels (none: only uploaded).
        """
        info = read_info(snap_file)
        full = [parse_channel(c) for c in channels]
        data = Path(snap_file).read_bytes()
        digest = sha3_384(data)
        with self._writing():
            if revision is None:
                revision = self._next_revision(info.name)
            rev_a = snap_revision(key, authority_id or developer_id, digest, len(data), snap_id, revision,
                                  developer_id)
            meta = {"name": info.name, "revision": revision, "snap-id": snap_id, "sha3-384": digest,
                    "size": len(data), "version": info.version, "summary": info.summary}
            if info.description:
                meta["description"] = info.description
            base = f"snaps/{info.name}"
            files: dict[str, bytes] = {f"{base}/{revision}.snap": data}
            for a in (*extra, rev_a):
                path = self._assertion_path(a.type_name, a.primary_key)
                if path is None:
                    raise StoreError(f"cannot store {a.ref}: its primary key cannot be a path")
                files[str(path.relative_to(self.root))] = a.text.encode()
            files[f"{base}/{revision}.yaml"] = yaml.safe_dump(meta, sort_keys=True).encode()
            files["index.yaml"] = self._index({info.name: revision})
            # Always written: a snap without channels.yaml would offer its newest revision as stable.
            chans = self.channels(info.name)
            chans.update({c: str(revision) for c in full})
            files[f"{base}/channels.yaml"] = self._channels_file(info.name, chans)
            self._commit(files)
        return self._read_meta(info.name, str(revision))

    def push(self, snap_file: str | Path, *, key: PrivateKey, channels: Sequence[str] = (),
             publisher: str | None = None) -> StoreSnap:
        """push is `overlord store push`: publish a snap file signed by the right key, with what it needs.

        key is an account-key of the store (a developer: the snap's declaration
        must exist and name that developer as publisher) or the store's root
        key (store.yaml's root-key: it signs a snap-declaration for publisher,
        by default itself, when there is none, and the snap-revision).
        """
        snap_file = Path(snap_file)
        for c in channels:
            try:
                parse_channel(c)
            except ValueError as e:
                raise StoreError(str(e)) from None
        what = f"cannot push {snap_file.name}"
        info = read_info(snap_file)
        digest = sha3_384(snap_file.read_bytes())
        for rev in self.revisions(info.name):
            if self._read_meta(info.name, str(rev)).sha3_384 == digest:
                raise StoreError(f"{what}: it is revision {rev} of snap {info.name!r} already (same sha3-384)")
        conf = self.config()
        decl = self.declaration(info.name)
        extra: list[Assertion] = []
        acct_key = self._decoded("account-key", (key.id,))
        if conf.get("root-key") == key.id:
            authority = str(conf.get("authority") or "root")
            if decl is None:
                pub = publisher or authority
                if pub != authority and self._decoded("account", (pub,)) is None:
                    raise StoreError(f"{what}: publisher {pub!r} has no account assertion in the store")
                decl = snap_declaration(key, authority, info.name, pub)
                extra.append(decl)
            elif publisher is not None and publisher != decl.header("publisher-id"):
                raise StoreError(f"{what}: snap {info.name!r} is published by {decl.header('publisher-id')!r}, "
                                 f"not {publisher!r}")
            developer = decl.header("publisher-id")
        elif acct_key is not None:
            developer = acct_key.header("account-id")
            authority = developer
            if decl is None:
                raise StoreError(f"{what}: the store has no snap-declaration for snap {info.name!r} (the root key "
                                 "signs one: push the first revision with --key ROOT-KEY --publisher "
                                 f"{developer})")
            if decl.header("publisher-id") != developer:
                raise StoreError(f"{what}: snap {info.name!r} is published by {decl.header('publisher-id')!r}; "
                                 f"key {key.id[:12]}... speaks for {developer!r}")
        else:
            raise StoreError(f"{what}: key {key.id[:12]}... is neither the store's root key (store init "
                             "--root-key) nor an account-key in the store")
        return self.publish(snap_file, key=key, developer_id=developer, snap_id=decl.header("snap-id"),
                            authority_id=authority, channels=channels, extra=extra)

    def release(self, name: str, revision: str, channels: Sequence[str]) -> dict[str, str]:
        """release puts revision of name in channels; it returns the channels as they are then."""
        try:
            full = [parse_channel(c) for c in channels]
        except ValueError as e:
            raise StoreError(str(e)) from None
        if not full:
            raise StoreError(f"cannot release {name} {revision}: name at least one channel")
        with self._writing():
            self.snap(name, revision)
            chans = self.channels(name)
            chans.update({c: str(revision) for c in full})
            self._commit({f"snaps/{name}/channels.yaml": self._channels_file(name, chans),
                          "index.yaml": self._index({})})
        return chans
