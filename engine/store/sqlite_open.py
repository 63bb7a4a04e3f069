# SPDX-License-Identifier: GPL-3.0-or-later
"""Opening a SQLite state database: checks, pragmas, schema creation, migrations.

Everything that decides whether a file may be used happens here, before
anything is written to it: a directory, a file that is not SQLite, a damaged
file, a read-only file and a database from a newer program are all refused
with a DatabaseError naming the file and the problem.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, event, pool
from sqlalchemy.engine import make_url

from ..db import (
    BASE,
    ENGINE_TABLES,
    SCHEMA_HEAD,
    SYNCHRONOUS_MODES,
    DatabaseOptions,
    alembic_config,
    known_revisions,
    newer_schema,
)
from ..db import describe as _describe
from ..errors import DatabaseCorruptError, DatabaseError, DatabaseFullError
from ..models import Base
from .views import create_views

if TYPE_CHECKING:
    from .sqlite_lock import FileHandle

log = logging.getLogger("engine.db")

SQLITE_MAGIC = b"SQLite format 3\x00"
#: What PRAGMA quick_check says of a row that breaks a constraint, not of damage.
ROW_PROBLEMS = ("CHECK constraint failed", "NULL value in", "NOT NULL constraint failed")
#: Databases up to this size (about 350,000 tasks) get PRAGMA quick_check
#: when opened, at about 7 ms per MiB; damage in bigger ones is reported
#: (DatabaseCorruptError) when the damaged pages are read.
QUICK_CHECK_LIMIT = 64 * 1024 * 1024
#: The oldest SQLite the engine's SQL runs on (upserts, JSON functions).
MIN_SQLITE = (3, 24, 0)


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


def file_of_url(url: str) -> Path | None:
    """file_of_url returns the database file a SQLite URL names, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a SQLite URI filename (uri=true)
        parts = urlsplit(database)
        if "mode=memory" in parts.query or parts.path in ("", ":memory:"):
            return None
        return Path(unquote(parts.path))
    return Path(database)


def disk_full(path: Path) -> bool:
    """disk_full says whether the file system holding path has (almost) no space left for SQLite."""
    try:
        vfs = os.statvfs(path.parent if str(path.parent) else ".")
    except OSError:
        return False
    return vfs.f_bavail * vfs.f_frsize < 128 * 1024  # less than a -shm file and a few pages


def open_error(e: sqlite3.Error, target: str, path: Path | None, *, read_only: bool) -> DatabaseError:
    """open_error turns a driver error met while opening into one clear line."""
    error = sqlite_error(e, _describe(target))
    code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
    if path is None or isinstance(error, DatabaseFullError):
        return error
    if code == 10 and disk_full(path):  # SQLITE_IOERR: growing the -shm or -wal file failed
        return DatabaseFullError(f"{_describe(target)}: the disk is full ({' '.join(str(e).split())})")
    if read_only and code == 14:  # SQLITE_CANTOPEN
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        if wal.exists() and not shm.exists():
            return DatabaseError(f"{_describe(target)}: its write-ahead log {wal} needs {shm}, which cannot be "
                                 f"created here; open it once for writing, or ask its owner to")
    return error


def read_only_uri(path: Path, *, immutable: bool) -> str:
    """read_only_uri is the SQLite URI that opens path without ever writing to it.

    immutable (no locks, no write-ahead log) is for a WAL database that no
    connection has open (it has no -wal file): opened the ordinary way,
    SQLite would create its -wal and -shm files (or fail, in a directory
    the reader may not write).
    """
    return f"file:{quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def make_engine(url: str, options: DatabaseOptions, *, read_only: str | None = None) -> Engine:
    """make_engine creates the SQLAlchemy engine with the engine's pragmas.

    read_only is a URI from read_only_uri to open instead of url, with
    query_only as a second guard, so that nothing (no schema, no
    checkpoint, no journal mode) is ever written through it.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise DatabaseError(f"cannot open a state database: SQLite {'.'.join(map(str, MIN_SQLITE))} or newer "
                            f"is needed, this Python has {sqlite3.sqlite_version}")
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        raise DatabaseError(f"cannot open state database {sa_url!r}: only SQLite databases are supported")
    if sa_url.get_driver_name() not in ("pysqlite", ""):
        raise DatabaseError(f"cannot open state database {sa_url!r}: use the pysqlite driver (sqlite:///path)")
    if options.synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {options.synchronous!r}")
    memory = sa_url.database in (None, "", ":memory:")
    connect_args: dict[str, Any] = {"check_same_thread": False, "isolation_level": None,
                                    "timeout": options.busy_timeout}
    if read_only is not None:
        uri = read_only
        engine = create_engine("sqlite://", poolclass=pool.NullPool,
                               creator=lambda: sqlite3.connect(uri, uri=True, **connect_args))
    else:
        engine = create_engine(sa_url, poolclass=pool.StaticPool if memory else pool.NullPool,
                               connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        dbapi_conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
        if read_only is not None:
            dbapi_conn.execute("PRAGMA query_only = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # pysqlite does not begin before DDL; migrations must be atomic.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def inspect_revision(raw: sqlite3.Connection, target: str, *, check: bool) -> str | None:
    """inspect_revision returns the schema revision of an existing database.

    None means an empty database. Damage, foreign tables and unknown
    revisions raise DatabaseError; nothing is written.
    """
    try:
        if check:
            problems = [" ".join(str(row[0]).split()) for row in raw.execute("PRAGMA quick_check(20)")]
            # Rows that break a CHECK or NOT NULL constraint (hand-edited with
            # constraints off) are not damage to the file: the engine reports
            # each such row, naming it, when it meets it, and runs the rest.
            damage = [p for p in problems if p != "ok" and not p.startswith(ROW_PROBLEMS)]
            if damage:
                raise DatabaseCorruptError(f"{_describe(target)}: the database is corrupt ({'; '.join(damage)})")
            if len(damage) < len(problems) and problems != ["ok"]:
                log.warning("state database %s has hand-edited rows that break its constraints (%s); "
                            "they are reported and left alone when met", target, "; ".join(problems))
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "alembic_version" not in tables:
            foreign = ", ".join(sorted(tables)[:5])
            raise DatabaseError(f"{_describe(target)}: it is a SQLite database of another program (tables: {foreign})")
        rows = raw.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.DatabaseError as e:
        raise sqlite_error(e, _describe(target)) from None
    if not rows:
        if tables & ENGINE_TABLES:
            raise DatabaseCorruptError(
                f"{_describe(target)}: its alembic_version table is empty, so the revision of its schema "
                f"is unknown (it has the engine's tables: {', '.join(sorted(tables & ENGINE_TABLES))}); "
                "restore the row that names its revision (alembic stamp) before opening it")
        return BASE  # stamped at Alembic's base: upgraded to head like any older schema
    if len(rows) != 1:
        raise DatabaseCorruptError(f"{_describe(target)}: it has {len(rows)} schema revisions recorded, expected one")
    return str(rows[0][0])


def check_schema(raw: sqlite3.Connection, target: str, *, check: bool) -> None:
    """check_schema refuses, without writing anything, a database that cannot be read as it is.

    The read-only counterpart of prepare_schema: a reader never creates or
    upgrades a schema.
    """
    revision = inspect_revision(raw, target, check=check)
    if revision == SCHEMA_HEAD:
        return
    if revision is None:
        raise DatabaseCorruptError(f"{_describe(target)}: it is not a state database (a SQLite database "
                                   "with no tables)")
    if revision == BASE:
        raise DatabaseCorruptError(f"{_describe(target)} read-only: it records no schema revision "
                                   "(its alembic_version table is empty)")
    if revision not in known_revisions():
        raise newer_schema(target, revision)
    raise DatabaseError(f"{_describe(target)} read-only: its schema revision {revision!r} is older than "
                        f"this program's {SCHEMA_HEAD!r}; open it once for writing to upgrade it")


def prepare_schema(engine: Engine, raw: sqlite3.Connection, target: str, *, existing: bool, memory: bool) -> None:
    """prepare_schema creates a new schema or upgrades an older one to head."""
    check = existing and not memory and os.path.getsize(target) <= QUICK_CHECK_LIMIT
    revision = inspect_revision(raw, target, check=check) if existing or memory else None
    if revision == SCHEMA_HEAD:
        return
    if revision not in (None, BASE) and revision not in known_revisions():
        raise newer_schema(target, revision)
    if not memory:
        raw.execute("PRAGMA journal_mode = WAL")
    if revision is None:
        # A new database: the models are the schema of the head revision
        # (tests prove the migrated schema equals this one).
        with engine.begin() as conn:
            Base.metadata.create_all(conn)
            create_views(conn)
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
                                 "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
            conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))
            conn.exec_driver_sql("INSERT INTO sequences (name, last_id) VALUES ('change', 0), ('task', 0), ('lane', 0)")
        return
    from alembic import command

    log.info("upgrading state database %s from schema %s to %s", target, revision, SCHEMA_HEAD)
    cfg = alembic_config()
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    except sqlalchemy.exc.DBAPIError as e:  # one line, not the statement that failed
        raise sqlite_error(e, f"cannot upgrade state database {target} from schema {revision}") from None


def constraint_violations(raw: sqlite3.Connection) -> list[str]:
    """constraint_violations checks every row against the models' CHECK constraints.

    SQLite's integrity_check skips CHECK constraints on a read-only
    connection; this runs them as queries (reading only), one line per
    constraint that some rows break, naming the table, the constraint and
    how many rows.
    """
    from sqlalchemy import CheckConstraint
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    problems = []
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            continue
        for constraint in table.constraints:
            if not isinstance(constraint, CheckConstraint):
                continue
            only = getattr(constraint, "_ddl_if", None)  # json_check: one variant per dialect
            if only is not None and only.dialect not in (None, "sqlite"):
                continue
            expr = str(constraint.sqltext.compile(dialect=sqlite_dialect.dialect()))
            n = raw.execute(f"SELECT count(*) FROM {table.name} WHERE NOT ({expr})").fetchone()[0]
            if n:
                name = constraint.name if isinstance(constraint.name, str) else expr
                rows = "1 row breaks" if n == 1 else f"{n} rows break"
                problems.append(f"CHECK constraint failed in {table.name}: {rows} {name}")
    return problems
