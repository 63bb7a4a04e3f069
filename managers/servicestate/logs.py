# SPDX-License-Identifier: GPL-3.0-or-later
"""The services' logs: one file per service, rotated by the supervisor, read by `overlord logs`."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ManagerError

#: LOG_MAX is the size at which a service's log is rotated; LOG_KEEP rotated files are kept (.1 newest).
LOG_MAX = 1024 * 1024
LOG_KEEP = 2


def rotate_log(path: Path, limit: int = LOG_MAX) -> None:
    """rotate_log moves a log over limit bytes aside (copy, then truncate: the service keeps writing to it)."""
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
        while chunk := src.read(256 * 1024):
            dst.write(chunk)
        src.truncate(0)  # the service's descriptor is O_APPEND: its next line lands at the new end


def read_log_lines(path: Path, n: int | None) -> list[str]:
    """read_log_lines returns the last n lines of a log and its rotated copies (all of them with None)."""
    lines: list[str] = []
    for p in [path.with_name(f"{path.name}.{i}") for i in range(LOG_KEEP, 0, -1)] + [path]:
        try:
            data = p.read_bytes()
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
