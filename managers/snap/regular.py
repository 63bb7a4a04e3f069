# SPDX-License-Identifier: GPL-3.0-or-later
"""open_regular: a file from others opened for reading only when it is a regular file.

Opening a FIFO for reading blocks until a writer comes (for ever, holding
whoever opened it), and a device such as /dev/zero or /dev/urandom never
ends; a directory is no file to read. Whatever a path names (a planted
FIFO, a symlink to a device), it is opened without blocking, looked at
through the open descriptor (no race with a rename), and refused unless it
is a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"}


class NotRegularError(OSError):
    """NotRegularError is an OSError (EINVAL, never transient) saying what a path is instead of a regular file."""


def open_regular(path: str | Path) -> int:
    """open_regular opens path for reading and returns the descriptor (blocking), or raises an OSError.

    NotRegularError when path is not a regular file (symlinks are followed, the file they reach is judged).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
            raise NotRegularError(errno.EINVAL, f"it is {kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
