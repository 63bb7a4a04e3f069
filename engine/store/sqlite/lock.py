# SPDX-License-Identifier: GPL-3.0-or-later
"""The descriptor this process keeps on each state database file, and the writer's lock.

One writer per database: a writing State holds an exclusive ``flock`` on the
database file itself. The lock is keyed on the file, not on the name it was
opened by, so a symlink, a hard link, a bind mount or a relative path all
reach the same lock; the kernel drops it when the process dies, so a crash
never blocks a restart. Readers (``State.open(path, read_only=True)``, the
``overlord`` viewer commands, a ``sqlite3`` shell) never take it.

Why one descriptor per file and process, kept open while any State of this
process has the file open: SQLite's own locks on the database file are POSIX
``fcntl`` locks, and closing ANY descriptor of a file drops ALL of the
process's POSIX locks on it, SQLite's included. So this module never closes
a descriptor of a database file while a State of this process uses it, and
everything the engine reads from the file outside SQLite (the header checked
at open) goes through that descriptor. ``flock`` and ``fcntl`` locks are
independent on Linux local filesystems; on NFS the kernel emulates ``flock``
with ``fcntl`` locks, so neither this lock nor SQLite's WAL mode is safe
there (SQLite's documentation says the same of WAL).

The writer also holds a ``flock`` on the database's write-ahead log (the
``-wal`` file beside it) while it writes. SQLite finds the log, and its
``-shm`` index, by name: if the database file is replaced under a running
writer (``mv backup.db state.db``), deleted or moved away, a second writer
on the path would get the lock of the new file and then share the first
writer's log, whose pages belong to the other file. The log's lock refuses
it until the first writer has closed (and checkpointed its log into its own
file). The writer checks before each commit that the path still names its
file (``FileHandle.replaced``): a State whose file was replaced writes no
more.

The lock belongs to the process that took it. A forked child inherits the
descriptor (and with it the lock, which lives in the shared open file
description): the child closes its copy at once (never ``LOCK_UN``, which
would unlock the parent too), so a child that outlives its parent does not
keep the database locked, and the child's States refuse to be used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DatabaseError, DatabaseFullError, DatabaseInUseError

log = logging.getLogger("engine.db")

Key = tuple[int, int]  # (st_dev, st_ino)

#: How many times a refused lock is tried again when its holder cannot be
#: found (it let go between the attempt and the look-up).
_RETRIES = 3


@dataclass
class _File:
    """_File is this process's hold on one database file (one inode)."""

    key: Key
    fd: int
    extra_fds: list[int] = field(default_factory=list)  # opened in a race; closed with fd, never before
    users: int = 0
    writing: bool = False
    wal_fd: int | None = None  # the writer's descriptor of the -wal file, locked


_files: dict[Key, _File] = {}
_mu = threading.Lock()


class FileHandle:
    """FileHandle is one State's use of a database file: the shared descriptor, and the writer lock."""

    def __init__(self, file: _File, path: Path, *, writing: bool, created: bool) -> None:
        self._file = file
        self._path = path
        self._fspath = os.fspath(path)  # (stat before every write transaction: no Path conversion each time)
        self.writing = writing
        self.created = created  # this open created the (empty) file
        self._pid = os.getpid()
        self._closed = False

    @property
    def path(self) -> Path:
        """path is the name the file was opened by."""
        return self._path

    @property
    def fd(self) -> int:
        """fd is the process's descriptor of the file (read it with os.pread; never close it)."""
        return self._file.fd

    def read_header(self, n: int = 100) -> bytes:
        """read_header reads the first n bytes of the file through the shared descriptor."""
        return os.pread(self._file.fd, n, 0)

    def size(self) -> int:
        """size is the file's size in bytes."""
        return os.fstat(self._file.fd).st_size

    def lock_log(self, wal: Path, target: str) -> None:
        """lock_log takes the writer's lock on the write-ahead log wal, if the file exists (a writer only).

        Refused with DatabaseInUseError when another writer holds it: that
        writer has another file open under the database's name (this one
        replaced it, or it was moved away or deleted), and the log holds
        that file's pages.
        """
        with _mu:
            f = self._file
            if not self.writing:
                return
            if f.wal_fd is not None:
                if self.owns_log(wal):
                    return
                # SQLite removed the log and made a new one (a connection of the
                # open, closing, checkpointed it): lock the new one.
                _unlock_log(f)
            try:
                fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            except FileNotFoundError:
                return  # SQLite creates it; locked once it exists
            except OSError as e:
                raise _os_error(e, target) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                st = os.fstat(fd)
                os.close(fd)
                if isinstance(e, BlockingIOError):
                    holder = lock_holder((st.st_dev, st.st_ino))
                    who = f"process {holder}" if holder is not None else "another process"
                    raise DatabaseInUseError(
                        f"cannot open state database {target} for writing: its write-ahead log {wal} is in use by "
                        f"{who}, which has another file open under this name (the database file was replaced, "
                        "moved or deleted while it ran); stop that process first") from None
                raise DatabaseError(f"cannot open state database {target} for writing: cannot lock its "
                                    f"write-ahead log {wal} ({e.strerror})") from None
            f.wal_fd = fd

    def owns_log(self, wal: Path) -> bool:
        """owns_log says whether the name wal still names the write-ahead log this writer locked."""
        fd = self._file.wal_fd
        if fd is None:
            return False
        try:
            st, mine = os.stat(wal), os.fstat(fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def replaced(self) -> str | None:
        """replaced says how the path stopped naming the file this handle has open (None: it still does).

        One stat: cheap enough before every commit (the descriptor's link
        count is asked only to tell a deleted file from a moved one).
        """
        try:
            st = os.stat(self._fspath)
        except (FileNotFoundError, NotADirectoryError):
            try:
                deleted = os.fstat(self._file.fd).st_nlink == 0
            except OSError:
                deleted = False
            return "it was deleted" if deleted else "it was moved away or renamed"
        except OSError:
            return None  # the path cannot be looked at now (a permission changed): not a proof of anything
        if (st.st_dev, st.st_ino) != self._file.key:
            return "another file was put in its place"
        return None

    def release_writer(self) -> None:
        """release_writer drops the writer lock; the handle stays open for reading."""
        with _mu:
            if not self.writing or self._stale():
                self.writing = False
                return
            self.writing = False
            self._file.writing = False
            _unlock_log(self._file)
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fd, fcntl.LOCK_UN)

    def close(self, *, remove_created: bool = False) -> None:
        """close drops this State's use; the descriptor closes with the last user in the process.

        remove_created deletes the file if this handle created it and it is
        still empty (a first open that failed leaves nothing behind).
        """
        with _mu:
            if self._closed or self._stale():
                self._closed = True
                return
            self._closed = True
            f = self._file
            if remove_created and self.created and self.writing:
                # Still under the writer lock: no other process uses the file.
                with contextlib.suppress(OSError):
                    if os.fstat(f.fd).st_size == 0 and _same_file(self._path, f.key):
                        self._path.unlink()
            if self.writing:
                self.writing = False
                f.writing = False
                _unlock_log(f)
                with contextlib.suppress(OSError):
                    fcntl.flock(f.fd, fcntl.LOCK_UN)
            f.users -= 1
            if f.users <= 0:
                _drop(f)

    def _stale(self) -> bool:
        # In a forked child the registry was emptied: this handle is the parent's.
        return self._pid != os.getpid() or _files.get(self._file.key) is not self._file


def acquire(path: Path, target: str, *, write: bool) -> FileHandle:
    """acquire opens (a writer creating it if missing) the file and, for a writer, takes the lock.

    A writer is refused with DatabaseInUseError, naming the process that
    holds the lock, when another writer (in this process or another) has it.
    """
    with _mu:
        f, created = _open(path, target, create=write)
        try:
            if write:
                _lock(f, path, target)
        except BaseException:
            # Not unlinking a file created here: the process that holds the
            # lock may have opened it in between.
            if f.users == 0:
                _drop(f)
            raise
        f.users += 1
        return FileHandle(f, path, writing=write, created=created)


def _open(path: Path, target: str, *, create: bool) -> tuple[_File, bool]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _os_error(e, target) from None
    if st is not None:
        f = _files.get((st.st_dev, st.st_ino))
        if f is not None:
            return f, False  # never a second descriptor: see the module docstring
    created = False
    try:
        if st is None and create:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                created = True
            except FileExistsError:  # another process created it just now
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DatabaseError(f"cannot open state database {target}: no such file") from None
    except OSError as e:
        raise _os_error(e, target) from None
    fst = os.fstat(fd)
    key = (fst.st_dev, fst.st_ino)
    f = _files.get(key)
    if f is not None:  # the name now points at a file this process has open: keep both descriptors
        f.extra_fds.append(fd)
        return f, created
    f = _files[key] = _File(key, fd)
    return f, created


def _lock(f: _File, path: Path, target: str) -> None:
    where = f"cannot open state database {target} for writing"
    real = os.path.realpath(path)
    also = f" (the file {real})" if real != os.path.abspath(path) else ""
    if f.writing:
        raise DatabaseInUseError(f"{where}: it is in use by process {os.getpid()} (this process){also}")
    for _ in range(_RETRIES):
        try:
            fcntl.flock(f.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(f.key)
            if holder is None:
                continue  # it was let go in between: try again
            raise DatabaseInUseError(f"{where}: it is in use by process {holder}{also}") from None
        except OSError as e:
            raise DatabaseError(f"{where}: cannot lock it ({e.strerror}){also}") from None
        f.writing = True
        return
    raise DatabaseInUseError(f"{where}: it is in use by another process (its pid is not in /proc/locks){also}")


def lock_holder(key: Key) -> int | None:
    """lock_holder returns the pid of the process holding a flock on the file key, from /proc/locks."""
    dev, ino = key
    exact = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as proc:
            lines = proc.read().splitlines()
    except OSError:
        return None
    by_inode: list[int] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue  # "->" lines are waiters; POSIX lines are SQLite's
        try:
            pid = int(fields[4])
        except ValueError:
            continue
        if fields[5] == exact:
            return pid
        if fields[5].rsplit(":", 1)[-1] == str(ino):
            by_inode.append(pid)
    # Some filesystems (overlayfs, btrfs subvolumes) show another device number.
    return by_inode[0] if len(by_inode) == 1 else None


def _unlock_log(f: _File) -> None:
    # Closing the descriptor drops its flock. SQLite keeps no POSIX lock on
    # the -wal file (its WAL locks are on the -shm), so nothing of SQLite's
    # is dropped with it.
    if f.wal_fd is not None:
        with contextlib.suppress(OSError):
            os.close(f.wal_fd)
        f.wal_fd = None


def _drop(f: _File) -> None:
    # No State of this process uses the file any more: closing cannot drop
    # locks that a State's SQLite connection still needs.
    if _files.get(f.key) is f:
        del _files[f.key]
    _unlock_log(f)
    for fd in (f.fd, *f.extra_fds):
        with contextlib.suppress(OSError):
            os.close(fd)


def _same_file(path: Path, key: Key) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == key


def _os_error(e: OSError, target: str) -> DatabaseError:
    where = f"cannot open state database {target}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DatabaseFullError(f"{where}: the disk is full ({e.strerror})")
    if e.errno in (errno.EACCES, errno.EPERM):
        return DatabaseError(f"{where}: the file is unreadable (permission denied)")
    return DatabaseError(f"{where}: {e.strerror}")


# -- fork ---------------------------------------------------------------------


def _before_fork() -> None:
    _mu.acquire()


def _after_fork_in_parent() -> None:
    _mu.release()


def _after_fork_in_child() -> None:
    # The lock is the parent's: close the inherited descriptors (closing them
    # releases nothing the parent holds), and let go of the registry so that
    # a State opened in the child starts afresh. The child holds no POSIX
    # locks (fork does not copy them), so nothing of SQLite's is dropped.
    for f in _files.values():
        for fd in (f.fd, *f.extra_fds, *([f.wal_fd] if f.wal_fd is not None else [])):
            with contextlib.suppress(OSError):
                os.close(fd)
    _files.clear()
    _mu.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
