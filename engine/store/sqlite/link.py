# SPDX-License-Identifier: GPL-3.0-or-later
"""DbLink: a SQLite store's connection, and the process's hold on the database file.

A writing link holds the database's writer lock (engine.store.sqlite.lock) from before
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

from sqlalchemy import Engine, create_engine, event, pool

from ...db import SYNCHRONOUS_MODES, DatabaseOptions
from ...errors import DatabaseError
from . import lock as dbfile
from .checks import check_contents, check_path, is_wal, open_error
from .schema import QUICK_CHECK_LIMIT, check_schema, prepare_schema

if TYPE_CHECKING:
    from ..location import Location
    from .lock import FileHandle

log = logging.getLogger("engine.db")

#: The oldest SQLite the engine's SQL runs on (upserts, JSON functions).
MIN_SQLITE = (3, 24, 0)


def make_engine(where: Location, options: DatabaseOptions, *, read_only: bool = False,
                immutable: bool = False) -> Engine:
    """make_engine creates the SQLAlchemy engine of a SQLite location, with the engine's pragmas.

    The file is opened through its URI filename (Location.uri), never
    through a SQLAlchemy URL: no part of its name is read as a parameter.
    read_only opens it with mode=ro and query_only as a second guard, so
    that nothing (no schema, no checkpoint, no journal mode) is ever written
    through it; immutable (no locks, no write-ahead log) is for a WAL
    database that no connection has open (it has no -wal file): opened the
    ordinary way, SQLite would create its -wal and -shm files (or fail, in
    a directory the reader may not write).
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise DatabaseError(f"cannot open a state database: SQLite {'.'.join(map(str, MIN_SQLITE))} or newer "
                            f"is needed, this Python has {sqlite3.sqlite_version}")
    if options.synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {options.synchronous!r}")
    connect_args: dict[str, Any] = {"check_same_thread": False, "isolation_level": None,
                                    "timeout": options.busy_timeout}
    if where.file is None:
        engine = create_engine("sqlite://", poolclass=pool.StaticPool,
                               creator=lambda: sqlite3.connect(":memory:", **connect_args))
    else:
        uri = where.uri(read_only=read_only, immutable=immutable)
        engine = create_engine("sqlite://", poolclass=pool.NullPool,
                               creator=lambda: sqlite3.connect(uri, uri=True, **connect_args))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        dbapi_conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
        if read_only:
            dbapi_conn.execute("PRAGMA query_only = ON")

    if not read_only:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # pysqlite does not begin before DDL; migrations must be atomic.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class DbLink:
    """DbLink is one State's SQLite connection and hold on its database file."""

    def __init__(self, engine: Engine, proxy: Any, where: Location, options: DatabaseOptions,
                 file: FileHandle | None, snapshot: tuple[int, int] | None) -> None:
        self._engine = engine
        self._proxy = proxy  # the pool's connection: it closes when dropped
        self.where = where
        self.target = where.label
        self._options = options
        self._file = file
        # For an immutable read-only link: the file's size and mtime when it was opened.
        self._snapshot = snapshot

    @classmethod
    def open(cls, where: Location, options: DatabaseOptions, *, read_only: bool, schema: bool = True) -> DbLink:
        """open checks, locks (a writer) and connects to the database, creating or upgrading it (a writer).

        schema False (read_only only) leaves the schema unchecked: for
        inspect, which reports on a database of any revision.

        Everything taken is given back when it fails: the locks, the
        descriptors, and any file this open created.
        """
        target = where.label
        file: FileHandle | None = None
        if where.file is not None:
            path = Path(where.file)
            check_path(path, target, read_only=read_only)  # before anything is created
            file = dbfile.acquire(path, target, write=not read_only)
        # SQLite's files beside the database that this open may create (and
        # must not leave behind if it fails, on a full disk say).
        new_sides = [p for p in _side_files(where) if not p.exists()] if file is not None and file.writing else []
        engine: Engine | None = None
        proxy: Any = None
        try:
            if file is not None and file.writing:
                file.lock_log(where.beside("-wal"), target)  # before SQLite meets another file's log
            existing = file is not None and check_contents(file, target, read_only=read_only)
            snapshot = None
            if read_only:
                assert file is not None
                if is_wal(file.read_header(20)) and not where.beside("-wal").exists():
                    snapshot = _stamp(file)
            engine = make_engine(where, options, read_only=read_only, immutable=snapshot is not None)
            try:
                proxy = engine.raw_connection()
                raw = proxy.driver_connection
                if read_only:
                    if schema:
                        check_schema(raw, target, check=file is not None and file.size() <= QUICK_CHECK_LIMIT)
                else:
                    prepare_schema(engine, raw, target, existing=existing, memory=file is None,
                                   size=file.size() if file is not None else 0)
                    # A read opens the write-ahead log (creating the -wal file), which this
                    # connection then keeps open, and SQLite keeps, until it closes.
                    raw.execute("PRAGMA schema_version").fetchone()
            except sqlite3.Error as e:
                raise open_error(e, where, read_only=read_only) from e
            if file is not None and file.writing:
                file.lock_log(where.beside("-wal"), target)
            return cls(engine, proxy, where, options, file, snapshot)
        except BaseException:
            if proxy is not None:
                proxy.close()
            if engine is not None:
                engine.dispose()
            if file is not None:
                _remove_unused(new_sides)  # still under the writer lock: nobody else wrote them
                file.close(remove_created=True)  # a first open that failed leaves no empty file
            raise

    @property
    def engine(self) -> Engine:
        """engine is the link's SQLAlchemy engine (read-only for a read-only link)."""
        return self._engine

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
        return self._snapshot != _stamp(self._file) or self.where.beside("-wal").exists()

    def changed_under_snapshot(self) -> bool:
        """changed_under_snapshot says whether the file changed since the snapshot was taken."""
        return self._snapshot is not None and self._file is not None and self._snapshot != _stamp(self._file)

    def reconnect(self) -> None:
        """reconnect replaces a stale snapshot: through SQLite's locks now, or a new snapshot if no writer is left."""
        assert self._file is not None
        snapshot = _stamp(self._file) if not self.where.beside("-wal").exists() else None
        try:
            engine = make_engine(self.where, self._options, read_only=True, immutable=snapshot is not None)
            proxy = engine.raw_connection()
        except sqlite3.Error as e:
            raise open_error(e, self.where, read_only=True) from e
        old_proxy, old_engine = self._proxy, self._engine
        self._proxy, self._engine, self._snapshot = proxy, engine, snapshot
        old_proxy.close()
        old_engine.dispose()

    # -- the end of writing -----------------------------------------------------------

    def replaced(self) -> str | None:
        """replaced says how the path stopped naming this writer's file (None: it still does, or a reader)."""
        if not self.writing:
            return None
        assert self._file is not None
        return self._file.replaced()

    def owns_log(self) -> bool:
        """owns_log says whether the -wal name beside the path is still this writer's log."""
        return self._file is not None and self._file.owns_log(self.where.beside("-wal"))

    def checkpoint(self) -> None:
        """checkpoint folds the write-ahead log into the database file and truncates it (a writer only)."""
        if not self.writing or (self.replaced() is not None and not self.owns_log()):
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
        """close closes the connection, then lets go of the file (and the writer lock).

        A writer whose path names another file now also removes its
        write-ahead log and index from beside the path (SQLite leaves them
        there when the database was moved): the next writer on the path
        would read their pages into the other file.
        """
        stray = self.replaced() is not None and self.owns_log()
        self._proxy.close()
        self._engine.dispose()
        if stray:
            _remove_stray_log(self.where)  # still under this writer's lock on the log
        if self._file is not None:
            self._file.close()


def _remove_stray_log(where: Location) -> None:
    wal, shm = where.beside("-wal"), where.beside("-shm")
    try:
        size = wal.stat().st_size
    except OSError:
        return
    if size:  # the checkpoint at close did not empty it (a reader held it)
        log.error("the write-ahead log %s still holds pages of a state database file that is no longer at %s; "
                  "remove it before opening %s again", wal, where.label, where.label)
        return
    for p in (wal, shm):
        with contextlib.suppress(OSError):
            p.unlink()


def _side_files(where: Location) -> list[Path]:
    if where.file is None:
        return []
    return [where.beside("-wal"), where.beside("-shm")]


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
