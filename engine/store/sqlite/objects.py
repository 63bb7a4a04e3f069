# SPDX-License-Identifier: GPL-3.0-or-later
"""The schema objects the engine relies on: indexes, views and constraints, against the head revision.

A database at the head revision may still have lost an object (``DROP
INDEX`` in a ``sqlite3`` shell, a restore that skipped one). Opening
compares what the database has with what the models and views of the head
revision define: a missing index is recreated by a writer (it holds no
data, so nothing is lost) and reported by a reader; anything else (a
missing view, table or constraint) is reported in one line. ``overlord db
check`` and ``overlord db upgrade`` use the same comparison.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from dataclasses import dataclass, field

from sqlalchemy import Engine, Index
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateTable

from ...models import Base
from ..views import VIEWS

log = logging.getLogger("engine.db")

_CONSTRAINT = re.compile(r"CONSTRAINT\s+\"?(\w+)\"?", re.IGNORECASE)


@dataclass(frozen=True)
class _Head:
    indexes: dict[str, Index]
    views: frozenset[str]
    tables: frozenset[str]
    constraints: dict[str, frozenset[str]]  # by table


@functools.cache
def _head() -> _Head:
    dialect = sqlite_dialect.dialect()
    indexes = {str(ix.name): ix for t in Base.metadata.sorted_tables for ix in t.indexes}
    constraints = {t.name: frozenset(_CONSTRAINT.findall(str(CreateTable(t).compile(dialect=dialect))))
                   for t in Base.metadata.sorted_tables}
    return _Head(indexes, frozenset(VIEWS), frozenset(t.name for t in Base.metadata.sorted_tables), constraints)


@dataclass
class SchemaObjects:
    """SchemaObjects is what a database lacks of the head revision's schema objects."""

    #: Missing indexes, by name (a writer recreates them).
    indexes: list[str] = field(default_factory=list)
    #: Everything else that is missing, one phrase each ("view v_changes").
    others: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.indexes or self.others)

    def describe(self) -> str:
        """describe is the one line that lists what is missing."""
        return "; ".join([*(f"index {name} is missing" for name in self.indexes),
                          *(f"{what} is missing" for what in self.others)])


def missing_objects(raw: sqlite3.Connection) -> SchemaObjects:
    """missing_objects compares the database's indexes, views, tables and constraints with the head revision's."""
    head = _head()
    rows = raw.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    have = {(str(kind), str(name)) for kind, name, _, _ in rows}
    sql = {str(name): str(text or "") for kind, name, _, text in rows if kind == "table"}
    out = SchemaObjects()
    for table in sorted(head.tables - {name for kind, name in have if kind == "table"}):
        out.others.append(f"table {table}")
    for name, ix in sorted(head.indexes.items()):
        if ("index", name) not in have and ix.table is not None and ix.table.name in sql:
            out.indexes.append(name)
    for view in sorted(head.views - {name for kind, name in have if kind == "view"}):
        out.others.append(f"view {view}")
    for table, names in sorted(head.constraints.items()):
        if table in sql:
            found = set(_CONSTRAINT.findall(sql[table]))
            out.others += [f"constraint {name} of table {table}" for name in sorted(names - found)]
    return out


def repair(engine: Engine, raw: sqlite3.Connection, target: str) -> SchemaObjects:
    """repair recreates the missing indexes (a writer, at open) and reports the rest in one line.

    It returns what was missing at the start.
    """
    missing = missing_objects(raw)
    if missing.indexes:
        head = _head()
        with engine.begin() as conn:
            for name in missing.indexes:
                head.indexes[name].create(conn)
        log.warning("state database %s lacked the index%s %s of its schema: recreated", target,
                    "es" if len(missing.indexes) > 1 else "", ", ".join(missing.indexes))
    if missing.others:
        log.warning("state database %s differs from the schema the engine needs: %s", target,
                    "; ".join(f"{what} is missing" for what in missing.others))
    return missing


def report(raw: sqlite3.Connection, target: str) -> SchemaObjects:
    """report says, in one line, what a database opened read-only lacks (a reader repairs nothing)."""
    missing = missing_objects(raw)
    if missing:
        log.warning("state database %s differs from the schema the engine needs: %s (opening it for writing "
                    "recreates a missing index)", target, missing.describe())
    return missing

