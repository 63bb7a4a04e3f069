# SPDX-License-Identifier: GPL-3.0-or-later
"""Opening the state database: checks, pragmas, schema creation, migrations.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, pool
from sqlalchemy.engine import make_url

from .errors import DatabaseCorruptError, DatabaseError, SchemaVersionError
from .models import Base
from .views import create_views

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("engine.db")

#: The Alembic revision this code writes; tests check it is the script head.
SCHEMA_HEAD = "0003_views"
#: What inspect_revision reports for a database at Alembic's base revision.
BASE = "base"

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Databases up to this size (about 350,000 tasks) get PRAGMA quick_check
#: when opened, at about 7 ms per MiB; damage in bigger ones is reported
#: (DatabaseCorruptError) when the damaged pages are read.
QUICK_CHECK_LIMIT = 64 * 1024 * 1024
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")
#: The oldest SQLite the engine's SQL runs on (upserts, JSON functions).
MIN_SQLITE = (3, 24, 0)


@dataclass(frozen=True)
class DatabaseOptions:
    """DatabaseOptions are the connection settings of a state database."""

    #: SQLite's synchronous mode: FULL (the default) survives power loss.
    synchronous: str = "FULL"
    #: How long one attempt to take the write lock waits (busy_timeout).
    busy_timeout: float = 5.0
    #: How long, in all, a write keeps retrying before DatabaseBusyError.
    busy_budget: float = 120.0


def migrations_dir() -> Path:
    """migrations_dir returns where the Alembic scripts are, installed or not."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError("internal error: cannot find the engine's Alembic migrations")


def alembic_config(url: str | None = None) -> Config:
    """alembic_config builds the Alembic Config used at run time (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def sqlite_error(e: BaseException, where: str) -> DatabaseError:
    """sqlite_error turns a driver error into the engine's error, on one line."""
    cause = getattr(e, "orig", None) or e  # SQLAlchemy wraps driver errors
    text = " ".join(str(cause).split())
    code = getattr(cause, "sqlite_errorcode", 0) or 0
    if code & 0xFF in (11, 26) or "malformed" in text or "not a database" in text:
        return DatabaseCorruptError(f"{where}: the database is corrupt or truncated ({text})")
    return DatabaseError(f"{where}: {text}")


def _describe(target: str) -> str:
    return f"cannot open state database {target}"


def check_file(path: Path) -> bool:
    """check_file refuses paths that cannot hold a state database.

    It returns whether the file already holds data (False for a new file).
    """
    target = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise DatabaseError(f"{_describe(target)}: directory {parent} does not exist") from None
        _check_writable_dir(parent, target)
        return False
    except OSError as e:
        raise DatabaseError(f"{_describe(target)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatabaseError(f"{_describe(target)}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseError(f"{_describe(target)}: it is not a regular file")
    if not (st.st_mode & 0o222) or not os.access(path, os.W_OK):
        raise DatabaseError(f"{_describe(target)}: the file is read-only")
    _check_writable_dir(path.parent, target)
    if st.st_size == 0:
        return False
    try:
        with open(path, "rb") as f:
            header = f.read(100)
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


def make_engine(url: str, options: DatabaseOptions) -> Engine:
    """make_engine creates the SQLAlchemy engine with the engine's pragmas."""
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
    engine = create_engine(
        sa_url,
        poolclass=pool.StaticPool if memory else pool.NullPool,
        connect_args={"check_same_thread": False, "isolation_level": None, "timeout": options.busy_timeout},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        dbapi_conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")

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
            problems = [" ".join(str(row[0]).split()) for row in raw.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise DatabaseCorruptError(f"{_describe(target)}: the database is corrupt ({'; '.join(problems)})")
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
        return BASE  # stamped at Alembic's base: upgraded to head like any older schema
    if len(rows) != 1:
        raise DatabaseCorruptError(f"{_describe(target)}: it has {len(rows)} schema revisions recorded, expected one")
    return str(rows[0][0])


def known_revisions() -> set[str]:
    """known_revisions lists the Alembic revisions this code can upgrade from."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def prepare_schema(engine: Engine, raw: sqlite3.Connection, target: str, *, existing: bool, memory: bool) -> None:
    """prepare_schema creates a new schema or upgrades an older one to head."""
    check = existing and not memory and os.path.getsize(target) <= QUICK_CHECK_LIMIT
    revision = inspect_revision(raw, target, check=check) if existing or memory else None
    if revision == SCHEMA_HEAD:
        return
    if revision not in (None, BASE) and revision not in known_revisions():
        raise SchemaVersionError(
            f"{_describe(target)}: its schema revision {revision!r} is not known to this program, "
            f"whose newest revision is {SCHEMA_HEAD!r}; the database was written by a newer version"
        )
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
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
