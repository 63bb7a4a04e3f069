# SPDX-License-Identifier: GPL-3.0-or-later
"""The storage seam: the only code of the engine that runs SQL or touches a database driver.

engine.store.base is what the engine asks of a database (the Store verbs);
engine.store.statements defines every statement once, in SQLAlchemy Core;
each backend module compiles them for its dialect and runs them. open_store
picks the backend from the path or URL.
"""

from __future__ import annotations

from pathlib import Path

from ..db import DatabaseOptions
from ..errors import DatabaseError
from .base import Row, Store
from .sqlite import SQLiteStore  # compiles SQLite's statements now, at import, not in an open or a commit
from .sqlstore import SqlStore

__all__ = ["Row", "SQLiteStore", "SqlStore", "Store", "open_store"]


def open_store(path: str | Path | None, url: str | None, options: DatabaseOptions, *, read_only: bool) -> Store:
    """open_store opens the database at path (a SQLite file) or url, creating or upgrading it unless read_only."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .sqlite_open import file_of_url

    if path is not None:
        return SQLiteStore.open(Path(path), f"sqlite:///{path}", str(path), options, read_only=read_only)
    url = url or "sqlite://"
    try:
        sa_url = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(f"cannot open state database {url!r}: {e}") from None
    if sa_url.get_backend_name() == "postgresql":
        from .postgresql_open import open_postgres

        return open_postgres(url, read_only=read_only, busy_budget=options.busy_budget)  # type: ignore[no-any-return]
    if sa_url.get_backend_name() != "sqlite":
        raise DatabaseError(f"cannot open state database {sa_url!r}: only SQLite and PostgreSQL "
                            "(postgresql+psycopg://) are supported")
    file_path = file_of_url(url)
    if read_only and file_path is None:
        raise ValueError("cannot open a private in-memory database read-only: there is nothing to read")
    return SQLiteStore.open(file_path, url, sa_url.database or ":memory:", options, read_only=read_only)
