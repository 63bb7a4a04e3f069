# SPDX-License-Identifier: GPL-3.0-or-later
"""The services' logs: one file per service, rotated by the supervisor, read by `overlord logs`."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from ..errors import ManagerError

#: LOG_MAX is the size at which a service's log is rotated; LOG_KEEP rotated files are kept (.1 newest).
LOG_MAX = 1024 * 1024
LOG_KEEP = 2


def _tail(f: BinaryIO, size: int, most: int) -> bytes:
    """_tail is the last most bytes of an open file of size bytes, from the start of a line when it is cut."""
    if size <= most:
        f.seek(0)
        return f.read(most)
    f.seek(size - most)
    data = f.read(most)
    cut = data.find(b"\n") + 1
    return data[cut:] if 0 < cut < len(data) else data


def rotate_log(path: Path, limit: int = LOG_MAX) -> None:
    """rotate_log moves a log over limit bytes aside (copy, then truncate: the service keeps writing to it).

    The copy keeps the log's last limit bytes only: a service that wrote
    gigabytes between two checks leaves rotated copies of limit bytes each,
    not copies of all it wrote.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size <= limit:
        return
    for i in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    with open(path, "r+b") as src, open(path.with_name(f"{path.name}.1"), "wb") as dst:
        dst.write(_tail(src, os.fstat(src.fileno()).st_size, limit))
        src.truncate(0)  # the service's descriptor is O_APPEND: its next line lands at the new end


def read_log_lines(path: Path, n: int | None, most: int = LOG_MAX) -> list[str]:
    """read_log_lines returns the last n lines of a log and its rotated copies (all of them with None).

    At most the last most bytes of each file are read (the log grows past
    the rotation size between two checks: its end is what is shown), so
    memory is bounded whatever the service wrote.
    """
    lines: list[str] = []
    for p in [path.with_name(f"{path.name}.{i}") for i in range(LOG_KEEP, 0, -1)] + [path]:
        try:
            with open(p, "rb") as f:
                data = _tail(f, os.fstat(f.fileno()).st_size, most)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno == errno.EACCES:
                raise ManagerError(f"cannot read {p}: permission denied") from None
            raise
        lines.extend(data.decode("utf-8", "replace").splitlines())
    return lines if n is None else lines[-n:] if n > 0 else []


def read_log_since(path: Path, cursor: tuple[int, int] | None) -> tuple[list[str], tuple[int, int]]:
    """read_log_since returns the complete lines of a log written after cursor (inode, offset), and the new cursor.

    Without a cursor it returns no lines, only where the log ends now. A log
    that was rotated (another inode) or truncated (shorter than the offset)
    is read from its start.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; a missing file is no error)
    except FileNotFoundError:
        return [], (0, 0)
    with f:
        st = os.fstat(f.fileno())
        if cursor is None:
            return [], (st.st_ino, st.st_size)
        inode, offset = cursor
        if inode != st.st_ino or offset > st.st_size:
            offset = 0
        f.seek(offset)
        data = f.read(LOG_MAX)
    end = data.rfind(b"\n") + 1  # a line still being written waits for its end
    return data[:end].decode("utf-8", "replace").splitlines(), (st.st_ino, offset + end)
