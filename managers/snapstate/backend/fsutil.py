# SPDX-License-Identifier: GPL-3.0-or-later
"""File-system helpers of the backend: atomic writes, renames, removals and copies.

Each one is safe to run again after a crash part-way through it: a file is
written under a temporary name and renamed, a tree is renamed aside before
it is removed, so a path is either complete or absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from pathlib import Path

log = logging.getLogger("managers.snapstate")


def fsync_dir(path: Path) -> None:
    """fsync_dir makes a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """atomic_write replaces path with data: a temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_symlink(target: str, path: Path) -> None:
    """atomic_symlink makes path a symlink to target, replacing what was there in one rename."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove(path: Path) -> bool:
    """remove deletes a file or symlink if it is there; it returns whether it was."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_tree(path: Path) -> None:
    """remove_tree deletes a directory tree: renamed aside first, so it is never left half there."""
    aside = path.with_name(f".{path.name}.removing")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        if aside.exists():
            _rmtree(aside)
        os.rename(path, aside)
    if aside.exists() or aside.is_symlink():
        _rmtree(aside)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    # Make sure directories we own are writable so their entries can go.
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
    shutil.rmtree(path)


def remove_empty_dir(path: Path) -> None:
    """remove_empty_dir deletes path if it is an empty directory."""
    with contextlib.suppress(FileNotFoundError, OSError):
        path.rmdir()


def copy_tree(src: Path, dst: Path) -> None:
    """copy_tree copies a data directory: files with their metadata, symlinks as symlinks.

    FIFOs are made again; sockets and devices are not copied (a service
    makes its sockets again; a snap has no business with device nodes).
    """
    def copy(s: str, d: str) -> None:
        mode = os.lstat(s).st_mode
        if stat.S_ISREG(mode):
            shutil.copy2(s, d)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, stat.S_IMODE(mode))
        else:
            log.info("not copying %s: it is a socket or device", s)

    shutil.copytree(src, dst, symlinks=True, copy_function=copy)
