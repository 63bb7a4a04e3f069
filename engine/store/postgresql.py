# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresStore: the Store on PostgreSQL (psycopg 3), shared by several runner hosts.

One connection per State. Each unit of work is one real transaction (READ
COMMITTED), begun by its first statement and ended by the State's unlock.
What only PostgreSQL does, in one place:

- the forms of the statements: INSERT ... ON CONFLICT, an IN list as one
  array parameter (= ANY), no index hints;
- row locks: a task row is loaded FOR NO KEY UPDATE, so that a unit of work never
  writes back a stale copy of a task; a change row is locked when a unit
  of work writes what people set on it (its data, an explicit status) and,
  at every commit, for the status, ready time and clean flag that the unit
  derives from its tasks (engine.shared); candidates for a claim lock their
  own rows with SKIP LOCKED, so a host passes over the tasks another host
  is writing;
- the claim: one UPDATE ... WHERE id IN (SELECT ... FOR NO KEY UPDATE OF t
  SKIP LOCKED) RETURNING, recording this runner and its lease; leases extended
  by a heartbeat, and expired ones found by any host's reaper;
- ids in blocks from the sequences table, on a side connection in
  autocommit mode, so that no unit of work holds the sequence rows;
- NOTIFY at the commit of a unit of work that made tasks runnable;
- error codes: deadlocks, serialization failures and lost connections are
  DatabaseConflictError (rolled back, run it again).

docs/scale-out.md tells the design, the locking and the failure cases.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import tenacity
from sqlalchemy import Table, bindparam, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from ..errors import DatabaseConflictError, DatabaseError, ReadOnlyStateError
from .base import Row
from .compiled import Catalog, Compiled
from .sqlstore import SqlStore
from .statements import CHANGE_COLUMNS, NOTICE_COLUMNS, TASK_COLUMNS

log = logging.getLogger("engine.store")
T = TypeVar("T")

#: The channel a commit that made tasks runnable notifies (LISTEN engine_work).
CHANNEL = "engine_work"
#: The channel a commit that added or repeated notices notifies (State.wait_notices on other hosts).
NOTICE_CHANNEL = "engine_notices"
#: The type of the notice a change's status moves repeat (engine.notice.CHANGE_UPDATE).
CHANGE_UPDATE = "change-update"
#: How many ids a host takes from a sequence at once.
ID_BLOCK = 64
_RUNNING = "('Doing','Undoing')"
#: The statuses of a task whose handler may be running (an aborted one still runs until it returns).
_HELD = "('Doing','Undoing','Abort')"


class PostgresForms:
    """PostgresForms are PostgreSQL's own forms of the engine's statements."""

    name = "postgresql"

    def insert_ignore(self, table: Table) -> Any:
        """insert_ignore is INSERT ... ON CONFLICT DO NOTHING."""
        return pg_insert(table).on_conflict_do_nothing()

    def upsert(self, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """upsert is INSERT ... ON CONFLICT (keys) DO UPDATE SET the other columns."""
        stmt = pg_insert(table).values({c: bindparam(c) for c in columns})
        return stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in columns if c not in keys})

    def hint(self, stmt: Any, table: Any, index: str) -> Any:
        """hint is nothing: PostgreSQL's planner has statistics."""
        return stmt

    def json_valid(self, column: str) -> Any:
        """json_valid is true: PostgreSQL enforces the CHECK that the column holds JSON, always."""
        return true()


CATALOG = Catalog(PGDialect_psycopg(paramstyle="format"), PostgresForms())  # type: ignore[no-untyped-call]

_T = ", ".join(f"t.{c}" for c in TASK_COLUMNS)
_C = ", ".join(CHANGE_COLUMNS)
_NOW = "extract(epoch from clock_timestamp())"
_UNREADY = "t.status NOT IN ('Done','Undone','Hold','Error')"
# The claims: one UPDATE over candidates this transaction locks, passing over
# tasks another host is writing (SKIP LOCKED).
# The outer condition ({again}) is checked again on the row as it is when it is updated: a task
# another host claimed (and committed) after this statement's snapshot is passed over, not taken twice.
# (= ANY (ARRAY(...)), the subquery run once and the rows updated by primary key, is the IN form that
# PostgreSQL's planner never turns into a scan of every task.)
_CLAIM = (f"UPDATE tasks SET runner = %s, lease_until = {_NOW} + %s WHERE {{again}} AND id = ANY (ARRAY("
          "SELECT t.id FROM tasks t JOIN changes c ON c.id = t.change_id WHERE {where} "
          f"ORDER BY t.id LIMIT %s FOR NO KEY UPDATE OF t SKIP LOCKED)) RETURNING {', '.join(TASK_COLUMNS)}")
_CLAIM_DO = _CLAIM.format(again="status = 'Do' AND lease_until IS NULL", where=(
    "t.status = 'Do' AND t.blockers = 0 AND t.id > %s AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
    "JOIN tasks w ON w.id = d.wait_task_id WHERE d.task_id = t.id AND w.status <> 'Done')"))
_CLAIM_UNDO = _CLAIM.format(again="status = 'Undo' AND lease_until IS NULL", where=(
    f"{_UNREADY} AND t.status = 'Undo' AND t.id > %s AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
    "JOIN tasks h ON h.id = d.task_id WHERE d.wait_task_id = t.id "
    "AND h.status NOT IN ('Done','Undone','Hold','Error'))"))
# Doing and Undoing tasks that no runner holds: waiting for a retry, or left from a crash before leases.
_CLAIM_STARTED = _CLAIM.format(again="status IN ('Doing','Undoing') AND lease_until IS NULL",
                               where="t.status IN ('Doing','Undoing') AND t.lease_until IS NULL AND t.id > %s")
# Tasks in a status (Abort) that this transaction could lock, except those another runner holds.
_LOCKED_IN_STATUS = (f"SELECT {_T} FROM tasks t JOIN changes c ON c.id = t.change_id WHERE {_UNREADY} "
                     f"AND t.status = %s AND (t.lease_until IS NULL OR t.runner = %s OR t.lease_until < {_NOW}) "
                     "AND t.id > %s ORDER BY t.id LIMIT %s FOR NO KEY UPDATE OF t SKIP LOCKED")
# Rows locked as they are read, in id order (so that two hosts lock them in the same order).
# FOR NO KEY UPDATE, not FOR UPDATE: the foreign key checks of other transactions' task writes take
# FOR KEY SHARE on the change row (also for a task row this transaction wrote before), and two units
# of work each holding that and waiting for FOR UPDATE deadlocked (found by bench/pg.py with 2 hosts).
_TASKS_LOCKED = f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks WHERE id = ANY (%s) ORDER BY id FOR NO KEY UPDATE"
_CHANGES_LOCKED = f"SELECT {_C} FROM changes WHERE id = ANY (%s) ORDER BY id FOR NO KEY UPDATE"


def _sqlstate(e: BaseException) -> str:
    return str(getattr(e, "sqlstate", "") or "")


class PostgresStore(SqlStore):
    """PostgresStore runs the engine's SQL on one psycopg connection, one transaction per unit of work."""

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
        self._claims: set[int] = set()  # tasks this transaction claimed
        self._blocks: dict[str, tuple[int, int]] = {}  # name -> (next, last) of the block in hand
        self._any_sql: dict[str, str] = {}
        self.notify = False
        self.notify_notices = False
        #: The runner claiming through this store (TaskRunner sets it), and its lease in seconds.
        self.runner_id: str | None = None
        self.lease = 30.0
        self._connect()

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> None:
        self._pipe = self._pipe_cm = None
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
        state = _sqlstate(e)
        self._in_write = False
        self._began = False
        self._ahead.clear()
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
        return self._conn.cursor()

    def _statement(self, doing: str, fn: Callable[[Any], T]) -> T:
        """_statement runs fn(cursor) under guard.

        The first statement of a transaction that meets a connection the
        server dropped while it was idle (a restart, an idle timeout) runs
        again on a new connection: nothing of the transaction was lost yet.
        """
        retried = False
        while True:
            if doing == "write":
                self.begin_write()
                self._ahead.clear()
            first = not self._began
            try:
                with self.guard(doing), self._cursor() as cur:
                    out = fn(cur)
                self._began = True
                return out
            except DatabaseConflictError:
                if retried or not first or not self._lost():
                    raise
                retried = True
                log.info("the server of state database %s dropped an idle connection: connecting again", self.target)
                self.refresh()

    def run(self, sql: str, args: Sequence[Any] = (), doing: str = "read") -> list[Row]:
        """run runs one statement of this backend's own that returns rows (a SELECT, or RETURNING)."""
        def go(cur: Any) -> list[Row]:
            cur.execute(sql, args)
            rows: list[Row] = cur.fetchall()
            return rows

        return self._statement(doing, go)

    def write(self, sql: str, args: Sequence[Any] = ()) -> None:
        """write runs one statement whose rows and row count nobody reads (pipelined: see _pipelined)."""
        def go(cur: Any) -> None:
            self._pipelined()
            cur.execute(sql, args)

        self._statement("write", go)

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

    def execute(self, c: Compiled, args: Sequence[Any] = ()) -> int:
        """execute runs one statement in the write transaction; returns rowcount."""
        def go(cur: Any) -> int:
            cur.execute(c.sql, c.args(args))
            if self._pipe is not None:
                self._pipe.sync()  # (the row count is asked for: wait for it)
            return int(cur.rowcount)

        return self._statement("write", go)

    def executemany(self, c: Compiled, rows: Sequence[Sequence[Any]]) -> None:
        """executemany runs one statement for many rows (pipelined: see _pipelined)."""
        if not rows:
            return

        def go(cur: Any) -> None:
            self._pipelined()
            cur.executemany(c.sql, rows if c.direct else [c.args(r) for r in rows])

        self._statement("write", go)

    def execute_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> None:
        """execute_in runs a statement whose IN list is one array parameter."""
        if not ids:
            return
        full = list(c.args((*args[: c.expanding], None, *args[c.expanding:]) if c.expanding is not None else args))
        full[c.slots.index(c.expanding)] = list(ids)
        self.write(self._any(c), full)

    # -- row locks: a task row as it is read, a change row as it is written ------------------

    def locked_change_rows(self, ids: Sequence[int]) -> list[Row]:
        """locked_change_rows locks change rows (in id order) and reads them as committed now."""
        if self._read_only:
            return super().change_rows(ids)
        todo = sorted({i for i in ids if i is not None})
        if not todo:
            return []
        # What settle_changes asks next, in the same round trip: the counts of their tasks, read again
        # under the locks, and their change-update notices (a status that moved repeats one).
        c = self.sql["status_counts_of"]
        keys = [str(i) for i in todo]
        rows, more = self._read_ahead((_CHANGES_LOCKED, (todo,)), {
            "counts": (self._any(c), self._in_args(c, todo)),
            "notices": (f"SELECT {', '.join(NOTICE_COLUMNS)} FROM notices WHERE type = %s AND key = ANY (%s)",
                        (CHANGE_UPDATE, keys)),
        })
        self._ahead["counts_of"] = (set(todo), more["counts"])
        self._ahead["notices"] = (set(keys), {r[2]: r for r in more["notices"]})
        return rows

    def notice_row(self, type: str, key: str) -> Row | None:
        """notice_row loads the notice of a type and key (a change's change-update notice is read ahead)."""
        known = self._ahead.get("notices")
        if type == CHANGE_UPDATE and known is not None and key in known[0]:
            row: Row | None = known[1].get(key)
            return row
        return super().notice_row(type, key)

    def task_rows(self, ids: Sequence[int]) -> list[Row]:
        """task_rows locks and loads tasks (what a unit of work read of a task stays true until it commits).

        What a unit of work asks next about the tasks it locked (their edges,
        lanes and lease holders, their changes, the counts of those changes'
        tasks, the changes with waiting tasks) is read in the same round trip
        (_read_ahead).
        """
        if self._read_only or not ids:
            return super().task_rows(ids)
        todo = sorted(set(ids))
        c_counts = self.sql["status_counts_of"]
        assert c_counts.token is not None
        of_changes = "IN (SELECT change_id FROM tasks WHERE id = ANY (%s))"
        waiting = self.sql["changes_with_waiting_tasks"]
        ahead = {
            "edges_from": (self._any(self.sql["edges_from"]), self._in_args(self.sql["edges_from"], todo)),
            "edges_to": (self._any(self.sql["edges_to"]), self._in_args(self.sql["edges_to"], todo)),
            "lanes": (self._any(self.sql["lanes"]), self._in_args(self.sql["lanes"], todo)),
            "runners": ("SELECT id, runner FROM tasks WHERE id = ANY (%s)", (todo,)),
            "changes": (f"SELECT {_C} FROM changes WHERE id {of_changes}", (todo,)),
            "counts": (c_counts.sql.replace(f"IN ({c_counts.token})", of_changes), self._in_args(c_counts, todo)),
            "waiting": (waiting.sql, waiting.args(())),
        }
        rows, more = self._read_ahead((_TASKS_LOCKED, (todo,)), ahead)
        more["ids"] = set(todo)
        more["change_ids"] = {r[0] for r in more["changes"]}
        self._ahead = more
        return rows

    def _read_ahead(self, first: tuple[str, Sequence[Any]], more: dict[str, tuple[str, Sequence[Any]]],
                    doing: str = "read") -> tuple[list[Row], dict[str, Any]]:
        """_read_ahead runs first and the statements of more in one round trip (pipelined); it returns their rows.

        They run one after the other on the server, so those of more see
        what first locked as it is once locked.
        """
        def go(cur: Any) -> tuple[list[Row], dict[str, Any]]:
            if self._pipe is None and not self._lost():
                # (A lost connection is met here, inside this statement, and retried like any first statement.)
                self._enter_pipeline()
            curs = {k: self._conn.cursor() for k in more}
            try:
                cur.execute(*first)
                for k, c in curs.items():
                    c.execute(*more[k])
                rows: list[Row] = cur.fetchall()
                return rows, {k: c.fetchall() for k, c in curs.items()}
            finally:
                for c in curs.values():
                    c.close()

        return self._statement(doing, go)

    def status_counts_of(self, ids: Sequence[int]) -> dict[int, tuple[dict[str, int], int]]:
        """status_counts_of is status_counts for several changes (read ahead when their rows were locked)."""
        known = self._ahead.get("counts_of")
        if known is None or not known[0].issuperset(ids):
            return super().status_counts_of(ids)
        out: dict[int, tuple[dict[str, int], int]] = {}
        want = set(ids)
        for cid, status, n, unclean in known[1]:
            if cid in want:
                counts, total = out.get(cid, ({}, 0))
                counts[status] = int(n)
                out[cid] = (counts, total + int(unclean or 0))
        return out

    def _covered(self, ids: Sequence[int]) -> bool:
        """_covered says whether what was read ahead covers the tasks of ids."""
        known = self._ahead.get("ids")
        return known is not None and bool(ids) and known.issuperset(ids)

    def edges_touching(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """edges_touching returns every (task, wait task) edge with an end in ids (read ahead if it was)."""
        if not self._covered(ids):
            return super().edges_touching(ids)
        want = set(ids)
        return sorted({(r[0], r[1]) for r in self._ahead["edges_from"] + self._ahead["edges_to"]
                       if r[0] in want or r[1] in want})

    def lanes(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """lanes returns the (task, lane) rows of the given tasks (read ahead if they were)."""
        if not self._covered(ids):
            return super().lanes(ids)
        want = set(ids)
        return [(r[0], r[1]) for r in self._ahead["lanes"] if r[0] in want]

    def change_row(self, cid: int) -> Row | None:
        """change_row loads one change (read ahead with the tasks of it that were locked)."""
        if cid in self._ahead.get("change_ids", ()):
            row: Row = next(r for r in self._ahead["changes"] if r[0] == cid)
            return row
        return super().change_row(cid)

    def status_counts(self, cid: int) -> tuple[dict[str, int], int]:
        """status_counts counts the tasks of a change by status, and the unclean ones (read ahead if it was)."""
        if cid in self._ahead.get("change_ids", ()):
            rows = [r for r in self._ahead["counts"] if r[0] == cid]
            return {str(r[1]): int(r[2]) for r in rows}, sum(int(r[3] or 0) for r in rows)
        return super().status_counts(cid)

    def changes_with_waiting_tasks(self) -> list[int]:
        """changes_with_waiting_tasks lists the changes that have tasks in Wait (read ahead if it was)."""
        if "waiting" in self._ahead:
            return [r[0] for r in self._ahead["waiting"]]
        return super().changes_with_waiting_tasks()

    def tasks_of_change(self, cid: int) -> list[Row]:
        """tasks_of_change locks and loads the tasks of a change."""
        if self._read_only:
            return super().tasks_of_change(cid)
        return self.run(self.sql["tasks_of_change"].sql + " FOR NO KEY UPDATE", (cid,))

    def unclean_tasks(self, cid: int) -> list[Row]:
        """unclean_tasks locks and loads the unclean tasks of a change."""
        if self._read_only:
            return super().unclean_tasks(cid)
        return self.run(self.sql["unclean_tasks"].sql + " FOR NO KEY UPDATE", (cid,))

    # -- claims, leases and the reaper --------------------------------------------------------

    def _claimed(self, rows: list[Row]) -> list[Row]:
        self._claims.update(r[0] for r in rows)
        return rows

    def release_claims(self, kept: Sequence[int], *, others: bool = False) -> None:
        """release_claims gives back the leases this pass took on tasks it did not start (held back, not due).

        others: tasks were left runnable that this host has no worker for; the commit wakes the other hosts.
        """
        unused = sorted(self._claims.difference(kept))
        self._claims.clear()
        if others:
            self.notify = True
        if unused:
            self.write("UPDATE tasks SET runner = NULL, lease_until = NULL WHERE id = ANY (%s) AND runner = %s",
                       (unused, self.runner_id))

    def runnable_do(self, after_id: int, limit: int) -> list[Row]:
        """runnable_do claims Do tasks whose wait tasks are all Done: runner and lease recorded, rows locked."""
        if self.runner_id is None or self._read_only:
            return super().runnable_do(after_id, limit)
        # What the pass asks next about the changes of the tasks it claimed comes in the same round trip.
        c_counts = self.sql["status_counts_of"]
        assert c_counts.token is not None
        held = "IN (SELECT change_id FROM tasks WHERE runner = %s)"
        waiting = self.sql["changes_with_waiting_tasks"]
        counts_args = list(c_counts.args((None,)))
        counts_args[c_counts.slots.index(c_counts.expanding)] = self.runner_id
        rows, more = self._read_ahead((_CLAIM_DO, (self.runner_id, self.lease, after_id, limit)), {
            "changes": (f"SELECT {_C} FROM changes WHERE id {held}", (self.runner_id,)),
            "counts": (c_counts.sql.replace(f"IN ({c_counts.token})", held), counts_args),
            "waiting": (waiting.sql, waiting.args(())),
        }, "write")
        more["change_ids"] = {r[0] for r in more["changes"]}
        self._ahead = more
        return self._claimed(rows)

    def runnable_undo(self, after_id: int, limit: int) -> list[Row]:
        """runnable_undo claims Undo tasks whose halt tasks are all ready, as runnable_do claims."""
        if self.runner_id is None or self._read_only:
            return super().runnable_undo(after_id, limit)
        return self._claimed(self.run(_CLAIM_UNDO, (self.runner_id, self.lease, after_id, limit), "write"))

    def tasks_in_status(self, status: str, after_id: int, limit: int) -> list[Row]:
        """tasks_in_status pages through unready tasks with a status that this transaction could lock."""
        if self._read_only:
            return super().tasks_in_status(status, after_id, limit)
        locked = self.run(_LOCKED_IN_STATUS, (status, self.runner_id or "", after_id, limit))
        # Read again once locked: a row that changed since the statement began reads as it was then.
        fresh = {r[0]: r for r in super().task_rows([r[0] for r in locked])} if locked else {}
        # (A page that comes back shorter ends this pass's paging early; the next pass sees the rest.)
        return [fresh[r[0]] for r in locked if r[0] in fresh and fresh[r[0]][4] == status]

    def claim_cleanup(self, tid: int) -> bool:
        """claim_cleanup takes a lease on an unclean task of a ready change, for its cleanup handler."""
        return bool(self.run(f"UPDATE tasks SET runner = %s, lease_until = {_NOW} + %s WHERE id = %s "
                             "AND lease_until IS NULL AND NOT clean RETURNING id",
                             (self.runner_id, self.lease, tid), "write"))

    def started_tasks(self, after_id: int, limit: int) -> list[Row]:
        """started_tasks claims Doing and Undoing tasks that no runner holds (a retry is due, say)."""
        if self.runner_id is None or self._read_only:
            return super().started_tasks(after_id, limit)
        return self._claimed(self.run(_CLAIM_STARTED, (self.runner_id, self.lease, after_id, limit), "write"))

    def end_leases(self, ids: Sequence[int]) -> None:
        """end_leases clears the leases of the given tasks (their outcome is recorded, or the reaper took them)."""
        if ids:
            self.write("UPDATE tasks SET runner = NULL, lease_until = NULL WHERE id = ANY (%s) "
                       "AND lease_until IS NOT NULL", (list(ids),))

    def runners_of(self, ids: Sequence[int]) -> dict[int, str | None]:
        """runners_of says which runner holds the lease of each task (read ahead if it was)."""
        if self._covered(ids):
            want = set(ids)
            return {r[0]: r[1] for r in self._ahead["runners"] if r[0] in want}
        return {r[0]: r[1] for r in self.run("SELECT id, runner FROM tasks WHERE id = ANY (%s)", (list(ids),))}

    def expired_leases(self) -> list[int]:
        """expired_leases lists running tasks whose lease ran out (or that have none), by the server's clock."""
        return [r[0] for r in self.run(
            f"SELECT id FROM tasks WHERE lease_until < {_NOW} AND (status IN {_HELD} OR NOT clean) "
            "AND change_id IS NOT NULL ORDER BY id LIMIT 256")]

    def lease_expired(self, tid: int) -> bool:
        """lease_expired says, once the task is locked, whether its lease is still out."""
        rows = self.run(f"SELECT lease_until < {_NOW} FROM tasks WHERE id = %s", (tid,))
        return bool(rows and rows[0][0])

    def heartbeat(self, runner: str, lease: float) -> int:
        """heartbeat extends the leases of runner's running tasks (on the side connection); returns how many."""
        cur = self._side_execute(
            f"UPDATE tasks SET lease_until = {_NOW} + %s WHERE runner = %s AND (status IN {_HELD} OR NOT clean)",
            (lease, runner))
        return int(cur.rowcount)

    # -- wake-ups ----------------------------------------------------------------------------

    def listen(self, wake: Any, stop: threading.Event, channel: str = CHANNEL,
               listening: threading.Event | None = None) -> None:
        """listen calls wake() whenever another host's commit made tasks runnable, until stop is set.

        Its own connection LISTENs on channel (CHANNEL; NOTICE_CHANNEL for
        notices); a lost connection is opened again (the waiters' polling
        covers what was missed meanwhile). listening is set once LISTEN ran.
        The notifications of this store's own commits are passed over: the
        State wakes its own loop and notice waiters after such a commit, and
        a second wake-up cost a chain an empty ensure pass per task.
        """
        while not stop.is_set():
            try:
                raw = self._engine.raw_connection()
                try:
                    conn = raw.driver_connection
                    conn.autocommit = True
                    conn.execute(f"LISTEN {channel}")
                    if listening is not None:
                        listening.set()
                    while not stop.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=1):
                            if n.pid != self._own_backend():
                                wake()
                finally:
                    raw.close()
            except Exception as e:  # the server restarting, say
                log.info("listening for work on %s: %s; trying again", self.target, e)
                stop.wait(1.0)

    def _own_backend(self) -> int | None:
        """_own_backend is the server process of this store's connection (None while there is none)."""
        conn = self._conn
        try:
            return None if conn is None or conn.closed else int(conn.info.backend_pid)
        except Exception:  # a connection being replaced: wake, to be safe
            return None

    # -- ids ---------------------------------------------------------------------------------

    def next_id(self, name: str) -> int:
        """next_id hands out the next id of a sequence, from a block taken on the side connection."""
        nxt, last = self._blocks.get(name, (1, 0))
        if nxt > last and self._read_only:
            # Nothing of a read-only State is ever written: ids for its refused work, from what is there.
            top = int(self.sequences().get(name, 0))
            nxt, last = top + 1, top + 2**31
        elif nxt > last:
            row = self._side_execute(
                "INSERT INTO sequences (name, last_id) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                "SET last_id = GREATEST(sequences.last_id, (SELECT coalesce(max(id), 0) FROM tasks WHERE "
                "%s = 'task'), (SELECT coalesce(max(id), 0) FROM changes WHERE %s = 'change')) + %s "
                "RETURNING last_id", (name, ID_BLOCK, name, name, ID_BLOCK)).fetchone()
            last = int(row[0])
            nxt = last - ID_BLOCK + 1
        self._blocks[name] = (nxt + 1, last)
        return nxt

    def save_sequences(self, values: dict[str, int]) -> None:
        """save_sequences does nothing: ids are taken from the database as they are handed out."""

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
                self._conn.execute("COMMIT")
                self._end_pipeline(raising=True)  # one Sync: every answer, the COMMIT's last
            else:
                self._conn.commit()
        self.notify = False
        self.notify_notices = False
        self._in_write = False
        self._began = False
        self._ahead.clear()
        self._claims.clear()

    def rollback(self) -> None:
        """rollback abandons the unit of work's transaction."""
        self._in_write = False
        self._began = False
        self._ahead.clear()
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
