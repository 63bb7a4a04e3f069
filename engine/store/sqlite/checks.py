# SPDX-License-Identifier: GPL-3.0-or-later
"""What the file system and the file's first bytes say of a SQLite state database, before SQLite opens it.

Everything that decides from outside SQLite whether a file may be used
happens here, before anything is written to it: a directory, a FIFO, a file
that is not SQLite, a truncated file, a file with several names, a
read-only file or directory are all refused with a DatabaseError naming the
file and the problem. The driver's errors become the engine's here too.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ...db import describe as _describe
from ...errors import DatabaseCorruptError, DatabaseError, DatabaseFullError

if TYPE_CHECKING:
    from ..location import Location
    from .lock import FileHandle

SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_error(e: BaseException, where: str) -> DatabaseError:
    """sqlite_error turns a driver error into the engine's error, on one line."""
    cause = getattr(e, "orig", None) or e  # SQLAlchemy wraps driver errors
    text = " ".join(str(cause).split())
    code = getattr(cause, "sqlite_errorcode", 0) or 0
    if code & 0xFF in (11, 26) or "malformed" in text or "not a database" in text:
        return DatabaseCorruptError(f"{where}: the database is corrupt or truncated ({text})")
    if code & 0xFF == 13 or "disk is full" in text:  # SQLITE_FULL: the disk, or max_page_count
        return DatabaseFullError(f"{where}: the disk is full ({text})")
    return DatabaseError(f"{where}: {text}")


def check_path(path: Path, target: str, *, read_only: bool) -> None:
    """check_path refuses, from what the file system says of it, a path that cannot hold a state database.

    Nothing is opened or created: a writer may create a missing file later,
    a reader (read_only) needs an existing, readable one. Permission bits
    are judged as written (a file with no write bit is read-only, also for
    root).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise DatabaseError(f"{_describe(target)}: directory {parent} does not exist") from None
        if read_only:
            raise DatabaseError(f"{_describe(target)}: no such file") from None
        _check_writable_dir(parent, target)
        return
    except OSError as e:
        raise DatabaseError(f"{_describe(target)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatabaseError(f"{_describe(target)}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseError(f"{_describe(target)}: it is not a regular file")
    if not (st.st_mode & 0o444) or not os.access(path, os.R_OK):
        raise DatabaseError(f"{_describe(target)}: the file is unreadable (permission denied)")
    if read_only:
        return
    if not (st.st_mode & 0o222) or not os.access(path, os.W_OK):
        raise DatabaseError(f"{_describe(target)}: the file is read-only")
    _check_writable_dir(path.parent, target)


def is_wal(header: bytes) -> bool:
    """is_wal says whether a database header is that of a WAL-mode database."""
    return len(header) >= 20 and header[18] == 2 and header[19] == 2


def check_contents(file: FileHandle, target: str, *, read_only: bool) -> bool:
    """check_contents checks the file's header, read through the process's descriptor of it.

    It returns whether the file already holds data (False for a new, empty
    file, which a writer makes a new database and a reader refuses).
    """
    try:
        links = os.fstat(file.fd).st_nlink
        if links > 1:
            raise DatabaseError(
                f"{_describe(target)}: the file has {links} names (hard links), and SQLite keeps the write-ahead "
                "log beside the name a database is opened by, so opening it by another name could lose or "
                "corrupt commits; copy the file instead of linking it")
        if file.size() == 0:
            if read_only:
                raise DatabaseCorruptError(f"{_describe(target)}: the file is empty, it is not a state database")
            return False
        header = file.read_header(100)
    except OSError as e:
        raise DatabaseError(f"{_describe(target)}: {e.strerror}") from None
    if not header.startswith(SQLITE_MAGIC):
        raise DatabaseCorruptError(f"{_describe(target)}: the file is not a SQLite database")
    if len(header) < 100:
        raise DatabaseCorruptError(f"{_describe(target)}: the file is truncated (database is corrupt)")
    return True


def _check_writable_dir(directory: Path, target: str) -> None:
    # SQLite writes its -wal and -shm files beside the database.
    try:
        mode = directory.stat().st_mode
    except OSError as e:
        raise DatabaseError(f"{_describe(target)}: {e.strerror}") from None
    if not (mode & 0o222) or not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseError(f"{_describe(target)}: directory {directory} is read-only")


def disk_full(path: Path) -> bool:
    """disk_full says whether the file system holding path has (almost) no space left for SQLite."""
    try:
        vfs = os.statvfs(path.parent if str(path.parent) else ".")
    except OSError:
        return False
    return vfs.f_bavail * vfs.f_frsize < 128 * 1024  # less than a -shm file and a few pages


def open_error(e: sqlite3.Error, where: Location, *, read_only: bool) -> DatabaseError:
    """open_error turns a driver error met while opening into one clear line."""
    target = where.label
    error = sqlite_error(e, _describe(target))
    code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
    if where.file is None or isinstance(error, DatabaseFullError):
        return error
    if code == 10 and disk_full(Path(where.file)):  # SQLITE_IOERR: growing the -shm or -wal file failed
        return DatabaseFullError(f"{_describe(target)}: the disk is full ({' '.join(str(e).split())})")
    if read_only and code == 14:  # SQLITE_CANTOPEN
        wal, shm = where.beside("-wal"), where.beside("-shm")
        if wal.exists() and not shm.exists():
            return DatabaseError(f"{_describe(target)}: its write-ahead log {wal} needs {shm}, which cannot be "
                                 f"created here; open it once for writing, or ask its owner to")
    return error
