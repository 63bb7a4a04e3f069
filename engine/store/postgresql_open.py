# SPDX-License-Identifier: GPL-3.0-or-later
"""Opening a PostgreSQL state database: the schema created or migrated once, whatever the number of hosts.

Several hosts may start at the same moment on a new or older database. The
first takes a session-level advisory lock (pg_advisory_lock, waited for at
most MIGRATION_LOCK_TIMEOUT), creates or upgrades the schema in one
transaction (PostgreSQL's DDL is transactional), and lets go; the others
wait for the lock, then find the schema at head and go on. A migrator that
crashes drops its connection, and with it the lock and its uncommitted DDL:
the next start migrates from where the database was.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc
from sqlalchemy import create_engine, pool

from ..db import BASE, ENGINE_TABLES, SCHEMA_HEAD, alembic_config, describe, known_revisions, newer_schema
from ..errors import DatabaseCorruptError, DatabaseError
from ..models import Base
from .objects import missing_objects_of, repaired
from .views import create_views

if TYPE_CHECKING:
    from .location import Location

log = logging.getLogger("engine.db")

#: The advisory lock key of schema migrations ("engine" in ASCII).
MIGRATION_LOCK = 0x656E67696E65
#: How long a start waits for another host's migration, in seconds.
MIGRATION_LOCK_TIMEOUT = 120.0


def make_engine(where: Location) -> Any:
    """make_engine creates the SQLAlchemy engine of a PostgreSQL location (postgresql+psycopg://...)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseError(f"cannot open state database {where.label}: psycopg is not installed "
                            "(pip install 'overlord-engine[postgresql]')") from None
    assert where.url is not None
    return create_engine(where.url, poolclass=pool.NullPool)


def _revision(conn: Any) -> str | None:
    tables = {r[0] for r in conn.exec_driver_sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    if not tables:
        return None
    if "alembic_version" not in tables:
        if not tables & ENGINE_TABLES:
            return None  # a database of other things: the engine's tables go beside them
        raise DatabaseCorruptError("it has the engine's tables but no alembic_version table")
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    if not rows:
        return BASE
    if len(rows) != 1:
        raise DatabaseCorruptError(f"it has {len(rows)} schema revisions recorded, expected one")
    return str(rows[0][0])


def prepare(engine: Any, target: str, *, read_only: bool) -> None:
    """prepare creates or upgrades the schema to head, once across hosts (a reader only checks it)."""
    try:
        with engine.connect() as conn:
            revision = _revision(conn)
            conn.rollback()
            if revision == SCHEMA_HEAD:
                _check_objects(conn, target, read_only=read_only)
                return
            if revision not in (None, BASE) and revision not in known_revisions():
                raise newer_schema(target, revision)
            if read_only:
                raise DatabaseError(f"{describe(target)} read-only: its schema is at {revision or 'nothing'}, "
                                    f"not {SCHEMA_HEAD!r}; open it once for writing")
            conn.exec_driver_sql(f"SET lock_timeout = '{int(MIGRATION_LOCK_TIMEOUT * 1000)}ms'")
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            conn.commit()
            try:
                revision = _revision(conn)  # another host may have migrated while this one waited
                conn.rollback()
                if revision == SCHEMA_HEAD:
                    return
                if revision is None:
                    log.info("creating the schema of state database %s", target)
                    with conn.begin():
                        Base.metadata.create_all(conn)
                        create_views(conn)
                        conn.exec_driver_sql(
                            "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
                            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
                        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (%s)", (SCHEMA_HEAD,))
                        conn.exec_driver_sql("INSERT INTO sequences (name, last_id) VALUES ('change', 0), "
                                             "('task', 0), ('lane', 0)")
                else:
                    from alembic import command

                    log.info("upgrading state database %s from schema %s to %s", target, revision, SCHEMA_HEAD)
                    cfg = alembic_config()
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    conn.commit()
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                conn.commit()
    except sqlalchemy.exc.DBAPIError as e:
        cause = " ".join(str(getattr(e, "orig", None) or e).split())
        if "lock timeout" in cause:
            raise DatabaseError(f"{describe(target)}: another host held the schema migration lock for more than "
                                f"{MIGRATION_LOCK_TIMEOUT:g} s") from None
        raise DatabaseError(f"{describe(target)}: {cause}") from None


def _check_objects(conn: Any, target: str, *, read_only: bool) -> None:
    """_check_objects compares the schema objects with the head revision's; a writer recreates missing indexes."""
    missing = missing_objects_of(conn)
    conn.rollback()
    if not missing:
        return
    if read_only:
        log.warning("state database %s differs from the schema the engine needs: %s (opening it for writing "
                    "recreates a missing index)", target, missing.describe())
        return
    if not missing.recreatable:
        repaired(conn, target)  # nothing to create: says what is missing
        conn.rollback()
        return
    conn.exec_driver_sql(f"SET lock_timeout = '{int(MIGRATION_LOCK_TIMEOUT * 1000)}ms'")
    conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")  # one host recreates them
    conn.commit()
    try:
        with conn.begin():
            repaired(conn, target)
    finally:
        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
        conn.commit()


def open_postgres(where: Location, *, read_only: bool, busy_budget: float = 120.0) -> Any:
    """open_postgres connects to a PostgreSQL state database, creating or upgrading its schema."""
    from .postgresql import PostgresStore

    target = where.label
    engine = make_engine(where)
    try:
        prepare(engine, target, read_only=read_only)
        return PostgresStore(engine, target, read_only=read_only, busy_budget=busy_budget)
    except BaseException:
        engine.dispose()
        raise
