# SPDX-License-Identifier: GPL-3.0-or-later
"""Tables of your own: rows a manager keeps in the state database, written in the state's transaction.

A manager declares its tables with SQLAlchemy Core on ``engine.metadata``
(the state database's MetaData, the engine's own tables included) and
reaches their rows through ``st.table(table)``, a TableRows: lookups by
primary key (cached for the unit of work, as a Session's identity map),
``put`` and ``delete`` written by the unit of work's flush into the same
transaction as the changes and tasks (committed or rolled back with them),
and ``select(statement)`` for any other query, which first writes the
table's pending rows (a Session's autoflush). Reads work on a read-only
State too. The project's Alembic migrations own their schema like any
other table's; the engine writes their DDL only when it makes a new
database (create_all, with whatever is declared by then) and when a writer
opens a database that lacks a declared one (a manager added later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, bindparam, delete, select
from sqlalchemy.sql import Select
from sqlalchemy.sql.util import find_tables

from ._records import Pending
from .errors import ReadOnlyStateError
from .models import ENGINE_OWN, Base

if TYPE_CHECKING:
    from ._work import Work
    from .store import Store

#: metadata is the state database's MetaData: declare a manager's tables on it (Table(name, engine.metadata, ...)).
metadata = Base.metadata

Key = tuple[Any, ...]
Row = Mapping[str, Any]


class TableRows:
    """TableRows is a State's view of one manager table: st.table(table); every method needs the state lock.

    get(*key) reads a row by primary key; put(row) and delete(*key) are
    written at commit, in the state's transaction; select(statement) runs
    a SELECT over managers' tables, after writing what is pending. Rows are
    read-only mappings of column name to value.
    """

    def __init__(self, w: Work, table: Table) -> None:
        self._w = w
        self.table = table
        self._key_names = tuple(c.name for c in table.primary_key.columns)
        self._columns = frozenset(c.name for c in table.columns)
        # What is known of rows by key: a row, or None for a known absence.
        self._rows: dict[Key, Row | None] = {}
        # Keys whose row (or absence) must be written.
        self.dirty: Pending[Key] = Pending()
        where = and_(*(c == bindparam(f"k_{c.name}") for c in table.primary_key.columns))
        self._select_one = select(table).where(where)
        self._delete_one = delete(table).where(where)

    # -- the unit of work's side ------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """pending says whether anything is left to write."""
        return bool(self.dirty)

    def forget(self) -> None:
        """forget drops what was read; it reloads on next use."""
        self._rows.clear()

    def flush(self, store: Store) -> None:
        """flush writes the rows put and deleted since the last flush, in the open write transaction."""
        if not self.dirty:
            return
        gone: list[Row] = []
        puts: dict[tuple[str, ...], list[Row]] = {}
        for k in self.dirty.take():
            row = self._rows.get(k)
            if row is None:
                gone.append({f"k_{n}": v for n, v in zip(self._key_names, k, strict=True)})
            else:
                puts.setdefault(tuple(row), []).append(row)
        if gone:
            store.write_rows(self._delete_one, gone)
        for cols, rows in puts.items():
            store.write_rows(store.upsert_statement(self.table, self._key_names, cols), rows)

    # -- the public API ---------------------------------------------------------------------

    def now(self) -> datetime:
        """now is the State clock's time (for the table's timestamps)."""
        return self._w.now()

    def _key(self, key: Sequence[Any]) -> Key:
        if len(key) != len(self._key_names):
            raise ValueError(f"cannot use key {tuple(key)!r} of table {self.table.name}: its primary key is "
                             f"({', '.join(self._key_names)})")
        return tuple(key)

    def get(self, *key: Any) -> Row | None:
        """get returns the row with this primary key (what this unit of work put wins), or None."""
        self._w.check()
        k = self._key(key)
        if k not in self._rows:
            found = self._w.store.read_rows(self._select_one,
                                            {f"k_{n}": v for n, v in zip(self._key_names, k, strict=True)})
            self._rows[k] = MappingProxyType(dict(zip(self._columns_of(), found[0], strict=True))) \
                if found else None
        return self._rows[k]

    def _columns_of(self) -> list[str]:
        return [c.name for c in self.table.columns]

    def _writable(self, what: str) -> None:
        self._w.check()
        refusal = self._w.store.refusal
        if refusal is not None:
            raise ReadOnlyStateError(f"cannot {what} table {self.table.name}: {refusal}")

    def put(self, row: Mapping[str, Any]) -> None:
        """put writes a row at commit: it inserts it, or updates the given columns of the row with its key.

        The row written is the one this unit of work sees: the stored row
        (read first, if not read yet) with the given columns changed.
        """
        self._writable("write to")
        unknown = sorted(set(row) - self._columns)
        if unknown:
            raise ValueError(f"cannot write to table {self.table.name}: it has no column {', '.join(unknown)}")
        missing = [n for n in self._key_names if row.get(n) is None]
        if missing:
            raise ValueError(f"cannot write to table {self.table.name}: the row lacks its primary key "
                             f"{', '.join(missing)}")
        k = tuple(row[n] for n in self._key_names)
        old = self.get(*k)
        merged = {**(old or {}), **row}
        self._rows[k] = MappingProxyType({c: merged[c] for c in self._columns_of() if c in merged})
        self.dirty.add(k)

    def delete(self, *key: Any) -> None:
        """delete deletes the row with this primary key at commit (nothing if there is none)."""
        self._writable("delete from")
        k = self._key(key)
        self._rows[k] = None
        self.dirty.add(k)

    def select(self, statement: Select[Any]) -> list[Row]:
        """select runs a SELECT (SQLAlchemy Core) and returns its rows; the table's pending rows are written first.

        It reads managers' tables only: the engine's own are read through the State's API.
        """
        self._w.check()
        own = sorted({t.name for t in find_tables(statement, include_crud=True)} & ENGINE_OWN)
        if own:
            raise ValueError(f"cannot select from table {own[0]}: it is one of the engine's own tables (read it "
                             "through the State's API)")
        if self.dirty:
            self._w.flush()
        names = [c.key for c in statement.selected_columns]
        if None in names:
            raise ValueError(f"cannot select from table {self.table.name}: column {names.index(None) + 1} of the "
                             "statement has no name (give it a .label())")
        keys = [str(n) for n in names]
        return [MappingProxyType(dict(zip(keys, r, strict=True))) for r in self._w.store.read_rows(statement)]


class ManagerTables:
    """ManagerTables hosts a unit of work's TableRows, one per manager table used (engine.unitofwork)."""

    def __init__(self, w: Work) -> None:
        self._w = w
        self._books: dict[Table, TableRows] = {}
        #: books is _books, read directly by a commit (empty: no table used, nothing to do there).
        self.books = self._books

    def rows(self, table: Table) -> TableRows:
        """rows returns the TableRows of table, made on first use."""
        book = self._books.get(table)
        if book is None:
            if not isinstance(table, Table) or metadata.tables.get(table.name) is not table:
                raise ValueError(f"cannot use table {getattr(table, 'name', table)!r}: declare it on "
                                 "engine.metadata")
            if table.name in ENGINE_OWN:
                raise ValueError(f"cannot use table {table.name!r}: it is one of the engine's own tables")
            book = self._books[table] = TableRows(self._w, table)
        return book

    @property
    def pending(self) -> bool:
        """pending says whether any table has rows left to write."""
        return bool(self._books) and any(b.pending for b in self._books.values())

    def pendings(self) -> tuple[Pending[Key], ...]:
        """pendings returns the write bookkeeping of every table, for commit and rollback."""
        return tuple(b.dirty for b in self._books.values())

    def forget(self) -> None:
        """forget drops what every table read."""
        for b in self._books.values():
            b.forget()

    def flush(self, store: Store) -> None:
        """flush writes every table's pending rows."""
        for b in self._books.values():
            b.flush(store)
