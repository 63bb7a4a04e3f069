# SPDX-License-Identifier: GPL-3.0-or-later
"""The storage seam: the only code of the engine that runs SQL or touches a database driver.

engine.store.base is what the engine asks of a database (the Store verbs);
engine.store.statements defines every statement once, in SQLAlchemy Core;
each backend (the engine.store.sqlite package, engine.store.postgresql)
compiles them for its dialect and runs them. engine.store.location parses
the path or URL once; open_store picks the backend from that Location.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..db import DatabaseOptions
from .base import ChangeSetWrite, Row, Store
from .location import Location, locate
from .sqlite import SQLiteStore  # compiles SQLite's statements now, at import, not in an open or a commit
from .sqlite.inspect import inspect
from .sqlstore import SqlStore

if TYPE_CHECKING:
    from .sqlite.inspect import DatabaseReport

__all__ = ["ChangeSetWrite", "Location", "Row", "SQLiteStore", "SqlStore", "Store", "inspect_database", "locate",
           "open_store"]


def open_store(where: Location, options: DatabaseOptions, *, read_only: bool) -> Store:
    """open_store opens the database where says, creating or upgrading it unless read_only."""
    if where.kind == "postgresql":
        from .postgresql_open import open_postgres

        return open_postgres(where, read_only=read_only, busy_budget=options.busy_budget)  # type: ignore[no-any-return]
    if read_only and where.kind == "memory":
        raise ValueError("cannot open a private in-memory database read-only: there is nothing to read")
    return SQLiteStore.open(where, options, read_only=read_only)


def inspect_database(path: str | Path, *, full: bool = False) -> DatabaseReport:
    """inspect_database reports on a SQLite state database of any revision without writing to it.

    full adds SQLite's integrity check, the CHECK constraints and the
    comparisons of the schema with the models; refusals (a missing file, a
    FIFO, a database of another program) are one DatabaseError line.
    """
    return inspect(locate(path), full=full)
