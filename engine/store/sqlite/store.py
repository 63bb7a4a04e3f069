# SPDX-License-Identifier: GPL-3.0-or-later
"""SQLiteStore: the Store on one SQLite connection (the engine's default backend).

Reads run in autocommit mode; writes run inside one BEGIN IMMEDIATE
transaction per commit, opened with a busy timeout and retried with
tenacity while another process holds the write lock. What only SQLite has
is here: its forms of the statements (INSERT ... ON CONFLICT DO NOTHING, the
INDEXED BY hints the planner needs without statistics, one placeholder per
item of an IN list), its error codes, PRAGMA data_version to notice writes
by other connections, and, through DbLink, the writer's file lock, the
read-only snapshots and quick_check at open.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import tenacity
from sqlalchemy import Table, bindparam, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from ...db import DatabaseOptions
from ...errors import DatabaseBusyError, DatabaseError, DatabaseFullError, DatabaseReplacedError, ReadOnlyStateError
from ..base import Row
from ..compiled import Catalog, Compiled
from ..sqlstore import SqlStore
from .checks import sqlite_error
from .link import DbLink

if TYPE_CHECKING:
    from ..location import Location

log = logging.getLogger("engine.store")

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_MAX_VARS = 900  # stay under SQLite's default host-parameter limit
_HINT = re.compile(r"\s+INDEXED BY \w+")


class _Compiler(SQLiteCompiler):
    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text  # "tasks AS t INDEXED BY ix_tasks_runnable"


class _Dialect(SQLiteDialect_pysqlite):
    statement_compiler = _Compiler


class SQLiteForms:
    """SQLiteForms are SQLite's own forms of the engine's statements."""

    name = "sqlite"

    def insert_ignore(self, table: Table) -> Any:
        """insert_ignore is INSERT ... ON CONFLICT DO NOTHING."""
        return sqlite_insert(table).on_conflict_do_nothing()

    def upsert(self, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """upsert is INSERT ... ON CONFLICT (keys) DO UPDATE SET the other columns."""
        stmt = sqlite_insert(table).values({c: bindparam(c) for c in columns})
        return stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in columns if c not in keys})

    def hint(self, stmt: Any, table: Any, index: str) -> Any:
        """hint is INDEXED BY: without statistics (no ANALYZE) SQLite may walk another index."""
        return stmt.with_hint(table, f"INDEXED BY {index}", "sqlite")

    def json_valid(self, column: str) -> Any:
        """json_valid is SQLite's json_valid()."""
        return text(f"json_valid({column})")


#: Every statement compiled for SQLite, at import: no unit of work pays for compiling.
CATALOG = Catalog(_Dialect(paramstyle="qmark"), SQLiteForms())
CATALOG.compile_all()


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _chunks(items: Sequence[Any], size: int = _MAX_VARS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SQLiteStore(SqlStore):
    """SQLiteStore runs the engine's SQL on one sqlite3 connection."""

    sql = CATALOG

    def __init__(self, link: DbLink, options: DatabaseOptions) -> None:
        self._link = link
        self.raw = link.raw
        # One cursor for the statements that return no rows (BEGIN, COMMIT, the flush's): Connection.execute
        # makes and frees one a statement. (Statements with rows keep their own: a cursor left on a row
        # would keep its statement open.) Made again with raw (refresh).
        self._cur = self.raw.cursor()
        self.target = link.target
        self.busy_budget = options.busy_budget
        self.busy_timeout = options.busy_timeout
        self._in_write = False
        self.synchronous = options.synchronous.upper()
        # In WAL mode a commit without its own sync becomes durable with the
        # next synced one (WAL order): see begin_write(relaxed=True).
        wal = str(self.raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        self.can_relax = wal and self.synchronous in ("FULL", "EXTRA")
        self._relaxed = False
        self.refusal: str | None = None
        self._replaced: str | None = None  # why every commit is refused: the path names another file now
        self._replaced_mu = threading.Lock()
        self._in_lists: dict[tuple[str, int], str] = {}
        self._unhinted: dict[str, str] = {}  # hinted SQL -> the same without its INDEXED BY
        self._data_version = self.data_version()

    @classmethod
    def open(cls, where: Location, options: DatabaseOptions, *, read_only: bool) -> SQLiteStore:
        """open checks, locks (a writer), connects and creates or upgrades (a writer) the database."""
        link = DbLink.open(where, options, read_only=read_only)
        try:
            return cls(link, options)
        except BaseException:
            link.close()
            raise

    # -- running statements ---------------------------------------------------------------

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """guard turns driver errors into DatabaseError naming the database."""
        try:
            yield
        except sqlite3.Error as e:
            raise self.convert(e, doing) from e

    def convert(self, e: sqlite3.Error, doing: str) -> DatabaseError:
        """convert maps a driver error to the engine's error for it."""
        where = f"cannot {doing} state database {self.target}"
        if _is_busy(e):
            return DatabaseBusyError(f"{where}: the database is locked by another process")
        error = sqlite_error(e, where)
        if isinstance(error, DatabaseFullError) and doing in ("write", "commit"):
            # The unit of work keeps its changes (see UnitOfWork.commit):
            # callers must not submit them again.
            return DatabaseFullError(f"{error}; the changes are kept in memory and written by the next commit",
                                     kept=True)
        return error

    def _in(self, c: Compiled, n: int) -> str:
        sql = self._in_lists.get((c.name, n))
        if sql is None:
            assert c.token is not None
            sql = self._in_lists[(c.name, n)] = c.sql.replace(c.token, ",".join("?" * n))
        return sql

    def _spliced(self, c: Compiled, chunk: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        full = c.args((*args[: c.expanding], None, *args[c.expanding:]) if c.expanding is not None else args)
        k = c.slots.index(c.expanding)
        return [*full[:k], *chunk, *full[k + 1:]]

    def _select(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        # A hint (INDEXED BY) fails when its index is missing: the engine's
        # correctness never depends on an index, so the statement runs
        # without it (slower) until an open for writing recreates it.
        try:
            return self.raw.execute(sql, args)
        except sqlite3.OperationalError as e:
            if "no such index" not in str(e) or "INDEXED BY" not in sql:
                raise
            plain = self._unhinted.get(sql)
            if plain is None:
                plain = self._unhinted[sql] = _HINT.sub("", sql)
                log.warning("state database %s lacks an index a query is tuned for (%s): the query runs "
                            "without it; opening the database for writing recreates it", self.target, e)
            return self.raw.execute(plain, args)

    # (try/except rather than guard() on the statements a hand-off runs: a generator context costs
    # more than the statement's own Python.)

    def query(self, c: Compiled, args: Sequence[Any] = ()) -> list[Row]:
        """query runs one SELECT and returns its rows."""
        try:
            return self._select(c.sql, c.args(args)).fetchall()
        except sqlite3.Error as e:
            raise self.convert(e, "read") from e

    def query_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> list[Row]:
        """query_in runs a SELECT over ids in chunks (one placeholder per id)."""
        rows: list[Row] = []
        try:
            for chunk in _chunks(ids):
                rows += self._select(self._in(c, len(chunk)), self._spliced(c, chunk, args)).fetchall()
        except sqlite3.Error as e:
            raise self.convert(e, "read") from e
        return rows

    def each(self, c: Compiled, args: Sequence[Any], page: int) -> Iterator[Row]:
        """each yields the rows of a SELECT a page at a time."""
        with self.guard("read"):
            cur = self._select(c.sql, c.args(args))
            try:
                while rows := cur.fetchmany(page):
                    yield from rows
            finally:
                cur.close()

    def execute(self, c: Compiled, args: Sequence[Any] = ()) -> int:
        """execute runs one statement in the write transaction; returns rowcount."""
        try:
            return self.raw.execute(c.sql, c.args(args)).rowcount
        except sqlite3.Error as e:
            raise self.convert(e, "write") from e

    def executemany(self, c: Compiled, rows: Sequence[Sequence[Any]]) -> None:
        """executemany runs one statement for many rows in the write transaction."""
        if not rows:
            return
        try:
            if type(rows) is list and len(rows) == 1:  # (a chain's step: execute costs the driver less)
                self._cur.execute(c.sql, rows[0] if c.direct else c.args(rows[0]))
            else:
                self._cur.executemany(c.sql, rows if c.direct else [c.args(r) for r in rows])
        except sqlite3.Error as e:
            raise self.convert(e, "write") from e

    def execute_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> None:
        """execute_in runs a statement over ids in chunks, in the write transaction."""
        try:
            if 0 < len(ids) <= _MAX_VARS:  # (one chunk, mostly: the recount of a chain's step)
                self.raw.execute(self._in(c, len(ids)), self._spliced(c, ids, args))
                return
            for chunk in _chunks(ids):
                self.raw.execute(self._in(c, len(chunk)), self._spliced(c, chunk, args))
        except sqlite3.Error as e:
            raise self.convert(e, "write") from e

    # -- transactions -----------------------------------------------------------------------

    @property
    def in_write(self) -> bool:
        """in_write says whether the write transaction is open."""
        return self._in_write

    def begin_write(self, relaxed: bool = False) -> None:
        """begin_write opens the write transaction, waiting out other writers.

        relaxed commits it without its own sync: it is durable once a later
        synced commit is, and a power cut can only lose it together with
        every commit after it. Only for writes the engine can redo.
        """
        if self._in_write:
            return
        if self.refusal is not None:
            raise ReadOnlyStateError(self.refusal)
        self._check_file()
        if relaxed and self.can_relax:
            with self.guard("write"):
                self.raw.execute("PRAGMA synchronous = NORMAL")
            self._relaxed = True
        try:
            self._cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            if not _is_busy(e):
                self._restore_sync()
                raise self.convert(e, "write") from e
            self._begin_waiting()
        self._in_write = True

    def replaced(self) -> str | None:
        """replaced says why the path no longer names this writer's file (None: it does; or a reader).

        The path must still name the file this writer has open: after "mv
        backup.db state.db" (or rm, or mv away) a commit would land in a
        file nobody reads any more. Once found, it is for good: this store
        writes no more. One stat of the path.
        """
        if self._replaced is None:
            reason = self._link.replaced()
            if reason is None:
                return None
            with self._replaced_mu:  # the loop and a committer may find it at once: said once
                if self._replaced is None:
                    self._replaced = (f"cannot write state database {self.target}: the path no longer names the "
                                      f"file this process opened ({reason}); nothing more is written by this "
                                      "process, stop it and open the database again")
                    log.error("%s", self._replaced)
        return self._replaced

    def _check_file(self) -> None:
        # Before every commit: refused now and at every later commit.
        why = self.replaced()
        if why is not None:
            raise DatabaseReplacedError(why)

    def _restore_sync(self) -> None:
        if self._relaxed:
            self._relaxed = False
            with self.guard("write"):
                self.raw.execute(f"PRAGMA synchronous = {self.synchronous}")

    def _begin_waiting(self) -> None:
        # The first BEGIN IMMEDIATE already waited busy_timeout; the budget
        # bounds the whole wait, that first attempt included.
        started = time.monotonic() - self.busy_timeout

        def waited() -> float:
            return time.monotonic() - started

        def attempt_timeout(state: tenacity.RetryCallState) -> None:
            left = max(0.001, min(self.busy_timeout, self.busy_budget - waited()))
            self.raw.execute(f"PRAGMA busy_timeout = {int(left * 1000) or 1}")

        def warn(state: tenacity.RetryCallState) -> None:
            log.warning(
                "state database %s is locked by another process; still waiting after %.1f s (giving up after %g s)",
                self.target, waited(), self.busy_budget,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_busy),
            stop=tenacity.stop_after_delay(max(0.0, self.busy_budget - self.busy_timeout)),
            wait=tenacity.wait_none(),
            before=attempt_timeout,
            before_sleep=warn,
            reraise=True,
        )
        try:
            warn_first = True
            for attempt in retrying:
                with attempt:
                    if warn_first:
                        warn_first = False
                        warn(attempt.retry_state)
                    self.raw.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._restore_sync()
            if _is_busy(e):
                raise DatabaseBusyError(
                    f"cannot write state database {self.target}: another process held its write lock "
                    f"for more than {self.busy_budget:g} s; the changes are kept and written by the next commit"
                ) from e
            raise self.convert(e, "write") from e
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.raw.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def commit(self) -> None:
        """commit ends the write transaction."""
        if not self._in_write:
            return
        if self.refusal is not None:  # fenced while the transaction was open
            self.rollback()
            raise ReadOnlyStateError(self.refusal)
        try:
            self._cur.execute("COMMIT")
        except sqlite3.Error as e:
            raise self.convert(e, "commit") from e
        self._in_write = False
        self._restore_sync()

    def rollback(self) -> None:
        """rollback abandons the write transaction, if one is open."""
        if not self._in_write:
            return
        self._in_write = False
        try:
            self.raw.execute("ROLLBACK")
        except sqlite3.Error as e:  # the transaction may already be gone
            log.debug("rollback of %s: %s", self.target, e)
        try:
            self._restore_sync()
        except DatabaseError as e:
            log.debug("restoring synchronous on %s: %s", self.target, e)

    # -- the life of the link ---------------------------------------------------------------

    def data_version(self) -> int:
        """data_version changes whenever another connection commits."""
        try:
            # (Its one row fetched to the end, so that the cursor leaves no statement open: fetchall.)
            return int(self._cur.execute("PRAGMA data_version").fetchall()[0][0])
        except sqlite3.Error as e:
            raise self.convert(e, "read") from e

    def refresh(self) -> bool:
        """refresh says whether another connection (a sqlite3 shell) committed since the last call.

        A read-only snapshot that a writer made stale is replaced first.
        """
        changed = False
        if self._link.stale():
            self._link.reconnect()
            self.raw = self._link.raw
            self._cur = self.raw.cursor()
            changed = True
        version = self.data_version()
        if version != self._data_version:
            self._data_version = version
            changed = True
        return changed

    def check_read(self) -> None:
        """check_read raises DatabaseBusyError if a writer changed the file under a read-only snapshot."""
        if self._link.changed_under_snapshot():
            raise DatabaseBusyError(f"cannot read state database {self.target}: a writer changed the file "
                                    "while it was read; read it again")

    def fence(self, *, tidy: bool = True) -> None:
        """fence lets another writer take the database: the log is checkpointed (tidy), the file lock let go."""
        self.rollback()
        if tidy:
            self._link.checkpoint()
        if self.replaced() is not None:
            # Its locks stay until close: SQLite closing this connection
            # checkpoints and removes the -wal and -shm names, which must
            # not be another writer's by then.
            return
        self._link.release_writer()

    def close(self, *, tidy: bool) -> None:
        """close closes the connection; tidy first folds the write-ahead log into the file (a writer)."""
        self.rollback()
        if tidy:
            self._link.checkpoint()
        self._link.close()
