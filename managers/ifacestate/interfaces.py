# SPDX-License-Identifier: GPL-3.0-or-later
"""The interfaces: the attributes each accepts, what a connection allows, and when it auto-connects.

Four interfaces, in snapd's spirit (docs/managers.md has the table):

- ``network``: a connected plug may use the network (a flag in the profile);
- ``home``: a connected plug may read and write under ``<root>/home``;
- ``content``: a slot shares directories of its snap (``read``/``write``
  path lists under $SNAP, $SNAP_DATA or $SNAP_COMMON, and a ``content``
  tag); a plug names where they appear (``target``) and may name the snap
  that provides them (``default-provider``); connecting records the binds in
  the plug snap's profile;
- ``system-files``: a plug names system paths to read and write (``read``
  and ``write`` lists), each checked against SYSTEM_FILES_READ and
  SYSTEM_FILES_WRITE, and refused when it equals, holds or lies under one of
  SYSTEM_FILES_DENIED (see denied).

The system offers the slots of network, home and system-files itself
(snap "system"); no snap may declare them. Attribute checks raise
BadAttribute, which the manager turns into an error naming the snap and the
plug.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..snap import PlugInfo, SnapInfo
from ..snap.naming import valid_snap_name

#: SYSTEM_SNAP is the name the system's implicit slots go by (snapd's "snapd"/"core"); no snap may take it.
SYSTEM_SNAP = "system"
#: SYSTEM_FILES_READ are the directories system-files may grant reading under (and the paths below them).
SYSTEM_FILES_READ = ("/etc", "/opt", "/srv", "/usr/share", "/var/log")
#: SYSTEM_FILES_WRITE are the directories system-files may grant writing under.
SYSTEM_FILES_WRITE = ("/srv", "/var/log")
#: SYSTEM_FILES_DENIED are never granted, nor anything below them, nor anything that holds them, whatever the
#: lists above say: password hashes (and their backups), sudo's rules, ssh host keys, private TLS keys, old
#: passwords, the daemon's default state directory (its database and keys) and the snap manager's own
#: state under the root (snap files, profiles, services). The interface manager adds the daemon's state
#: directory when it lies under the system root (InterfaceManager's denied_paths).
SYSTEM_FILES_DENIED = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
                       "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private", "/etc/security/opasswd",
                       "/var/lib/overlord", "/var/lib/snaps", "/var/lib/profiles", "/var/lib/services")
_TAG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f*?\[\]{}\\\"'`$]")
_SNAP_VARS = ("$SNAP_COMMON", "$SNAP_DATA", "$SNAP")


class BadAttribute(Exception):
    """BadAttribute means a plug or slot attribute is missing or wrong; attr names it, problem says why."""

    def __init__(self, attr: str, problem: str) -> None:
        super().__init__(f"attribute {attr!r}: {problem}")
        self.attr = attr
        self.problem = problem


@dataclass(frozen=True)
class Mount:
    """Mount is a directory of one snap made visible in another (content): source -> target, ro or rw."""

    source: str
    target: str
    mode: str

    def to_dict(self) -> dict[str, str]:
        """to_dict is the JSON form written in profiles."""
        return {"source": self.source, "target": self.target, "mode": self.mode}


@dataclass(frozen=True)
class Rules:
    """Rules is what a connection allows one of its snaps: the network, paths to read and write, mounts."""

    network: bool = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class Side:
    """Side is one end of a (possible) connection: the snap's info, its plug or slot, its publisher."""

    info: SnapInfo
    port: PlugInfo
    #: The publisher per the snap's snap-declaration ("" when it has none: a local or the system snap).
    publisher: str = ""

    @property
    def snap(self) -> str:
        """snap is the snap's name."""
        return self.info.name


@dataclass(frozen=True)
class Layout:
    """Layout expands $SNAP, $SNAP_DATA and $SNAP_COMMON to real paths under the system root."""

    root: Path

    def expand(self, path: str, info: SnapInfo) -> str:
        """expand turns a checked snap path into an absolute path under the root."""
        bases = {"$SNAP_COMMON": self.root / "var" / "snap" / info.name / "common",
                 "$SNAP_DATA": self.root / "var" / "snap" / info.name / info.revision,
                 "$SNAP": self.root / "snap" / info.name / info.revision}
        for var in _SNAP_VARS:
            if path == var or path.startswith(var + "/"):
                rest = path[len(var):].lstrip("/")
                return str(bases[var] / rest) if rest else str(bases[var])
        raise ValueError(f"internal error: {path!r} is not a snap path")

    def system(self, path: str) -> str:
        """system turns a checked absolute system path into the same path under the root."""
        return str(self.root / path.lstrip("/"))


@dataclass(frozen=True)
class Interface:
    """Interface is one interface: its name, summary, attribute checks, auto-connection policy and rules.

    The base accepts no attributes, grants nothing and never auto-connects;
    each interface below says what it does differently.
    """

    name: str
    summary: str
    #: The system offers a slot of this interface (snap "system", slot named like the interface).
    implicit: bool = False
    plug_attrs: tuple[str, ...] = field(default=())
    slot_attrs: tuple[str, ...] = field(default=())

    def check_plug(self, plug: PlugInfo) -> None:
        """check_plug raises BadAttribute when the plug's attributes are wrong."""
        _only(plug.attrs, self.plug_attrs)

    def check_slot(self, slot: PlugInfo) -> None:
        """check_slot raises BadAttribute when the slot's attributes are wrong."""
        _only(slot.attrs, self.slot_attrs)

    def compatible(self, plug: PlugInfo, slot: PlugInfo) -> str | None:
        """compatible returns why plug cannot connect to slot beyond the interface name, or None."""
        return None

    def auto_connect(self, plug: Side, slot: Side) -> bool:
        """auto_connect says whether the policy connects plug to slot without being asked."""
        return False

    def plug_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """plug_rules is what the connection allows the plug's snap."""
        return Rules()

    def slot_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """slot_rules is what the connection allows the slot's snap."""
        return Rules()


@dataclass(frozen=True)
class NetworkInterface(Interface):
    """NetworkInterface lets a connected plug use the network; it auto-connects to the system's slot."""

    def auto_connect(self, plug: Side, slot: Side) -> bool:
        """auto_connect is always allowed."""
        return True

    def plug_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """plug_rules sets the network flag."""
        return Rules(network=True)


@dataclass(frozen=True)
class HomeInterface(Interface):
    """HomeInterface lets a connected plug read and write under <root>/home; it auto-connects."""

    def auto_connect(self, plug: Side, slot: Side) -> bool:
        """auto_connect is always allowed."""
        return True

    def plug_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """plug_rules grants <root>/home."""
        home = layout.system("/home")
        return Rules(read=(home,), write=(home,))


@dataclass(frozen=True)
class ContentInterface(Interface):
    """ContentInterface shares a slot snap's directories with a plug snap, at the plug's target.

    Slot: ``read`` and/or ``write`` (lists of $SNAP, $SNAP_DATA or
    $SNAP_COMMON paths; write not under $SNAP, which is read-only),
    ``content`` (a tag; default: the slot's name). Plug: ``target`` (a
    $SNAP_DATA or $SNAP_COMMON path, required), ``content`` (default: the
    plug's name), ``default-provider`` (the snap that provides it). Plug and
    slot connect when their tags match; they auto-connect when, besides, the
    snap-declarations of both snaps name the same publisher.
    """

    def check_plug(self, plug: PlugInfo) -> None:
        """check_plug checks target, content and default-provider."""
        _only(plug.attrs, self.plug_attrs)
        if "target" not in plug.attrs:
            raise BadAttribute("target", "missing (where the content appears, e.g. $SNAP_DATA/shared)")
        _snap_path(plug.attrs["target"], "target", ("$SNAP_DATA", "$SNAP_COMMON"))
        _tag(plug.attrs.get("content"))
        provider = plug.attrs.get("default-provider")
        if provider is not None and (not valid_snap_name(provider) or provider == SYSTEM_SNAP):
            raise BadAttribute("default-provider", f"{provider!r} is not a snap name")

    def check_slot(self, slot: PlugInfo) -> None:
        """check_slot checks read, write and content."""
        _only(slot.attrs, self.slot_attrs)
        read = _path_list(slot.attrs, "read")
        write = _path_list(slot.attrs, "write")
        if not read and not write:
            raise BadAttribute("read", "missing: a content slot shares at least one read or write path")
        for p in read:
            _snap_path(p, "read", _SNAP_VARS)
        for p in write:
            _snap_path(p, "write", ("$SNAP_DATA", "$SNAP_COMMON"))
        _tag(slot.attrs.get("content"))

    def compatible(self, plug: PlugInfo, slot: PlugInfo) -> str | None:
        """compatible requires the same content tag."""
        a, b = content_tag(plug), content_tag(slot)
        return None if a == b else f"the plug wants content {a!r}, the slot offers {b!r}"

    def auto_connect(self, plug: Side, slot: Side) -> bool:
        """auto_connect needs matching tags and one publisher on both sides, per their snap-declarations."""
        return (self.compatible(plug.port, slot.port) is None and bool(plug.publisher)
                and plug.publisher == slot.publisher)

    def plug_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """plug_rules binds each shared directory at the target (below it, by name, when there are several)."""
        target = layout.expand(plug.port.attrs["target"], plug.info)
        sources = [(p, "ro") for p in _path_list(slot.port.attrs, "read")]
        sources += [(p, "rw") for p in _path_list(slot.port.attrs, "write")]
        mounts = []
        for path, mode in sources:
            source = layout.expand(path, slot.info)
            where = target if len(sources) == 1 else posixpath.join(target, posixpath.basename(source))
            mounts.append(Mount(source, where, mode))
        return Rules(mounts=tuple(mounts))


@dataclass(frozen=True)
class SystemFilesInterface(Interface):
    """SystemFilesInterface grants a plug the system paths it lists, within a fixed allow-list; never automatic.

    Plug: ``read`` and/or ``write``, lists of absolute paths (no wildcards,
    no ``..``), each under SYSTEM_FILES_READ (for read) or
    SYSTEM_FILES_WRITE (for write), and neither equal to, under, nor
    holding any of SYSTEM_FILES_DENIED (compared normalised).
    """

    def check_plug(self, plug: PlugInfo) -> None:
        """check_plug checks every path against the allow-list."""
        _only(plug.attrs, self.plug_attrs)
        read = _path_list(plug.attrs, "read")
        write = _path_list(plug.attrs, "write")
        if not read and not write:
            raise BadAttribute("read", "missing: a system-files plug names at least one read or write path")
        for attr, paths, allowed in (("read", read, SYSTEM_FILES_READ), ("write", write, SYSTEM_FILES_WRITE)):
            for p in paths:
                _system_path(p, attr, allowed)

    def compatible(self, plug: PlugInfo, slot: PlugInfo) -> str | None:
        """compatible refuses a plug whose paths are not grantable (one installed before a rule tightened)."""
        try:
            self.check_plug(plug)
        except BadAttribute as e:
            return str(e)
        return None

    def plug_rules(self, plug: Side, slot: Side, layout: Layout) -> Rules:
        """plug_rules grants the listed paths, under the root; a denied path is never granted."""
        def grant(attr: str) -> tuple[str, ...]:
            return tuple(layout.system(p) for p in _path_list(plug.port.attrs, attr) if denied(p) is None)

        return Rules(read=grant("read"), write=grant("write"))


#: INTERFACES is the registry: every interface the system knows, by name.
INTERFACES: Mapping[str, Interface] = {i.name: i for i in (
    ContentInterface("content", "allows sharing directories between snaps of one publisher",
                     plug_attrs=("content", "default-provider", "target"), slot_attrs=("content", "read", "write")),
    HomeInterface("home", "allows access to files under the system's home directory", implicit=True),
    NetworkInterface("network", "allows access to the network", implicit=True),
    SystemFilesInterface("system-files", "allows access to listed system files", implicit=True,
                         plug_attrs=("read", "write")),
)}


def system_info() -> SnapInfo:
    """system_info is the SnapInfo of the system's implicit slots (snap "system")."""
    slots = {i.name: PlugInfo(i.name, i.name) for i in INTERFACES.values() if i.implicit}
    return SnapInfo(SYSTEM_SNAP, "1", "The system's own slots", slots=slots)


def content_tag(port: PlugInfo) -> str:
    """content_tag is a content plug's or slot's tag: its content attribute, or its name."""
    tag = port.attrs.get("content")
    return tag if isinstance(tag, str) and tag else port.name


# -- attribute checks ---------------------------------------------------------------------


def _only(attrs: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for name in sorted(attrs):
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise BadAttribute(name, f"unknown attribute (known: {known})")


def _tag(value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not _TAG.match(value)):
        raise BadAttribute("content", f"{value!r} must be a tag of lowercase letters, digits and dashes")


def _path_list(attrs: Mapping[str, Any], attr: str) -> list[str]:
    value = attrs.get(attr)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadAttribute(attr, "must be a path or a list of paths")
    if len(value) != len(set(value)):
        raise BadAttribute(attr, "lists a path twice")
    return value


def _clean(path: str, attr: str) -> None:
    if _BAD_PATH_CHARS.search(path.replace("$SNAP", "", 1) if path.startswith("$SNAP") else path):
        raise BadAttribute(attr, f"{path!r}: paths cannot hold control characters, quotes, wildcards or $")
    parts = path.split("/")[1:]
    if len(path) > 512 or any(p in ("", ".", "..") for p in parts):
        raise BadAttribute(attr, f"{path!r} must be a clean path (no empty, '.' or '..' parts, no trailing /)")


def _snap_path(path: Any, attr: str, allowed: Sequence[str]) -> None:
    if not isinstance(path, str):
        raise BadAttribute(attr, f"{path!r} must be a path")
    head = path.split("/")[0]
    if head not in allowed:
        raise BadAttribute(attr, f"{path!r} must start with {' or '.join(allowed)}")
    _clean(path, attr)


def normalise(path: str) -> str:
    """normalise is path made lexically clean, without looking at the disk: no '.', '..', '//' or trailing /."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + clean.lstrip("/")  # normpath keeps a leading "//"


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def denied(path: str, extra: Sequence[str] = ()) -> str | None:
    """denied returns the denied path that path equals, lies under or holds (compared normalised), or None."""
    p = normalise(path)
    for d in (*SYSTEM_FILES_DENIED, *extra):
        d = normalise(d)
        if _under(p, d) or _under(d, p):
            return d
    return None


def check_denied(path: str, attr: str, extra: Sequence[str] = ()) -> None:
    """check_denied raises BadAttribute when path touches a denied path (see denied)."""
    d = denied(path, extra)
    if d is None:
        return
    if normalise(path) == d:
        raise BadAttribute(attr, f"{path!r} is never granted")
    if _under(normalise(path), d):
        raise BadAttribute(attr, f"{path!r} is never granted: it lies under {d}")
    raise BadAttribute(attr, f"{path!r} is never granted: it holds {d}")


def _system_path(path: str, attr: str, allowed: Sequence[str]) -> None:
    if not path.startswith("/"):
        raise BadAttribute(attr, f"{path!r} must be an absolute path")
    check_denied(path, attr)
    _clean(path, attr)

    def under(base: str) -> bool:
        return _under(path, base)

    if not any(under(d) for d in allowed):
        raise BadAttribute(attr, f"{path!r} is not under {', '.join(allowed)}")
