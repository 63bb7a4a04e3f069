# SPDX-License-Identifier: GPL-3.0-or-later
"""DbLink: a SQLite store's connection, and the process's hold on the database file.

A writing link holds the database's writer lock (engine.store.sqlite_lock) from before
anything is created until close() or release_writer(). A read-only link
never writes: SQLite's mode=ro with query_only, and, for a WAL database that
no connection has open (it has no -wal file), SQLite's immutable mode, so
that not even a -wal or -shm file is created beside it (a user who may not
write the directory could not open it otherwise). Such a snapshot is
checked at every unit of work and replaced once a writer appears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..db import DatabaseOptions
from . import sqlite_lock as dbfile
from .sqlite_open import (
    QUICK_CHECK_LIMIT,
    check_contents,
    check_path,
    check_schema,
    file_of_url,
    is_wal,
    make_engine,
    open_error,
    prepare_schema,
    read_only_uri,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .sqlite_lock import FileHandle

log = logging.getLogger("engine.db")


class DbLink:
    """DbLink is one State's SQLite connection and hold on its database file."""

    def __init__(self, engine: Engine, proxy: Any, target: str, options: DatabaseOptions,
                 file: FileHandle | None, snapshot: tuple[int, int] | None) -> None:
        self._engine = engine
        self._proxy = proxy  # the pool's connection: it closes when dropped
        self.target = target
        self._options = options
        self._file = file
        # For an immutable read-only link: the file's size and mtime when it was opened.
        self._snapshot = snapshot

    @classmethod
    def open(cls, path: Path | None, url: str, target: str, options: DatabaseOptions, *, read_only: bool) -> DbLink:
        """open checks, locks (a writer) and connects to the database, creating or upgrading it (a writer).

        Everything taken is given back when it fails: the lock, the
        descriptor, and any file this open created.
        """
        file: FileHandle | None = None
        if path is not None:
            check_path(path, target, read_only=read_only)  # before anything is created
            file = dbfile.acquire(path, target, write=not read_only)
        # SQLite's files beside the database that this open may create (and
        # must not leave behind if it fails, on a full disk say).
        new_sides = [p for p in _side_files(path) if not p.exists()] if file is not None and file.writing else []
        engine: Engine | None = None
        proxy: Any = None
        try:
            existing = file is not None and check_contents(file, target, read_only=read_only)
            snapshot = None
            uri = None
            if read_only:
                assert file is not None and path is not None
                if is_wal(file.read_header(20)) and not _wal_of(path).exists():
                    snapshot = _stamp(file)
                uri = read_only_uri(path, immutable=snapshot is not None)
            engine = make_engine(url, options, read_only=uri)
            try:
                proxy = engine.raw_connection()
                raw = proxy.driver_connection
                if read_only:
                    check_schema(raw, target, check=file is not None and file.size() <= QUICK_CHECK_LIMIT)
                else:
                    prepare_schema(engine, raw, target, existing=existing, memory=path is None)
            except sqlite3.Error as e:
                raise open_error(e, target, path, read_only=read_only) from e
            return cls(engine, proxy, target, options, file, snapshot)
        except BaseException:
            if proxy is not None:
                proxy.close()
            if engine is not None:
                engine.dispose()
            if file is not None:
                _remove_unused(new_sides)  # still under the writer lock: nobody else wrote them
                file.close(remove_created=True)  # a first open that failed leaves no empty file
            raise

    @staticmethod
    def file_of(url: str) -> Path | None:
        """file_of returns the database file a URL names (None: in memory)."""
        return file_of_url(url)

    @property
    def raw(self) -> sqlite3.Connection:
        """raw is the driver's connection (the Store's)."""
        return cast("sqlite3.Connection", self._proxy.driver_connection)

    @property
    def writing(self) -> bool:
        """writing says whether this link holds the writer lock."""
        return self._file is not None and self._file.writing

    # -- read-only snapshots ------------------------------------------------------

    def stale(self) -> bool:
        """stale says whether an immutable snapshot is out of date (a writer appeared, or the file changed)."""
        if self._snapshot is None or self._file is None:
            return False
        return self._snapshot != _stamp(self._file) or _wal_of(self._file.path).exists()

    def changed_under_snapshot(self) -> bool:
        """changed_under_snapshot says whether the file changed since the snapshot was taken."""
        return self._snapshot is not None and self._file is not None and self._snapshot != _stamp(self._file)

    def reconnect(self) -> None:
        """reconnect replaces a stale snapshot: through SQLite's locks now, or a new snapshot if no writer is left."""
        assert self._file is not None
        path = self._file.path
        snapshot = _stamp(self._file) if not _wal_of(path).exists() else None
        try:
            engine = make_engine("sqlite://", self._options,
                                 read_only=read_only_uri(path, immutable=snapshot is not None))
            proxy = engine.raw_connection()
        except sqlite3.Error as e:
            raise open_error(e, self.target, path, read_only=True) from e
        old_proxy, old_engine = self._proxy, self._engine
        self._proxy, self._engine, self._snapshot = proxy, engine, snapshot
        old_proxy.close()
        old_engine.dispose()

    # -- the end of writing -----------------------------------------------------------

    def checkpoint(self) -> None:
        """checkpoint folds the write-ahead log into the database file and truncates it (a writer only)."""
        if not self.writing:
            return
        try:
            busy, _, _ = self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as e:  # a full disk, say: the log stays and is replayed at the next open
            log.warning("cannot checkpoint state database %s: %s", self.target, e)
            return
        if busy:
            log.info("cannot truncate the write-ahead log of %s now: a reader is using it", self.target)

    def release_writer(self) -> None:
        """release_writer lets another writer take the database; this link may still read."""
        if self._file is not None:
            self._file.release_writer()

    def close(self) -> None:
        """close closes the connection, then lets go of the file (and the writer lock)."""
        self._proxy.close()
        self._engine.dispose()
        if self._file is not None:
            self._file.close()


def _wal_of(path: Path) -> Path:
    # SQLite names the log after the file's real path (it follows symlinks).
    return Path(os.path.realpath(path) + "-wal")


def _side_files(path: Path | None) -> list[Path]:
    if path is None:
        return []
    real = os.path.realpath(path)
    return [Path(real + "-wal"), Path(real + "-shm")]


def _remove_unused(paths: list[Path]) -> None:
    # A -wal with no frame and a -shm shorter than one 32 KiB index page
    # (what a failed first connection leaves) hold nothing.
    for p in paths:
        with contextlib.suppress(OSError):
            if p.stat().st_size < (1 if p.name.endswith("-wal") else 32768):
                p.unlink()


def _stamp(file: FileHandle) -> tuple[int, int]:
    st = os.fstat(file.fd)
    return st.st_size, st.st_mtime_ns
