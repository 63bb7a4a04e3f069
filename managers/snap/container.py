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

The check itself is bounded by the limits, whatever the archive holds: the
end-of-central-directory record is read first and the archive refused by
its entry count and the size of its central directory before zipfile
builds its index (Limits.max_entries, Limits.max_index); entry names are
read raw from the central directory (zipfile cuts a name at NUL); each
symlink is resolved once (memoised), the symlinks it goes through
bounded like the kernel's (MAX_LINK_NESTING) and the resolution steps of
the whole archive counted (Limits.max_link_steps). The table of every bound is in
docs/managers.md, "Limits and threats".
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import re
import shutil
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ..errors import InvalidSnapError, ManagerError
from .info import HOOKS, MAX_YAML, HookInfo, SnapInfo
from .limits import DEFAULT_LIMITS, Limits
from .links import LinkResolver, Unresolved
from .regular import open_regular

log = logging.getLogger("managers.snap")

#: SNAP_YAML is where a snap describes itself.
SNAP_YAML = "meta/snap.yaml"
#: HOOKS_DIR holds a snap's hooks, one executable per hook, named for it.
HOOKS_DIR = "meta/hooks"
_CHUNK = 1024 * 1024
#: BLOCK is what each extracted entry is counted as using, beyond its bytes, in the free-space check.
BLOCK = 4096

# The zip records read before zipfile is trusted with the archive (APPNOTE.TXT 4.3.12-4.3.16).
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_LOC64 = struct.Struct("<4sLQL")
_LOC64_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_CDIR = struct.Struct("<4s4B4HL2L5H2L")
_CDIR_SIG = b"PK\x01\x02"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: ZIP_ERRORS are what zipfile raises for a damaged or unusual archive, wherever it reads one: a bad record,
#: a truncated or corrupt deflate stream (zlib.error), a feature it does not implement (a "version needed to
#: extract" past 6.3, patched or strongly encrypted data: NotImplementedError), a bad name (UnicodeDecodeError,
#: a ValueError). Every read of an archive turns them into one InvalidSnapError naming the file.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, zlib.error, EOFError, ValueError,
              struct.error)


def _short(text: str, most: int = 120) -> str:
    """_short is text quoted, its middle cut when longer than most characters (paths may be 4 KiB)."""
    if len(text) <= most:
        return repr(text)
    return repr(text[:most // 2]) + "..." + repr(text[-most // 2:])


class _NotZip(Exception):
    """_NotZip says why a file is not a zip archive."""


class _TooBig(Exception):
    """_TooBig says which limit an archive's index is past."""


@dataclass(frozen=True)
class _Index:
    """_Index is what the end record and the central directory say, read before zipfile reads them."""

    start: int  # where the central directory starts
    names: list[bytes]  # the raw name of each entry, in order


def _read_index(f: BinaryIO, limits: Limits) -> _Index:
    """_read_index reads the end-of-central-directory record (zip64 too) and then the central directory.

    It finds the end record as zipfile does (at the very end, else the
    last one in the final 64 KiB) and refuses by its entry count and
    directory size before reading the directory, whose entries it then
    counts (refusing past the limit as it goes) and whose names it keeps,
    raw: zipfile cuts a name at NUL.
    """
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    if file_size < _EOCD.size:
        raise _NotZip("it is too short")
    if file_size > limits.max_file:
        raise _TooBig(f"it is {file_size} bytes, more than the limit of {limits.max_file} for a snap file")
    f.seek(file_size - _EOCD.size)
    record = f.read(_EOCD.size)
    if record[:4] == _EOCD_SIG and record[-2:] == b"\0\0":
        where = file_size - _EOCD.size
    else:
        start = max(file_size - 65536 - _EOCD.size, 0)
        f.seek(start)
        tail = f.read()
        i = tail.rfind(_EOCD_SIG)
        if i < 0 or len(tail) - i < _EOCD.size:
            raise _NotZip("it has no end-of-central-directory record")
        where, record = start + i, tail[i:i + _EOCD.size]
    _, _, _, _, entries, dir_size, _, _ = _EOCD.unpack(record)
    start_dir = where - dir_size
    if where >= _LOC64.size:
        f.seek(where - _LOC64.size)
        locator = f.read(_LOC64.size)
        if locator[:4] == _LOC64_SIG:
            _, disk, _, disks = _LOC64.unpack(locator)
            if disk != 0 or disks > 1:
                raise _NotZip("it spans several disks")
            if where >= _LOC64.size + _EOCD64.size:
                f.seek(where - _LOC64.size - _EOCD64.size)
                record64 = f.read(_EOCD64.size)
                if record64[:4] == _EOCD64_SIG:
                    fields = _EOCD64.unpack(record64)
                    entries, dir_size = fields[7], fields[8]
                    start_dir = where - _LOC64.size - _EOCD64.size - dir_size
    if entries > limits.max_entries:
        raise _TooBig(f"it has {entries} entries, more than the limit of {limits.max_entries}")
    if dir_size > limits.max_index:
        raise _TooBig(f"its index (central directory) is {dir_size} bytes, more than the limit of "
                      f"{limits.max_index}")
    if start_dir < 0:
        raise _NotZip("its central directory would start before the file does")
    f.seek(start_dir)
    directory = f.read(dir_size)
    names: list[bytes] = []
    pos = 0
    while pos < dir_size:
        if len(directory) - pos < _CDIR.size:
            raise _NotZip("its central directory is truncated")
        fields = _CDIR.unpack_from(directory, pos)
        if fields[0] != _CDIR_SIG:
            raise _NotZip("its central directory has a bad signature")
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        names.append(directory[pos + _CDIR.size:pos + _CDIR.size + name_len])
        if len(names) > limits.max_entries:
            raise _TooBig(f"it has more than the limit of {limits.max_entries} entries")
        pos += _CDIR.size + name_len + extra_len + comment_len
    return _Index(start_dir, names)


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
        #: The symlink resolution steps the checks took (bounded by limits.max_link_steps).
        self.link_steps = 0
        try:
            # One open file for the index and for zipfile: both read the same archive.
            # A regular file only: a FIFO would block the open, a device never end.
            self._file: BinaryIO = open(open_regular(self.path), "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise InvalidSnapError(f"cannot open snap {self._where}: no such file") from None
        except OSError as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: {e.strerror or e}") from None
        try:
            self._open(limits)
        except BaseException:
            self._file.close()
            raise

    def _open(self, limits: Limits) -> None:
        try:
            index = _read_index(self._file, limits)
        except _NotZip as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: it is not a snap (zip) file ({e})") from None
        except _TooBig as e:
            raise self._bad(str(e)) from None
        except OSError as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: {e.strerror or e}") from None
        try:
            self._zip = zipfile.ZipFile(self._file)
        except ZIP_ERRORS as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: it is not a snap (zip) file ({e})") from None
        except OSError as e:
            raise InvalidSnapError(f"cannot open snap {self._where}: {e.strerror or e}") from None
        try:
            self.members = self._check(index)
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
        self._file.close()

    def _bad(self, problem: str) -> InvalidSnapError:
        return InvalidSnapError(f"cannot use snap {self._where}: {problem}")

    # -- checks ------------------------------------------------------------------

    def _check(self, index: _Index) -> dict[str, Member]:
        infos = self._zip.infolist()
        if len(infos) != len(index.names) or getattr(self._zip, "start_dir", index.start) != index.start:
            raise self._bad("its central directory is not where its end record says (a damaged or forged index)")
        members: dict[str, Member] = {}
        total = 0
        for zi, raw in zip(infos, index.names, strict=True):
            if _CONTROL.search(raw):
                shown = raw.decode("utf-8", "replace")
                raise self._bad(f"entry {shown!r} has a control character (NUL, line break...) in its name")
            m = self._member(zi)
            if m.path in members:
                raise self._bad(f"entry {m.path!r} appears twice")
            members[m.path] = m
            total += m.size
            if total > self.limits.max_size:
                raise self._bad(f"its files hold more than the limit of {self.limits.max_size} bytes")
        # Nothing may be below a file or a symlink: each directory a path implies is looked at once.
        not_dirs = {path for path, m in members.items() if m.kind != "dir"}
        implied: set[str] = set()
        for m in members.values():
            parent = m.path.rpartition("/")[0]
            while parent and parent not in implied:
                if parent in not_dirs:
                    raise self._bad(f"entry {m.path!r} is below {parent!r}, which is a {members[parent].kind}")
                implied.add(parent)
                parent = parent.rpartition("/")[0]
        self._resolver = LinkResolver({m.path: m.target for m in members.values() if m.kind == "link"}, self.limits)
        try:
            for path, target in self._resolver.links.items():
                if target.startswith("/"):
                    raise self._bad(f"symlink {_short(path)} points to the absolute path {_short(target)}")
                try:
                    self._resolver.link(path)
                except Unresolved as e:
                    raise self._bad(f"symlink {_short(path)} {e} ({_short(target)})") from None
        finally:
            self.link_steps = self._resolver.steps
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
        if self.limits.prefix + len(path.encode()) > self.limits.max_path or any(len(p.encode()) > 255 for p in parts):
            raise self._bad(f"entry {name[:80]!r}... has a path that is too long (at most {self.limits.max_path} "
                            f"bytes once extracted, {self.limits.prefix} of them before the snap's own path; "
                            "at most 255 a component)")
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
                with self._zip.open(zi) as f:  # bounded reads: the compressed size may lie
                    target = f.read(self.limits.max_link + 1).decode("utf-8")
            except (*ZIP_ERRORS, OSError) as e:
                raise self._bad(f"cannot read the target of symlink {name!r} ({e})") from None
            if not target or len(target.encode()) > self.limits.max_link or "\x00" in target:
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
        except (*ZIP_ERRORS, OSError) as e:
            raise self._bad(f"cannot read {path} ({e})") from None
        if len(data) > limit:
            raise self._bad(f"{path} is more than the limit of {limit} bytes")
        return data

    def info(self) -> SnapInfo:
        """info reads and checks meta/snap.yaml, and checks that every app's program is in the snap."""
        info = SnapInfo.from_yaml(self.read(SNAP_YAML, MAX_YAML), f"{SNAP_YAML} in {self._where}")
        check_apps(info, self._lookup, self._where)
        found = [m.path[len(HOOKS_DIR) + 1:] for m in self.members.values()
                 if posixpath.dirname(m.path) == HOOKS_DIR]
        return with_hooks(info, found, self._lookup, self._where)

    def _lookup(self, path: str) -> tuple[str, int] | None:
        try:
            resolved: str | None = self._resolver.walk("", path)[0]
        except Unresolved:  # as the kernel, which would not find it
            resolved = None
        finally:
            self.link_steps = self._resolver.steps
        m = self.members.get(resolved) if resolved is not None else None
        return None if m is None else (m.kind, m.mode)

    # -- extracting -------------------------------------------------------------------

    def declared_size(self) -> int:
        """declared_size is what extracting writes at most, by the sizes the archive declares."""
        return sum(m.size for m in self.members.values())

    def extract(self, target: str | Path) -> None:
        """extract writes the snap's members into target, a directory that must not exist yet.

        Before anything is written, the declared sizes (plus a block per
        entry and limits.free_margin) must fit in the free space of target's
        file system, and the longest path must fit in limits.max_path once
        under target; while writing, no entry writes more than it declares.
        """
        target = Path(target)
        where = f"cannot extract snap {self._where} into {target}"
        declared = self.declared_size()
        longest = max((len(m.path.encode()) for m in self.members.values()), default=0)
        if len(os.fsencode(target)) + 1 + longest > self.limits.max_path:
            raise InvalidSnapError(f"{where}: a path of the snap would be longer than {self.limits.max_path} "
                                   "bytes there")
        need = declared + BLOCK * len(self.members) + self.limits.free_margin
        try:
            free = shutil.disk_usage(target.parent).free
        except OSError as e:
            raise InvalidSnapError(f"{where}: {e.strerror or e}") from None
        if free < need:
            raise ManagerError(f"{where}: it needs {need} bytes ({declared} declared, with a margin), "
                               f"{free} are free")
        try:
            os.mkdir(target, 0o755)
        except OSError as e:
            raise InvalidSnapError(f"{where}: {e.strerror}") from None
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
                written += self._write(m, dest, declared - written)
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
        except ZIP_ERRORS as e:
            raise self._bad(f"cannot extract {m.path!r} ({e})") from None
        return n


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

