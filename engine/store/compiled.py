# SPDX-License-Identifier: GPL-3.0-or-later
"""Compiling the statements of engine.store.statements for one backend, once per process.

A Compiled statement is the dialect's text and a plan for its positional
parameters: the values a caller passes, in the order its definition names
them, and the constants the compiler added (SQLite's OFFSET 0, say). An IN
list (the statement's expanding parameter) is spliced in by the backend:
SQLite gets one placeholder per item, in chunks under its parameter limit;
PostgreSQL gets one array parameter (= ANY).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Dialect

from .statements import BY_NAME, STATEMENTS, TASK_COLUMNS, Forms, Sql, tasks

#: What the compiler writes where an IN list goes.
POSTCOMPILE = "__[POSTCOMPILE_{}]"
#: BLOCKERS_COLUMN is the index task_update takes for the blockers count (a column of no record: a single
#: writer whose cache knows what the halted tasks wait for writes it as a value, engine.changeset).
BLOCKERS_COLUMN = len(TASK_COLUMNS)


@dataclass(frozen=True)
class Compiled:
    """Compiled is one statement as a backend runs it."""

    name: str
    sql: str
    #: For each placeholder: the index of the caller's argument, or None for a constant.
    slots: tuple[int | None, ...]
    constants: tuple[Any, ...]
    #: Whether the caller's arguments are the parameters as they are (no constants to add).
    direct: bool
    #: The index of the expanding argument among the caller's, or None.
    expanding: int | None
    token: str | None

    def args(self, given: Sequence[Any]) -> Sequence[Any]:
        """args returns the positional parameters for the caller's arguments."""
        if self.direct:
            return given
        return [given[i] if i is not None else c for i, c in zip(self.slots, self.constants, strict=True)]


class Catalog:
    """Catalog is every statement compiled for one dialect; each is compiled on first use, then kept."""

    def __init__(self, dialect: Dialect, forms: Forms) -> None:
        self._dialect = dialect
        self._forms = forms
        self._compiled: dict[str, Compiled] = {}
        self._lock = threading.Lock()
        #: The statements of manager tables compiled so far (engine.tables; see table_statement).
        self.tables: dict[Any, Any] = {}
        self.lock = self._lock
        self.dialect = dialect
        self.forms = forms

    def __getitem__(self, name: str) -> Compiled:
        c = self._compiled.get(name)
        if c is None:
            with self._lock:
                c = self._compiled[name] = compile_one(BY_NAME[name], self._dialect, self._forms)
        return c

    def compile_all(self) -> None:
        """compile_all compiles every statement now (at import: no first call pays for it)."""
        for sql in STATEMENTS:
            self[sql.name]


def compile_one(stmt: Sql, dialect: Dialect, forms: Forms) -> Compiled:
    """compile_one compiles stmt and checks that its placeholders are the parameters it names."""
    compiled: Any = stmt.build(forms).compile(dialect=dialect)
    order = list(compiled.positiontup or ())
    slots: list[int | None] = []
    constants: list[Any] = []
    for name in order:
        if name in stmt.params:
            slots.append(stmt.params.index(name))
            constants.append(None)
        else:
            slots.append(None)
            constants.append(compiled.binds[name].effective_value)
    named = [s for s in slots if s is not None]
    if named != list(range(len(stmt.params))):
        raise RuntimeError(f"internal error: statement {stmt.name} takes {order}, its definition says "
                           f"{list(stmt.params)}")
    direct = len(slots) == len(stmt.params)
    return Compiled(stmt.name, compiled.string, tuple(slots), tuple(constants), direct,
                    stmt.params.index(stmt.expanding) if stmt.expanding else None,
                    POSTCOMPILE.format(stmt.expanding) if stmt.expanding else None)


#: How many statements of manager tables (engine.tables) a Catalog keeps compiled.
STATEMENT_CACHE = 256


def compile_statement(stmt: Any, dialect: Dialect) -> tuple[Compiled, tuple[str, ...], dict[str, Any]]:
    """compile_statement compiles any Core statement (a manager table's): its text, bind names and bound values.

    IN lists are rendered as one placeholder per item (render_postcompile),
    so the result is a plain positional statement for the driver.
    """
    compiled: Any = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    names = tuple(compiled.positiontup or ())
    n = len(names)
    return (Compiled(f"table:{id(stmt)}", compiled.string, tuple(range(n)), (None,) * n, True, None, None), names,
            dict(compiled.params))


def table_upsert(catalog: Catalog, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """table_upsert is the backend's upsert of columns into table (by keys), the same object for the same arguments."""
    k = ("upsert", table, keys, columns)
    stmt = catalog.tables.get(k)
    if stmt is None:
        stmt = catalog.forms.upsert(table, keys, columns)
        with catalog.lock:
            catalog.tables[k] = stmt
    return stmt


def table_statement(catalog: Catalog, stmt: Any) -> tuple[Compiled, tuple[str, ...], dict[str, Any]]:
    """table_statement is compile_statement for catalog's dialect, kept for the statements used again."""
    cache = catalog.tables
    found: tuple[Compiled, tuple[str, ...], dict[str, Any]] | None = cache.get(stmt)
    if found is None:
        found = compile_statement(stmt, catalog.dialect)
        with catalog.lock:
            if len(cache) >= STATEMENT_CACHE:
                cache.clear()
            cache[stmt] = found
    return found


def task_update(catalog: Catalog, columns: tuple[int, ...]) -> Compiled:
    """task_update is the UPDATE of some columns of a task (indexes in TASK_COLUMNS, or BLOCKERS_COLUMN), then its id.

    Compiled once per set of columns (a unit of work rewrites only the
    columns that changed: a handful of sets in practice).
    """
    k = ("task_update", columns)
    found: Compiled | None = catalog.tables.get(k)
    if found is None:
        names = [TASK_COLUMNS[i] if i < BLOCKERS_COLUMN else "blockers" for i in columns]
        stmt = update(tasks).ordered_values(*[(tasks.c[n], bindparam(n)) for n in names]) \
            .where(tasks.c.id == bindparam("tid"))
        compiled, order, _ = compile_statement(stmt, catalog.dialect)
        if list(order) != [*names, "tid"]:
            raise RuntimeError(f"internal error: the update of task columns {names} takes {list(order)}")
        found = dataclasses.replace(compiled, name="update_tasks")
        with catalog.lock:
            catalog.tables[k] = found
    return found
