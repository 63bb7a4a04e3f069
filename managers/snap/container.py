# SPDX-License-Identifier: GPL-3.0-or-later
"""Snap files: zip archives holding meta/snap.yaml, read as hostile input.

Every member is checked before anything is extracted: its name (relative,
no "..", no empty or "." parts, no backslash or NUL, no duplicate), its type
(regular file, directory or symlink; devices, FIFOs and sockets are refused),
symlink targets (relative, and resolving inside the snap through the other
members), no member below a file or a symlink, encryption and compression
methods, and the limits (total size, number of entries). Extraction then
writes only into a new directory, creating each file exclusively without
following symlinks, and counting the bytes it writes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import InvalidSnapError
from .info import HOOKS, HookInfo, SnapInfo

log = logging.getLogger("managers.snap")

#: SNAP_YAML is where a snap describes itself.
SNAP_YAML = "meta/snap.yaml"
#: HOOKS_DIR holds a snap's hooks, one executable per hook, named for it.
HOOKS_DIR = "meta/hooks"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Limits bound what a snap file may hold."""

    #: The most bytes all files may hold once extracted (1 GiB).
    max_size: int = 1024 * 1024 * 1024
    #: The most entries (files, directories, symlinks).
    max_entries: int = 20000
    #: The longest member path, in bytes.
    max_path: int = 4096
    #: The longest symlink target, in bytes.
    max_link: int = 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Member:
    """Member is one checked entry of a snap file."""

    path: str
    kind: str  # "file", "dir" or "link"
    mode: int
    size: int
    target: str = ""
    zinfo: zipfile.ZipInfo | None = None


class SnapFile:
    """SnapFile is an opened, fully checked snap file; use it as a context manager."""

    def __init__(self, path: str | Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.limits = limits
        self._where = str(self.path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise InvalidSnapError(f"cannot open snap {self._where}: no such file") from None
        except IsADirectoryError:
            raise InvalidSnapError(f"cannot open snap {self._where}: it is a directory") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: it is not a snap (zip) file ({e})") from None
        except OSError as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: {e.strerror}") from None
        try:
            self.members = self._check()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> SnapFile:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """close closes the archive."""
        self._zip.close()

    def _bad(self, problem: str) -> InvalidSnapError:
        return InvalidSnapError(f"cannot use snap {self._where}: {problem}")

    # -- checks ------------------------------------------------------------------

    def _check(self) -> dict[str, Member]:
        infos = self._zip.infolist()
        if len(infos) > self.limits.max_entries:
            raise self._bad(f"it has {len(infos)} entries, more than the limit of {self.limits.max_entries}")
        members: dict[str, Member] = {}
        total = 0
        for zi in infos:
            m = self._member(zi)
            if m.path in members:
                raise self._bad(f"entry {m.path!r} appears twice")
            members[m.path] = m
            total += m.size
            if total > self.limits.max_size:
                raise self._bad(f"its files hold more than the limit of {self.limits.max_size} bytes")
        for m in members.values():
            parent = posixpath.dirname(m.path)
            while parent:
                above = members.get(parent)
                if above is not None and above.kind != "dir":
                    raise self._bad(f"entry {m.path!r} is below {above.path!r}, which is a {above.kind}")
                parent = posixpath.dirname(parent)
        links = {m.path: m.target for m in members.values() if m.kind == "link"}
        for path, target in links.items():
            if target.startswith("/"):
                raise self._bad(f"symlink {path!r} points to the absolute path {target!r}")
            if _resolve(posixpath.dirname(path), target, links) is None:
                raise self._bad(f"symlink {path!r} points outside the snap ({target!r})")
        meta = members.get(SNAP_YAML)
        if meta is None:
            raise self._bad(f"it has no {SNAP_YAML}")
        if meta.kind != "file":
            raise self._bad(f"{SNAP_YAML} is a {meta.kind}, not a file")
        return members

    def _member(self, zi: zipfile.ZipInfo) -> Member:
        name = zi.filename
        if zi.flag_bits & 0x1:
            raise self._bad(f"entry {name!r} is encrypted")
        if zi.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._bad(f"entry {name!r} uses an unsupported compression method ({zi.compress_type})")
        if not name or "\x00" in name or "\\" in name:
            raise self._bad(f"entry {name!r} has a NUL or backslash in its name, or no name")
        if name.startswith("/"):
            raise self._bad(f"entry {name!r} has an absolute path")
        is_dir_name = name.endswith("/")
        path = name.rstrip("/")
        parts = path.split("/")
        if ".." in parts:
            raise self._bad(f"entry {name!r} has a '..' in its path")
        if "" in parts or "." in parts:
            raise self._bad(f"entry {name!r} has an empty or '.' part in its path")
        if len(path.encode()) > self.limits.max_path or any(len(p.encode()) > 255 for p in parts):
            raise self._bad(f"entry {name[:80]!r}... has a path that is too long")
        mode = (zi.external_attr >> 16) if zi.create_system == 3 else 0
        kind_bits = stat.S_IFMT(mode)
        if kind_bits == 0:
            kind = "dir" if is_dir_name else "file"
        elif stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISLNK(mode):
            kind = "link"
        else:
            what = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFIFO: "FIFO",
                    stat.S_IFSOCK: "socket"}.get(kind_bits, "special file")
            raise self._bad(f"entry {name!r} is a {what}")
        if is_dir_name and kind != "dir":
            raise self._bad(f"entry {name!r} ends with '/' but is a {kind}")
        if kind == "dir":
            if zi.file_size:
                raise self._bad(f"directory entry {name!r} has content")
            return Member(path, "dir", 0o755, 0, zinfo=zi)
        if kind == "link":
            if zi.file_size > self.limits.max_link:
                raise self._bad(f"symlink {name!r} has a target longer than {self.limits.max_link} bytes")
            try:
                target = self._zip.read(zi).decode("utf-8")
            except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as e:
                raise self._bad(f"cannot read the target of symlink {name!r} ({e})") from None
            if not target or "\x00" in target:
                raise self._bad(f"symlink {name!r} has an empty or invalid target")
            return Member(path, "link", 0o777, 0, target=target, zinfo=zi)
        executable = bool(mode & 0o111)
        return Member(path, "file", 0o755 if executable else 0o644, zi.file_size, zinfo=zi)

    # -- reading -------------------------------------------------------------------

    def read(self, path: str, limit: int) -> bytes:
        """read returns the content of the file member at path, at most limit bytes."""
        m = self.members.get(path)
        if m is None or m.kind != "file" or m.zinfo is None:
            raise self._bad(f"it has no file {path}")
        if m.size > limit:
            raise self._bad(f"{path} is {m.size} bytes, more than the limit of {limit}")
        try:
            with self._zip.open(m.zinfo) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise self._bad(f"cannot read {path} ({e})") from None
        if len(data) > limit:
            raise self._bad(f"{path} is more than the limit of {limit} bytes")
        return data

    def info(self) -> SnapInfo:
        """info reads and checks meta/snap.yaml, and checks that every app's program is in the snap."""
        from .info import MAX_YAML

        info = SnapInfo.from_yaml(self.read(SNAP_YAML, MAX_YAML), f"{SNAP_YAML} in {self._where}")
        check_apps(info, self._lookup, self._where)
        found = [m.path[len(HOOKS_DIR) + 1:] for m in self.members.values()
                 if posixpath.dirname(m.path) == HOOKS_DIR]
        return with_hooks(info, found, self._lookup, self._where)

    def _lookup(self, path: str) -> tuple[str, int] | None:
        links = {m.path: m.target for m in self.members.values() if m.kind == "link"}
        resolved = _resolve("", path, links)
        m = self.members.get(resolved) if resolved is not None else None
        return None if m is None else (m.kind, m.mode)

    # -- extracting -------------------------------------------------------------------

    def extract(self, target: str | Path) -> None:
        """extract writes the snap's members into target, a directory that must not exist yet."""
        target = Path(target)
        try:
            os.mkdir(target, 0o755)
        except OSError as e:
            raise InvalidSnapError(f"cannot extract snap {self._where} into {target}: {e.strerror}") from None
        ordered = sorted(self.members.values(), key=lambda m: (m.kind == "link", m.path))
        written = 0
        for m in ordered:
            dest = target / m.path
            parent = dest.parent
            if parent != target and not parent.is_dir():
                parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if m.kind == "dir":
                dest.mkdir(mode=0o755, exist_ok=True)
            elif m.kind == "link":
                os.symlink(m.target, dest)
            else:
                assert m.zinfo is not None
                written += self._write(m, dest, self.limits.max_size - written)
        # Directories got 0755 whatever the umask said.
        for m in ordered:
            if m.kind == "dir":
                os.chmod(target / m.path, 0o755)
        os.chmod(target, 0o755)

    def _write(self, m: Member, dest: Path, budget: int) -> int:
        assert m.zinfo is not None
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, m.mode)
        n = 0
        try:
            with os.fdopen(fd, "wb") as out, self._zip.open(m.zinfo) as src:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    n += len(chunk)
                    if n > m.size or n > budget:
                        raise self._bad(f"entry {m.path!r} holds more than it declares ({m.size} bytes)")
                    out.write(chunk)
                os.fchmod(out.fileno(), m.mode)
        except (zipfile.BadZipFile, EOFError) as e:
            raise self._bad(f"cannot extract {m.path!r} ({e})") from None
        return n


def _resolve(base: str, target: str, links: dict[str, str], depth: int = 0) -> str | None:
    """_resolve follows target from directory base through the snap's symlinks.

    It returns the path inside the snap it ends at ("" is the snap's top),
    or None when it leaves the snap (or loops).
    """
    if depth > 40 or target.startswith("/"):
        return None
    parts = [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        here = "/".join(parts)
        if here in links:
            resolved = _resolve("/".join(parts[:-1]), links[here], links, depth + 1)
            if resolved is None:
                return None
            parts = [p for p in resolved.split("/") if p]
    return "/".join(parts)


def check_apps(info: SnapInfo, lookup: object, where: str) -> None:
    """check_apps checks that each app's program is an executable file of the snap.

    lookup(path) returns (kind, mode) of the member at path, symlinks
    followed, or None.
    """
    assert callable(lookup)
    for app in info.apps.values():
        found = lookup(app.executable)
        if found is None:
            raise InvalidSnapError(f"cannot use snap {where}: app {app.name!r}: its command "
                                   f"{app.executable!r} is not in the snap")
        kind, mode = found
        if kind != "file" or not mode & 0o111:
            raise InvalidSnapError(f"cannot use snap {where}: app {app.name!r}: its command "
                                   f"{app.executable!r} is not an executable file")


def with_hooks(info: SnapInfo, found: list[str], lookup: object, where: str) -> SnapInfo:
    """with_hooks adds to info the hooks found in meta/hooks/ (names of entries there) and checks them all.

    A hook snap.yaml declares must be there; every hook must be an
    executable file (lookup as for check_apps). Entries that are not hooks
    of HOOKS are ignored, as snapd ignores hooks it does not support.
    """
    assert callable(lookup)
    hooks = dict(info.hooks)
    for name in sorted(found):
        if name in HOOKS:
            hooks.setdefault(name, HookInfo(name))
        else:
            log.debug("snap %s: ignoring %s/%s: not a hook (known: %s)", where, HOOKS_DIR, name, ", ".join(HOOKS))
    for name in sorted(hooks):
        kind_mode = lookup(f"{HOOKS_DIR}/{name}")
        if kind_mode is None:
            raise InvalidSnapError(f"cannot use snap {where}: hook {name!r} is declared but there is no "
                                   f"{HOOKS_DIR}/{name}")
        kind, mode = kind_mode
        if kind != "file" or not mode & 0o111:
            raise InvalidSnapError(f"cannot use snap {where}: hook {name!r}: {HOOKS_DIR}/{name} is not an "
                                   "executable file")
    return dataclasses.replace(info, hooks=hooks) if hooks != dict(info.hooks) else info


def open_snap(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> SnapFile:
    """open_snap opens and checks a snap file (close it, or use it in a with block)."""
    return SnapFile(path, limits)


def read_info(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> SnapInfo:
    """read_info returns the checked SnapInfo of a snap file."""
    with SnapFile(path, limits) as snap:
        return snap.info()

