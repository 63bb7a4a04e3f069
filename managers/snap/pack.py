# SPDX-License-Identifier: GPL-3.0-or-later
"""pack: build a snap file from a directory, deterministically (like ``snap pack``).

The same directory gives the same bytes: members sorted by path, every time
stamp 1980-01-01, modes reduced to 0644/0755 (files) and 0755 (directories),
owners not recorded, deflate at level 9. The result is checked like any
snap file before it is put in place: written to a new file of a random name
beside the output, created exclusively without following symlinks, then
renamed over the output.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import zipfile
from pathlib import Path

from ..errors import InvalidSnapError
from .container import SNAP_YAML, SnapFile
from .info import MAX_YAML, SnapInfo
from .limits import DEFAULT_LIMITS, Limits

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=_EPOCH)
    zi.create_system = 3
    zi.external_attr = mode << 16
    if stat.S_ISDIR(mode):
        zi.external_attr |= 0x10  # MS-DOS directory flag
    return zi


def pack(directory: str | Path, output: str | Path | None = None, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """pack builds a snap from directory and returns its path.

    output is a file or an existing directory to put <name>_<version>.snap
    in (default: the current directory).
    """
    src = Path(directory)
    if not src.is_dir():
        raise InvalidSnapError(f"cannot pack {src}: it is not a directory")
    yaml_path = src / SNAP_YAML
    if yaml_path.is_symlink() or not yaml_path.is_file():
        raise InvalidSnapError(f"cannot pack {src}: it has no {SNAP_YAML} file")
    data = yaml_path.read_bytes()[:MAX_YAML + 1]
    info = SnapInfo.from_yaml(data, str(yaml_path))
    out = Path(output) if output is not None else Path.cwd()
    if out.is_dir():
        out = out / f"{info.name}_{info.version}.snap"
    try:
        fd, tmp = _create_partial(out)
    except OSError as e:
        raise InvalidSnapError(f"cannot pack {src} into {out}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w+b") as f:
            with zipfile.ZipFile(f, "w") as z:
                for path, mode, content in _walk(src):
                    zi = _entry(path, mode)
                    if stat.S_ISREG(mode):
                        z.writestr(zi, content, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                    else:
                        z.writestr(zi, content, compress_type=zipfile.ZIP_STORED)
            f.flush()
            os.fsync(f.fileno())
        with SnapFile(tmp, limits) as snap:
            snap.info()  # every check an install makes
        os.replace(tmp, out)
    except InvalidSnapError as e:
        tmp.unlink(missing_ok=True)
        raise InvalidSnapError(str(e).replace(str(tmp), str(src))) from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InvalidSnapError(f"cannot pack {src} into {out}: {e.strerror or e}") from None
    return out


def _create_partial(out: Path) -> tuple[int, Path]:
    """_create_partial creates a new file beside out, under a name nobody could plant a link at beforehand.

    The name is random and the file created exclusively, never through a
    symlink (O_EXCL, O_NOFOLLOW): root packing into a directory another
    user can write does not write through a link planted there. The mode
    is 0666 less the umask, as for any new file.
    """
    for _ in range(100):
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.partial")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "cannot find a free temporary name")


def _walk(src: Path) -> list[tuple[str, int, bytes]]:
    """_walk lists (member name, mode, content) of every entry under src, sorted."""
    out: list[tuple[str, int, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = here / name
            rel = p.relative_to(src).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append((rel, stat.S_IFLNK | 0o777, os.readlink(p).encode()))
            elif stat.S_ISDIR(st.st_mode):
                out.append((rel + "/", stat.S_IFDIR | 0o755, b""))
            elif stat.S_ISREG(st.st_mode):
                exe = 0o755 if st.st_mode & 0o111 else 0o644
                out.append((rel, stat.S_IFREG | exe, p.read_bytes()))
            else:
                raise InvalidSnapError(f"cannot pack {src}: {rel} is not a file, directory or symlink")
    out.sort(key=lambda e: e[0])
    return out
