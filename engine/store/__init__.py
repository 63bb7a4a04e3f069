# SPDX-License-Identifier: GPL-3.0-or-later
"""The storage seam: the only code of the engine that runs SQL or touches a database driver.

engine.store.base is what the engine asks of a database (the Store verbs);
engine.store.statements defines every statement once, in SQLAlchemy Core;
each backend (the engine.store.sqlite package, engine.store.postgresql)
compiles them for its dialect and runs them. engine.store.location parses
the path or URL once; open_store picks the backend from that Location.
"""

from __future__ import annotations

from ..db import DatabaseOptions
from .base import Row, Store
from .location import Location, locate
from .sqlite import SQLiteStore  # compiles SQLite's statements now, at import, not in an open or a commit
from .sqlstore import SqlStore

__all__ = ["Location", "Row", "SQLiteStore", "SqlStore", "Store", "locate", "open_store"]


def open_store(where: Location, options: DatabaseOptions, *, read_only: bool) -> Store:
    """open_store opens the database where says, creating or upgrading it unless read_only."""
    if where.kind == "postgresql":
        from .postgresql_open import open_postgres

        return open_postgres(where, read_only=read_only, busy_budget=options.busy_budget)  # type: ignore[no-any-return]
    if read_only and where.kind == "memory":
        raise ValueError("cannot open a private in-memory database read-only: there is nothing to read")
    return SQLiteStore.open(where, options, read_only=read_only)
