# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresLink: the connection of a PostgresStore, its transactions and how statements run on it.

One connection per State. Each unit of work is one real transaction (READ
COMMITTED), begun by its first statement and ended by the State's unlock;
once it ran its first statement, the rest of it is pipelined (a write
whose answer nobody reads travels with the next read or the COMMIT). ids
and heartbeats go through a side connection in autocommit mode. Driver
errors become the engine's: deadlocks, serialization failures and lost
connections are DatabaseConflictError (rolled back, run it again).
engine.store.postgresql builds the store's verbs on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import tenacity

from ..errors import DatabaseConflictError, DatabaseError, ReadOnlyStateError
from .base import Row
from .compiled import Compiled
from .postgresql_sql import CATALOG, CHANNEL, NOTICE_CHANNEL, sqlstate
from .sqlstore import SqlStore

log = logging.getLogger("engine.store")
T = TypeVar("T")

#: A commit that inserted this many task and edge rows or more has the server analyze those tables (_analyze).
ANALYZE_AFTER = 1000
_BULK = frozenset({"insert_tasks", "insert_new_tasks", "insert_edges"})


class PostgresLink(SqlStore):
    """PostgresLink runs the engine's SQL on one psycopg connection, one transaction per unit of work."""

    sql = CATALOG
    shared = True

    def __init__(self, engine: Any, target: str, *, read_only: bool, busy_budget: float = 120.0) -> None:
        import psycopg

        #: How long a lost server is waited for, in all, before a unit of work fails.
        self.busy_budget = busy_budget
        self._psycopg = psycopg
        self._engine = engine
        self.target = target
        self.refusal: str | None = None
        self._read_only = read_only
        self._conn: Any = None
        self._side: Any = None  # autocommit: ids, heartbeats
        self._side_lock = threading.Lock()
        self._in_write = False
        self._began = False  # whether a statement of the current transaction ran
        self._pipe: Any = None  # the transaction's pipeline, once it wrote (see _pipelined)
        self._pipe_cm: Any = None  # the context manager that entered it, and leaves it
        self._ahead: dict[str, Any] = {}  # rows read ahead in this transaction, until it writes (see _read_ahead)
        # The queued changes read ahead in this transaction, until it writes to change_affects (queued_changes).
        self._queued: list[int] | None = None
        # The changes whose rows and task counts were read ahead in this transaction (not read again by a claim).
        self._counted: set[int] = set()
        # Change rows this transaction share-locked with a claim: (ids, rows, those with tasks in Wait) (keep_changes).
        self._shared: tuple[set[int], list[Row], set[int]] | None = None
        self._held: dict[int, bool] = {}  # change rows this transaction locked: id -> exclusively (postgresql_locks)
        self._claims: set[int] = set()  # tasks this transaction claimed
        # Tasks this transaction read or inserted: id -> (change, status, clean) as read (counts_besides).
        self._mine: dict[int, tuple[int | None, str | None, bool]] = {}
        # What PROBE read ahead of changes in this transaction (kept through its writes: they touch only tasks
        # it holds, or inserts it holds): change -> (ids left out, result) (counts_besides).
        self._probes: dict[int, Any] = {}
        # The tasks of _mine whose change no probe read yet, by change (PostgresCounts._unprobed).
        self._loose: dict[int | None, set[int]] = {}
        self._inserted = 0  # task and edge rows this transaction inserted (ANALYZE_AFTER)
        self._blocks: dict[str, tuple[int, int]] = {}  # name -> (next, last) of the block in hand
        self._any_sql: dict[str, str] = {}
        # Cursors of _conn used again (psycopg takes about 30 us to make one and close it; a step runs about ten
        # statements): those whose results were all read (_spare), and the one that sends the writes whose results
        # nobody reads (_writer: a cursor with results still due is never given a read). Forgotten at an error.
        self._spare: list[Any] = []
        self._writer: Any = None
        self.notify = False
        self.notify_notices = False
        #: The runner claiming through this store (TaskRunner sets it), and its lease in seconds.
        self.runner_id: str | None = None
        self.lease = 30.0
        self._connect()

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> None:
        self._pipe = self._pipe_cm = None
        self._spare, self._writer = [], None
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        conn.autocommit = False
        self._raw, self._conn = raw, conn

    def _side_conn(self) -> Any:
        if self._side is None or self._side.closed:
            raw = self._engine.raw_connection()
            raw.driver_connection.autocommit = True
            self._side_raw, self._side = raw, raw.driver_connection
        return self._side

    def _side_execute(self, sql: str, args: Sequence[Any]) -> Any:
        """_side_execute runs one autocommit statement on the side connection and returns its cursor.

        Its errors never touch the unit of work's transaction (the heartbeat
        runs on a thread of its own). A side connection the server dropped
        while idle is opened again once.
        """
        with self._side_lock:
            for attempt in (0, 1):
                try:
                    return self._side_conn().execute(sql, args)
                except self._psycopg.Error as e:
                    side = self._side
                    lost = side is None or side.closed or side.broken
                    if lost and attempt == 0:
                        with contextlib.suppress(Exception):
                            self._side_raw.invalidate()
                        self._side = None
                        continue
                    text = " ".join(str(e).split())
                    if lost or isinstance(e, self._psycopg.OperationalError):
                        raise DatabaseConflictError(f"cannot write state database {self.target}: {text}; "
                                                    "run it again") from e
                    raise DatabaseError(f"cannot write state database {self.target}: {text}") from e
        raise AssertionError("unreachable")

    def _lost(self) -> bool:
        return self._conn is None or self._conn.closed or self._conn.broken

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """guard turns driver errors into DatabaseError naming the database."""
        try:
            yield
        except self._psycopg.Error as e:
            raise self.convert(e, doing) from e

    def convert(self, e: BaseException, doing: str) -> DatabaseError:
        """convert maps a driver error to the engine's error for it."""
        where = f"cannot {doing} state database {self.target}"
        text = " ".join(str(e).split())
        state = sqlstate(e)
        self._inserted = 0
        self._in_write = False
        self._began = False
        self._spare, self._writer = [], None
        self._ahead.clear()
        self._queued = None
        self._counted.clear()
        self._mine.clear()
        self._loose.clear()
        self._probes.clear()
        self._shared = None
        self._held.clear()
        if state in ("40001", "40P01", "55P03") or self._lost() or isinstance(e, self._psycopg.OperationalError):
            self._rollback_quietly()
            return DatabaseConflictError(f"{where}: {text}; the unit of work was rolled back: run it again")
        self._rollback_quietly()
        return DatabaseError(f"{where}: {text}")

    def _rollback_quietly(self) -> None:
        try:
            if not self._lost():
                self._conn.rollback()  # (in a pipeline: it syncs first, ending an aborted one)
        except self._psycopg.Error as e:
            log.debug("rollback of %s: %s", self.target, e)
        self._end_pipeline()

    def _pipelined(self) -> None:
        """_pipelined puts the rest of the transaction in pipeline mode, once its first statement ran.

        A write whose result nobody reads (a row update, an insert, a
        NOTIFY) is then sent without waiting for its answer: it travels
        with the next read, or with the COMMIT, in one round trip. Its
        error, if any, is raised there, and the transaction is rolled back
        as before. (The first statement of a transaction runs alone: one
        that meets a connection the server dropped is run again on a new one.)
        """
        if self._pipe is None and self._began and not self._lost():
            self._enter_pipeline()

    def _enter_pipeline(self) -> None:
        """_enter_pipeline enters pipeline mode: _pipe is the psycopg Pipeline (sync()), _pipe_cm what leaves it."""
        cm = self._conn.pipeline()
        self._pipe = cm.__enter__()
        self._pipe_cm = cm

    def _end_pipeline(self, raising: bool = False) -> None:
        """_end_pipeline leaves pipeline mode, with a Sync that waits for every answer still due.

        raising: the errors of the statements still unanswered are raised
        (at commit); otherwise (after a rollback) they are only logged.
        """
        pipe, self._pipe = self._pipe_cm, None
        self._pipe_cm = None
        if pipe is not None:
            try:
                pipe.__exit__(None, None, None)
            except Exception as e:  # a lost connection, or an error already dealt with
                if raising:
                    raise
                log.debug("leaving pipeline mode on %s: %s", self.target, e)

    # -- running statements ------------------------------------------------------------------

    def _any(self, c: Compiled) -> str:
        sql = self._any_sql.get(c.name)
        if sql is None:
            assert c.token is not None
            sql = self._any_sql[c.name] = c.sql.replace(f"IN ({c.token})", "= ANY (%s)")
        return sql

    def _cursor(self) -> Any:
        if self._lost():
            raise DatabaseConflictError(f"cannot use state database {self.target}: the connection was lost; "
                                        "run it again")
        spare = self._spare
        return spare.pop() if spare else self._conn.cursor()

    def _statement(self, doing: str, fn: Callable[[Any], T], sql: str = "", *, read: bool = False) -> T:
        """_statement runs fn(cursor) under guard (sql: its text, if one statement).

        read: fn reads every result of its cursor (the cursor is used again).

        The first statement of a transaction that meets a connection the
        server dropped while it was idle (a restart, an idle timeout) runs
        again on a new connection: nothing of the transaction was lost yet.
        """
        retried = False
        while True:
            if doing == "write":
                self.begin_write()
                self._ahead.clear()
                if not sql or "change_affects" in sql:
                    self._queued = None
            first = not self._began
            try:
                with self.guard(doing):
                    cur = self._cursor()
                    out = fn(cur)
                if read:
                    self._spare.append(cur)
                else:
                    cur.close()
                self._began = True
                return out
            except DatabaseConflictError:
                if retried or not first or not self._lost():
                    raise
                retried = True
                log.info("the server of state database %s dropped an idle connection: connecting again", self.target)
                self.refresh()

    def run(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = (), doing: str = "read") -> list[Row]:
        """run runs one statement of this backend's own that returns rows (a SELECT, or RETURNING)."""
        def go(cur: Any) -> list[Row]:
            cur.execute(sql, args)
            rows: list[Row] = cur.fetchall()
            return rows

        return self._statement(doing, go, sql, read=True)

    def send(self, sql: str, args: Sequence[Any] = ()) -> None:
        """send runs one statement whose rows and row count nobody reads (pipelined: see _pipelined)."""
        self._send(sql, args)

    def _send(self, sql: str, args: Sequence[Any]) -> None:
        """_send is send (executemany's too, for one row)."""
        def go(cur: Any) -> None:
            self._pipelined()
            self._written().execute(sql, args)

        self._statement("write", go, sql, read=True)  # (its cursor not used: given back as it came)

    def query(self, c: Compiled, args: Sequence[Any] = ()) -> list[Row]:
        """query runs one SELECT and returns its rows."""
        return self.run(c.sql, c.args(args))

    @staticmethod
    def _in_args(c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> list[Any]:
        """_in_args are the parameters of c in its = ANY form: args, with ids as the one array parameter."""
        full = list(c.args((*args[: c.expanding], None, *args[c.expanding:]) if c.expanding is not None else args))
        full[c.slots.index(c.expanding)] = list(ids)
        return full

    def query_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> list[Row]:
        """query_in runs a SELECT whose IN list is one array parameter."""
        if not ids:
            return []
        return self.run(self._any(c), self._in_args(c, ids, args))

    def each(self, c: Compiled, args: Sequence[Any], page: int) -> Iterator[Row]:
        """each yields the rows of a SELECT (fetched at once: the transaction holds them anyway)."""
        yield from self.query(c, args)

    def _written(self) -> Any:
        """_written is the cursor that sends the statements whose results nobody reads (no read is ever run on it)."""
        writer = self._writer
        if writer is None or writer.connection is not self._conn:
            writer = self._writer = self._conn.cursor()
        return writer

    def execute(self, c: Compiled, args: Sequence[Any] = ()) -> int:
        """execute runs one statement in the write transaction; returns rowcount."""
        def go(cur: Any) -> int:
            cur.execute(c.sql, c.args(args))
            if self._pipe is not None:
                self._pipe.sync()  # (the row count is asked for: wait for it)
            return int(cur.rowcount)

        return self._statement("write", go, c.sql)

    def executemany(self, c: Compiled, rows: Sequence[Sequence[Any]]) -> None:
        """executemany runs one statement for many rows (pipelined: see _pipelined)."""
        if not rows:
            return
        if len(rows) == 1:  # (one row: as send, on the writer cursor; psycopg's executemany costs more)
            self._send(c.sql, rows[0] if c.direct else c.args(rows[0]))
        else:
            def go(cur: Any) -> None:
                self._pipelined()
                cur.executemany(c.sql, rows if c.direct else [c.args(r) for r in rows])

            self._statement("write", go, c.sql)
        if c.name in _BULK:
            self._inserted += len(rows)

    def execute_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> None:
        """execute_in runs a statement whose IN list is one array parameter."""
        if not ids:
            return
        full = list(c.args((*args[: c.expanding], None, *args[c.expanding:]) if c.expanding is not None else args))
        full[c.slots.index(c.expanding)] = list(ids)
        self.send(self._any(c), full)

    def _read_ahead(self, first: tuple[str, Sequence[Any]],
                    more: dict[str, tuple[str, Sequence[Any] | Mapping[str, Any]]],
                    doing: str = "read") -> tuple[list[Row], dict[str, Any]]:
        """_read_ahead runs first and the statements of more in one round trip (pipelined); it returns their rows.

        They run one after the other on the server, so those of more see
        what first locked as it is once locked.
        """
        def go(cur: Any) -> tuple[list[Row], dict[str, Any]]:
            if self._pipe is None and not self._lost():
                # (A lost connection is met here, inside this statement, and retried like any first statement.)
                self._enter_pipeline()
            curs = {k: self._cursor() for k in more}
            cur.execute(*first)
            for k, c in curs.items():
                c.execute(*more[k])
            rows: list[Row] = cur.fetchall()
            out = {k: c.fetchall() for k, c in curs.items()}
            self._spare.extend(curs.values())  # (an error forgets them all)
            return rows, out

        return self._statement(doing, go, first[0], read=True)

    # -- transactions --------------------------------------------------------------------------

    @property
    def in_write(self) -> bool:
        """in_write says whether this unit of work wrote anything yet."""
        return self._in_write

    def begin_write(self, relaxed: bool = False) -> None:
        """begin_write marks the unit of work as writing (its transaction began with its first statement)."""
        if self.refusal is not None:
            raise ReadOnlyStateError(self.refusal)
        self._in_write = True

    def commit(self) -> None:
        """commit commits the unit of work's transaction (notifying listeners when tasks became runnable)."""
        if self.refusal is not None:
            self.rollback()
            raise ReadOnlyStateError(self.refusal)
        with self.guard("commit"):
            if self._in_write:
                self._pipelined()  # the notifications and the COMMIT travel with the unanswered writes
            if self.notify and self._in_write:
                self._conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            if self.notify_notices and self._in_write:
                self._conn.execute("SELECT pg_notify(%s, '')", (NOTICE_CHANNEL,))
            if self._pipe is not None:
                self._written().execute("COMMIT")  # (its error, if any, is raised at the Sync below)
                self._end_pipeline(raising=True)  # one Sync: every answer, the COMMIT's last
            else:
                self._conn.commit()
        self.notify = False
        self.notify_notices = False
        self._in_write = False
        self._began = False
        if self._inserted >= ANALYZE_AFTER:
            self._analyze()
        self._inserted = 0
        self._ahead.clear()
        self._queued = None
        self._counted.clear()
        self._mine.clear()
        self._loose.clear()
        self._probes.clear()
        self._shared = None
        self._held.clear()
        self._claims.clear()

    def _analyze(self) -> None:
        """_analyze has the server gather the statistics of the tasks and their edges again (after a bulk insert).

        Until autovacuum does it (a minute later, or more), the planner takes
        a table that just got thousands of tasks for the size it had: it then
        went through every Do task (or every task) to find the few that this
        runner leases, at every claim (about 1 ms against 0.05 ms, 10,000
        tasks). On the side connection, after the commit; a failure is only
        logged (autovacuum does it later anyway).
        """
        try:
            self._side_execute("ANALYZE tasks, task_dependencies", ())
        except DatabaseError as e:
            log.info("cannot analyze the tasks of state database %s: %s", self.target, e)

    def rollback(self) -> None:
        """rollback abandons the unit of work's transaction."""
        self._inserted = 0
        self._in_write = False
        self._began = False
        self._ahead.clear()
        self._queued = None
        self._counted.clear()
        self._mine.clear()
        self._loose.clear()
        self._probes.clear()
        self._shared = None
        self._held.clear()
        self.notify = False
        self.notify_notices = False
        self._claims.clear()
        self._rollback_quietly()

    # -- the life of the link ------------------------------------------------------------------

    def refresh(self) -> bool:
        """refresh reconnects a lost connection; it is always True: other hosts may have written anything."""
        if self._lost():
            log.warning("reconnecting to state database %s", self.target)
            try:
                self._raw.invalidate()
            except Exception as e:  # the pool may already have dropped it
                log.debug("dropping the lost connection to %s: %s", self.target, e)
            started = time.monotonic()

            def warn(rs: tenacity.RetryCallState) -> None:
                log.warning("cannot reach state database %s (%s); still trying after %.1f s (giving up after %g s)",
                            self.target, rs.outcome.exception() if rs.outcome else "?",
                            time.monotonic() - started, self.busy_budget)

            try:
                # As a busy SQLite database is waited for: up to the busy budget in all.
                tenacity.Retrying(wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
                                  stop=tenacity.stop_after_delay(self.busy_budget), before_sleep=warn,
                                  reraise=True)(self._connect)
            except Exception as e:
                raise DatabaseConflictError(f"cannot reach state database {self.target}: "
                                            f"{' '.join(str(e).split())}; run it again") from e
        return True

    def check_read(self) -> None:
        """check_read ends the read transaction of a unit of work that wrote nothing."""
        if not self._in_write:
            self.rollback()

    def replaced(self) -> str | None:
        """replaced is None: a server's database is not a file that can be replaced."""
        return None

    def fence(self, *, tidy: bool = True) -> None:
        """fence abandons the transaction; another host needs no lock given back (the leases end by themselves)."""
        self.rollback()

    def close(self, *, tidy: bool) -> None:
        """close closes the connections."""
        self.rollback()
        for raw in (getattr(self, "_raw", None), getattr(self, "_side_raw", None)):
            if raw is not None:
                try:
                    raw.close()
                except Exception as e:
                    log.debug("closing a connection to %s: %s", self.target, e)
        self._engine.dispose()
