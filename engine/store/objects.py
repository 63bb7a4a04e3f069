# SPDX-License-Identifier: GPL-3.0-or-later
"""The schema objects the engine relies on: indexes, views and constraints, against the head revision.

Both backends are compared (SQLite through sqlite_master, PostgreSQL
through SQLAlchemy's inspector). A database at the head revision may still have lost an object (``DROP
INDEX`` in a ``sqlite3`` shell, a restore that skipped one). Opening
compares what the database has with what the models and views of the head
revision define: a missing index or view is recreated by a writer (neither
holds data, so nothing is lost; the engine reads task_timings, a view) and
reported by a reader, and so is a missing manager table (declared on
engine.metadata after the file was made: engine.tables), created empty;
anything else (one of the engine's own tables, a constraint) is reported
in one line. ``overlord db
check`` and ``overlord db upgrade`` use the same comparison.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Index
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateTable

from ..models import ENGINE_OWN, Base, made_on
from .views import VIEWS, create_views

log = logging.getLogger("engine.db")

_CONSTRAINT = re.compile(r"CONSTRAINT\s+\"?(\w+)\"?", re.IGNORECASE)


@dataclass(frozen=True)
class _Head:
    indexes: dict[str, Index]
    views: frozenset[str]
    tables: frozenset[str]
    constraints: dict[str, frozenset[str]]  # by table


def _head(name: str = "sqlite") -> _Head:
    # Managers add tables to the metadata when imported (engine.tables): the head is what is declared now.
    return _head_of(name, frozenset(Base.metadata.tables.values()))


@functools.cache
def _head_of(name: str, _tables: frozenset[Any]) -> _Head:
    dialect = sqlite_dialect.dialect() if name == "sqlite" else postgresql_dialect.dialect()  # type: ignore[no-untyped-call]
    indexes = {str(ix.name): ix for t in Base.metadata.sorted_tables for ix in t.indexes if made_on(ix, name)}
    constraints = {t.name: frozenset(_CONSTRAINT.findall(str(CreateTable(t).compile(dialect=dialect))))
                   for t in Base.metadata.sorted_tables}
    return _Head(indexes, frozenset(VIEWS), frozenset(t.name for t in Base.metadata.sorted_tables), constraints)


@dataclass
class SchemaObjects:
    """SchemaObjects is what a database lacks of the head revision's schema objects."""

    #: Missing indexes, by name (a writer recreates them).
    indexes: list[str] = field(default_factory=list)
    #: Missing manager tables (engine.tables), by name: a writer creates them, empty.
    tables: list[str] = field(default_factory=list)
    #: Missing views, by name (a writer recreates them from the head revision's definitions).
    views: list[str] = field(default_factory=list)
    #: Everything else that is missing, one phrase each ("view v_changes").
    others: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.indexes or self.tables or self.views or self.others)

    @property
    def recreatable(self) -> bool:
        """recreatable says whether a writer has something to create (indexes, manager tables, views)."""
        return bool(self.indexes or self.tables or self.views)

    def phrases(self) -> list[str]:
        """phrases name what is missing, one each ("index ix_tasks_runnable", "view v_changes")."""
        return [*(f"index {name}" for name in self.indexes), *(f"table {name}" for name in self.tables),
                *(f"view {name}" for name in self.views), *self.others]

    def describe(self) -> str:
        """describe is the one line that lists what is missing."""
        return "; ".join(f"{what} is missing" for what in self.phrases())


def missing_objects(raw: sqlite3.Connection) -> SchemaObjects:
    """missing_objects compares a SQLite database's indexes, views, tables and constraints with the head revision's."""
    rows = raw.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    have = {(str(kind), str(name)) for kind, name, _, _ in rows}
    sql = {str(name): str(text or "") for kind, name, _, text in rows if kind == "table"}
    return _compare(_head("sqlite"), have, {t: set(_CONSTRAINT.findall(text)) for t, text in sql.items()})


def missing_objects_of(conn: Any) -> SchemaObjects:
    """missing_objects_of is missing_objects for PostgreSQL, on a SQLAlchemy Connection (four catalog queries)."""
    def names(sql: str) -> list[tuple[str, ...]]:
        return [tuple(str(v) for v in row) for row in conn.exec_driver_sql(sql)]

    have = {("table", t) for (t,) in names("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    have |= {("view", v) for (v,) in names("SELECT viewname FROM pg_views WHERE schemaname = current_schema()")}
    have |= {("index", i) for (i,) in names("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    constraints: dict[str, set[str]] = {}
    for table, name in names("SELECT t.relname, c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                             "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()"):
        constraints.setdefault(table, set()).add(name)
    for kind, table in have:
        if kind == "table":
            constraints.setdefault(table, set())
    return _compare(_head("postgresql"), have, constraints)


def _compare(head: _Head, have: set[tuple[str, str]], constraints: dict[str, set[str]]) -> SchemaObjects:
    tables = {name for kind, name in have if kind == "table"}
    out = SchemaObjects()
    for table in sorted(head.tables - tables):
        if table in ENGINE_OWN:
            out.others.append(f"table {table}")
        else:
            out.tables.append(table)  # a manager's table, declared after the database was made
    for name, ix in sorted(head.indexes.items()):
        if ("index", name) not in have and ix.table is not None and ix.table.name in tables | set(out.tables):
            out.indexes.append(name)
    views = sorted(head.views - {name for kind, name in have if kind == "view"})
    if out.others:  # one of the engine's tables is missing: a view of it could not be made
        out.others += [f"view {name}" for name in views]
    else:
        out.views = views
    for table, names in sorted(head.constraints.items()):
        if table in constraints:
            out.others += [f"constraint {name} of table {table}" for name in sorted(names - constraints[table])]
    return out


def repair(engine: Engine, raw: sqlite3.Connection, target: str) -> SchemaObjects:
    """repair recreates the missing indexes of a SQLite database (a writer, at open) and reports the rest.

    It returns what was missing at the start.
    """
    missing = missing_objects(raw)
    if missing.recreatable:
        with engine.begin() as conn:
            recreate(conn, missing)
    _say(missing, target)
    return missing


def recreate(conn: Any, missing: SchemaObjects) -> None:
    """recreate creates the missing manager tables, indexes and views on conn, in its transaction."""
    head = _head(conn.dialect.name)
    for name in missing.tables:
        Base.metadata.tables[name].create(conn, checkfirst=True)
    for name in missing.indexes:
        head.indexes[name].create(conn, checkfirst=True)
    if missing.views:
        create_views(conn, {name: VIEWS[name] for name in missing.views})


def _say(missing: SchemaObjects, target: str) -> None:
    if missing.tables:
        log.info("state database %s lacked the manager table%s %s: created", target,
                 "s" if len(missing.tables) > 1 else "", ", ".join(missing.tables))
    if missing.indexes:
        log.warning("state database %s lacked the index%s %s of its schema: recreated", target,
                    "es" if len(missing.indexes) > 1 else "", ", ".join(missing.indexes))
    if missing.views:
        log.warning("state database %s lacked the view%s %s of its schema: recreated", target,
                    "s" if len(missing.views) > 1 else "", ", ".join(missing.views))
    if missing.others:
        log.warning("state database %s differs from the schema the engine needs: %s", target,
                    "; ".join(f"{what} is missing" for what in missing.others))


def repaired(conn: Any, target: str) -> SchemaObjects:
    """repaired is repair on a SQLAlchemy Connection (PostgreSQL), in its transaction."""
    missing = missing_objects_of(conn)
    recreate(conn, missing)
    _say(missing, target)
    return missing


def report(raw: sqlite3.Connection, target: str) -> SchemaObjects:
    """report says, in one line, what a database opened read-only lacks (a reader repairs nothing)."""
    missing = missing_objects(raw)
    if missing:
        log.warning("state database %s differs from the schema the engine needs: %s (opening it for writing "
                    "recreates a missing index or view)", target, missing.describe())
    return missing

