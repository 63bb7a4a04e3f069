# SPDX-License-Identifier: GPL-3.0-or-later
"""A SQLite state database's schema: its revision, created or upgraded at open, and its rows checked.

Read through SQLite's own connection: damage (quick_check), a database of
another program, an unknown (newer) revision and an empty alembic_version
are refused before anything is written; a writer creates a new schema from
the models or upgrades an older one with Alembic.
"""

from __future__ import annotations

import logging
import sqlite3

import sqlalchemy.exc
from sqlalchemy import Engine

from ...db import BASE, ENGINE_TABLES, SCHEMA_HEAD, alembic_config, known_revisions, newer_schema
from ...db import describe as _describe
from ...errors import DatabaseCorruptError, DatabaseError
from ...models import Base
from .. import objects
from ..views import create_views
from .checks import sqlite_error

log = logging.getLogger("engine.db")

#: What PRAGMA quick_check says of a row that breaks a constraint, not of damage.
ROW_PROBLEMS = ("CHECK constraint failed", "NULL value in", "NOT NULL constraint failed")
#: Databases up to this size (about 350,000 tasks) get PRAGMA quick_check
#: when opened, at about 7 ms per MiB; damage in bigger ones is reported
#: (DatabaseCorruptError) when the damaged pages are read.
QUICK_CHECK_LIMIT = 64 * 1024 * 1024


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
        objects.report(raw, target)
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


def prepare_schema(engine: Engine, raw: sqlite3.Connection, target: str, *, existing: bool, memory: bool,
                   size: int) -> None:
    """prepare_schema creates a new schema or upgrades an older one to head (size: the file's, in bytes)."""
    check = existing and not memory and size <= QUICK_CHECK_LIMIT
    revision = inspect_revision(raw, target, check=check) if existing or memory else None
    if revision == SCHEMA_HEAD:
        objects.repair(engine, raw, target)
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
    objects.repair(engine, raw, target)


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
