# SPDX-License-Identifier: GPL-3.0-or-later
"""Store: every SQL statement the engine runs, on one SQLite connection.

The State owns one Store. Reads run in autocommit mode; writes run inside
one BEGIN IMMEDIATE transaction per commit, opened with a busy timeout and
retried with tenacity while another process holds the write lock. Driver
errors leave this module as DatabaseError subclasses that say what failed.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tenacity

from .db import sqlite_error
from .errors import DatabaseBusyError, DatabaseError, DatabaseFullError, ReadOnlyStateError
from .models import RUNNABLE_PREDICATE, UNREADY_PREDICATE
from .status import TASK_STATUSES

log = logging.getLogger("engine.store")

TASK_COLUMNS = (
    "id, change_id, kind, summary, status, waited_status, clean, progress_label, progress_done, "
    "progress_total, data, spawn_time, ready_time, at_time, doing_time, undoing_time, attempts, retry_attempts, "
    "retry_since"
)
CHANGE_COLUMNS = "id, kind, summary, status, explicit_status, clean, data, spawn_time, ready_time"
WARNING_COLUMNS = "message, first_added, last_added, last_shown, expire_after, repeat_after"

TaskTuple = tuple[Any, ...]
ChangeTuple = tuple[Any, ...]

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_FULL = 13
_KNOWN_STATUS = "status IN (" + ",".join(f"'{v}'" for v in TASK_STATUSES) + ")"
_MAX_VARS = 900  # stay under SQLite's default host-parameter limit


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _chunks(items: Sequence[Any], size: int = _MAX_VARS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Store:
    """Store runs the engine's SQL on one sqlite3 connection."""

    def __init__(self, raw: sqlite3.Connection, target: str, busy_budget: float, synchronous: str = "FULL",
                 busy_timeout: float = 5.0) -> None:
        self.raw = raw
        self.target = target
        self.busy_budget = busy_budget
        self.busy_timeout = busy_timeout
        self.in_write = False
        self.synchronous = synchronous.upper()
        # In WAL mode a commit without its own sync becomes durable with the
        # next synced one (WAL order): see begin_write(relaxed=True).
        wal = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        self.can_relax = wal and self.synchronous in ("FULL", "EXTRA")
        self._relaxed = False
        #: Why nothing may be written (a read-only or fenced State), or None.
        self.refusal: str | None = None

    # -- errors and transactions -------------------------------------------

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
            # The unit of work keeps its changes (see UnitOfWork._commit):
            # callers must not submit them again.
            return DatabaseFullError(f"{error}; the changes are kept in memory and written by the next commit",
                                     kept=True)
        return error

    def begin_write(self, relaxed: bool = False) -> None:
        """begin_write opens the write transaction, waiting out other writers.

        relaxed commits it without its own sync: it is durable once a later
        synced commit is, and a power cut can only lose it together with
        every commit after it. Only for writes the engine can redo.
        """
        if self.in_write:
            return
        if self.refusal is not None:
            raise ReadOnlyStateError(self.refusal)
        if relaxed and self.can_relax:
            with self.guard("write"):
                self.raw.execute("PRAGMA synchronous = NORMAL")
            self._relaxed = True
        try:
            self.raw.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            if not _is_busy(e):
                self._restore_sync()
                raise self.convert(e, "write") from e
            self._begin_waiting()
        self.in_write = True

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
        if not self.in_write:
            return
        if self.refusal is not None:  # fenced while the transaction was open
            self.rollback()
            raise ReadOnlyStateError(self.refusal)
        with self.guard("commit"):
            self.raw.execute("COMMIT")
        self.in_write = False
        self._restore_sync()

    def rollback(self) -> None:
        """rollback abandons the write transaction, if one is open."""
        if not self.in_write:
            return
        self.in_write = False
        try:
            self.raw.execute("ROLLBACK")
        except sqlite3.Error as e:  # the transaction may already be gone
            log.debug("rollback of %s: %s", self.target, e)
        try:
            self._restore_sync()
        except DatabaseError as e:
            log.debug("restoring synchronous on %s: %s", self.target, e)

    def data_version(self) -> int:
        """data_version changes whenever another connection commits."""
        with self.guard("read"):
            return int(self.raw.execute("PRAGMA data_version").fetchone()[0])

    # -- reads --------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """query runs one SELECT and returns its rows."""
        with self.guard("read"):
            return self.raw.execute(sql, params).fetchall()

    def query_in(self, sql: str, ids: Sequence[Any], params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """query_in runs sql, whose {} is an IN list, over ids in chunks."""
        rows: list[tuple[Any, ...]] = []
        with self.guard("read"):
            for chunk in _chunks(ids):
                rows += self.raw.execute(sql.format(_marks(len(chunk))), (*params, *chunk)).fetchall()
        return rows

    def sequences(self) -> dict[str, int]:
        """sequences returns the last ids handed out, never below the largest ids in use.

        A sequences row edited by hand (reset to 0, deleted) cannot make the
        engine hand out an id that a change, a task or a live lane holds.
        """
        stored: dict[str, int] = {}
        for name, last in self.query("SELECT name, last_id FROM sequences"):
            try:
                stored[str(name)] = int(last)
            except (TypeError, ValueError):
                log.error("ignoring the hand-edited sequence %r of %s: %r is not a number", name, self.target, last)
        used = self.query(
            "SELECT (SELECT max(id) FROM changes), (SELECT max(id) FROM tasks), "
            f"(SELECT max(lane) FROM task_lanes WHERE task_id IN (SELECT id FROM tasks WHERE {UNREADY_PREDICATE}))"
        )[0]
        for name, top in zip(("change", "task", "lane"), used, strict=True):
            if isinstance(top, int) and top > stored.get(name, 0):
                if name in stored:
                    log.warning("the %s sequence of %s is behind the ids in use (%d < %d): ids go on from %d",
                                name, self.target, stored[name], top, top)
                stored[name] = top
        return stored

    def task_rows(self, ids: Sequence[int]) -> list[TaskTuple]:
        """task_rows loads tasks by id."""
        if len(ids) == 1:
            return self.query(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", ids)
        return self.query_in(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({{}})", ids)

    def change_row(self, cid: int) -> ChangeTuple | None:
        """change_row loads one change."""
        rows = self.query(f"SELECT {CHANGE_COLUMNS} FROM changes WHERE id = ?", (cid,))
        return rows[0] if rows else None

    def change_rows(self, ids: Sequence[int]) -> list[ChangeTuple]:
        """change_rows loads changes by id."""
        return self.query_in(f"SELECT {CHANGE_COLUMNS} FROM changes WHERE id IN ({{}})", ids)

    def change_ids(self) -> list[int]:
        """change_ids lists every change."""
        return [r[0] for r in self.query("SELECT id FROM changes ORDER BY id")]

    def tasks_of_change(self, cid: int) -> list[TaskTuple]:
        """tasks_of_change loads all the tasks of one change."""
        return self.query(f"SELECT {TASK_COLUMNS} FROM tasks WHERE change_id = ? ORDER BY id", (cid,))

    def each_task_of_change(self, cid: int, page: int = 256) -> Iterator[TaskTuple]:
        """each_task_of_change yields the tasks of one change a page at a time (for big changes)."""
        with self.guard("read"):
            cur = self.raw.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE change_id = ? ORDER BY id", (cid,))
            try:
                while rows := cur.fetchmany(page):
                    yield from rows
            finally:
                cur.close()

    def task_ids_of_change(self, cid: int) -> list[int]:
        """task_ids_of_change lists the ids of the tasks of one change."""
        return [r[0] for r in self.query("SELECT id FROM tasks WHERE change_id = ? ORDER BY id", (cid,))]

    def status_counts(self, cid: int) -> tuple[dict[str, int], int]:
        """status_counts counts the tasks of a change by status, and the unclean ones."""
        rows = self.query(
            "SELECT status, count(*), sum(clean = 0) FROM tasks WHERE change_id = ? GROUP BY status", (cid,)
        )
        return {status: int(n) for status, n, _ in rows}, sum(int(u or 0) for _, _, u in rows)

    def changes_with_waiting_tasks(self) -> list[int]:
        """changes_with_waiting_tasks lists the changes that have tasks in Wait."""
        return [r[0] for r in self.query(
            f"SELECT DISTINCT change_id FROM tasks WHERE {UNREADY_PREDICATE} AND status = 'Wait' "
            "AND change_id IS NOT NULL"
        )]

    def linked_task_ids(self) -> list[int]:
        """linked_task_ids lists every task that belongs to a change."""
        return [r[0] for r in self.query("SELECT id FROM tasks WHERE change_id IS NOT NULL ORDER BY id")]

    def task_count(self) -> int:
        """task_count counts every task, in a change or not."""
        return int(self.query("SELECT count(*) FROM tasks")[0][0])

    def edges_touching(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """edges_touching returns every (task, wait task) edge with an end in ids."""
        rows = self.query_in(
            "SELECT task_id, wait_task_id FROM task_dependencies WHERE task_id IN ({})", ids
        ) + self.query_in(
            "SELECT task_id, wait_task_id FROM task_dependencies WHERE wait_task_id IN ({})", ids
        )
        return sorted(set(rows))

    def lanes(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """lanes returns the (task, lane) rows of the given tasks."""
        return self.query_in("SELECT task_id, lane FROM task_lanes WHERE task_id IN ({})", ids)

    def log_lines(self, tid: int, keep: int) -> list[tuple[str, str, str]]:
        """log_lines returns the last keep log lines of a task, oldest first."""
        rows = self.query(
            "SELECT time, level, message FROM task_log WHERE task_id = ? ORDER BY id DESC LIMIT ?", (tid, keep)
        )
        rows.reverse()
        return [(str(t), str(lv), str(m)) for t, lv, m in rows]

    def state_value(self, key: str) -> str | None:
        """state_value returns the JSON text stored under key."""
        rows = self.query("SELECT value FROM state_data WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def warning_rows(self) -> list[tuple[Any, ...]]:
        """warning_rows loads every warning."""
        return self.query(f"SELECT {WARNING_COLUMNS} FROM warnings")

    # -- the runner's queries -------------------------------------------------

    def runnable(self, statuses: Sequence[str], after_id: int, limit: int) -> list[TaskTuple]:
        """runnable pages through unready tasks with the given statuses by id."""
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {UNREADY_PREDICATE} AND status IN ({_marks(len(statuses))}) "
            "AND change_id IS NOT NULL AND id > ? ORDER BY id LIMIT ?"
        )
        return self.query(sql, (*statuses, after_id, limit))

    def runnable_do(self, after_id: int, limit: int) -> list[TaskTuple]:
        """runnable_do pages through Do tasks whose wait tasks are all Done.

        The blockers count finds them through a small partial index; the
        NOT EXISTS check guards against a count gone stale.
        """
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks t INDEXED BY ix_tasks_runnable WHERE {RUNNABLE_PREDICATE} "
            "AND change_id IS NOT NULL AND id > ? "
            "AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id "
            "WHERE d.task_id = t.id AND w.status <> 'Done') ORDER BY id LIMIT ?"
        )
        return self.query(sql, (after_id, limit))

    def runnable_undo(self, after_id: int, limit: int) -> list[TaskTuple]:
        """runnable_undo pages through Undo tasks whose halt tasks are all ready."""
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks t WHERE {UNREADY_PREDICATE} AND status = 'Undo' "
            "AND change_id IS NOT NULL AND id > ? "
            "AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN tasks h ON h.id = d.task_id "
            "WHERE d.wait_task_id = t.id AND h.status NOT IN ('Done','Undone','Hold','Error')) "
            "ORDER BY id LIMIT ?"
        )
        return self.query(sql, (after_id, limit))

    _COUNT_BLOCKERS = (
        "(SELECT count(*) FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id "
        "WHERE d.task_id = t.id AND w.status <> 'Done')"
    )

    def halted_by(self, ids: Sequence[int]) -> list[int]:
        """halted_by lists the tasks that wait for any of ids."""
        return [r[0] for r in self.query_in(
            "SELECT DISTINCT task_id FROM task_dependencies WHERE wait_task_id IN ({})", ids
        )]

    def recount_blockers(self, ids: Sequence[int]) -> None:
        """recount_blockers recomputes the blockers count of the given tasks."""
        # No alias on the updated table: SQLite before 3.33 does not take one.
        # Rows with a status the schema does not know (hand-edited) are left
        # alone: rewriting them would fail their CHECK constraint.
        count = self._COUNT_BLOCKERS.replace("d.task_id = t.id", "d.task_id = tasks.id")
        self.execute_in(f"UPDATE tasks SET blockers = {count} WHERE {_KNOWN_STATUS} AND json_valid(data) "
                        "AND id IN ({})", ids)

    def stale_blockers(self) -> list[int]:
        """stale_blockers lists unready tasks whose blockers count is wrong."""
        return [r[0] for r in self.query(
            f"SELECT id FROM tasks t WHERE {UNREADY_PREDICATE} AND {_KNOWN_STATUS} AND json_valid(data) "
            f"AND blockers <> {self._COUNT_BLOCKERS}"
        )]

    def blocked_changes(self) -> list[int]:
        """blocked_changes lists the changes with Do tasks waiting for others, or with Undo tasks."""
        return [r[0] for r in self.query(
            # Named: SQLite otherwise walks ix_tasks_change_id, every task ever run
            # (168 ms a pass with 1,000,000 finished tasks, against 0.005 ms).
            f"SELECT DISTINCT change_id FROM tasks INDEXED BY ix_tasks_unready WHERE {UNREADY_PREDICATE} "
            "AND ((status = 'Do' AND blockers > 0) OR status = 'Undo') AND change_id IS NOT NULL"
        )]

    def unclean_changes(self, limit: int = -1) -> list[int]:
        """unclean_changes lists ready changes with tasks left to clean."""
        return [r[0] for r in self.query(
            # Without statistics SQLite may prefer another index: name it.
            "SELECT id FROM changes INDEXED BY ix_changes_unclean "
            "WHERE ready_time IS NOT NULL AND clean = 0 ORDER BY id LIMIT ?", (limit,)
        )]

    def unclean_tasks(self, cid: int) -> list[TaskTuple]:
        """unclean_tasks loads the tasks of a change that are not clean yet."""
        return self.query(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE change_id = ? AND clean = 0 ORDER BY id", (cid,)
        )

    # -- writes (inside begin_write) ------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """execute runs one statement in the write transaction; returns rowcount."""
        with self.guard("write"):
            return self.raw.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """executemany runs one statement for many rows in the write transaction."""
        with self.guard("write"):
            self.raw.executemany(sql, rows)

    def execute_in(self, sql: str, ids: Sequence[Any], params: Sequence[Any] = ()) -> None:
        """execute_in runs sql, whose {} is an IN list, over ids in chunks."""
        with self.guard("write"):
            for chunk in _chunks(ids):
                self.raw.execute(sql.format(_marks(len(chunk))), (*params, *chunk))

    def insert_changes(self, rows: Sequence[ChangeTuple]) -> None:
        """insert_changes writes new changes."""
        self.executemany(f"INSERT INTO changes ({CHANGE_COLUMNS}) VALUES ({_marks(9)})", rows)

    def update_changes(self, rows: Sequence[ChangeTuple]) -> None:
        """update_changes rewrites changes; each row is CHANGE_COLUMNS rotated, id last."""
        self.executemany(
            "UPDATE changes SET kind = ?, summary = ?, status = ?, explicit_status = ?, clean = ?, data = ?, "
            "spawn_time = ?, ready_time = ? WHERE id = ?",
            rows,
        )

    def insert_tasks(self, rows: Sequence[TaskTuple]) -> None:
        """insert_tasks writes new tasks."""
        self.executemany(f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({_marks(19)})", rows)

    def update_tasks(self, rows: Sequence[TaskTuple]) -> None:
        """update_tasks rewrites tasks; each row is TASK_COLUMNS rotated, id last."""
        self.executemany(
            "UPDATE tasks SET change_id = ?, kind = ?, summary = ?, status = ?, waited_status = ?, clean = ?, "
            "progress_label = ?, progress_done = ?, progress_total = ?, data = ?, spawn_time = ?, "
            "ready_time = ?, at_time = ?, doing_time = ?, undoing_time = ?, attempts = ?, retry_attempts = ?, "
            "retry_since = ? "
            "WHERE id = ?",
            rows,
        )

    def update_change_statuses(self, rows: Sequence[tuple[str, int]]) -> None:
        """update_change_statuses stores the computed status of changes."""
        # A row whose data was made invalid by hand would fail its CHECK: left alone (the runner reports it).
        self.executemany("UPDATE changes SET status = ? WHERE id = ? AND json_valid(data)", rows)

    def insert_edges(self, rows: Sequence[tuple[int, int]]) -> None:
        """insert_edges writes (task, wait task) edges."""
        self.executemany("INSERT OR IGNORE INTO task_dependencies (task_id, wait_task_id) VALUES (?, ?)", rows)

    def insert_lanes(self, rows: Sequence[tuple[int, int]]) -> None:
        """insert_lanes writes (task, lane) rows."""
        self.executemany("INSERT OR IGNORE INTO task_lanes (task_id, lane) VALUES (?, ?)", rows)

    def insert_log(self, rows: Sequence[tuple[int, str, str, str]], trim: Sequence[int], keep: int) -> None:
        """insert_log appends log lines and trims the logs of trim to keep lines."""
        self.executemany("INSERT INTO task_log (task_id, time, level, message) VALUES (?, ?, ?, ?)", rows)
        self.executemany(
            "DELETE FROM task_log WHERE task_id = ? AND id NOT IN "
            "(SELECT id FROM task_log WHERE task_id = ? ORDER BY id DESC LIMIT ?)",
            [(tid, tid, keep) for tid in trim],
        )

    def save_state_values(self, values: dict[str, str | None]) -> None:
        """save_state_values upserts (or, for None, deletes) state keys."""
        self.executemany("DELETE FROM state_data WHERE key = ?", [(k,) for k, v in values.items() if v is None])
        self.executemany(
            "INSERT INTO state_data (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, v) for k, v in values.items() if v is not None],
        )

    def save_warnings(self, rows: Sequence[tuple[Any, ...]], deleted: Sequence[str]) -> None:
        """save_warnings upserts warnings and deletes the given ones."""
        self.executemany("DELETE FROM warnings WHERE message = ?", [(m,) for m in deleted])
        self.executemany(f"INSERT OR REPLACE INTO warnings ({WARNING_COLUMNS}) VALUES ({_marks(6)})", rows)

    def save_sequences(self, values: dict[str, int]) -> None:
        """save_sequences stores the last ids handed out (re-creating a deleted sequence row)."""
        self.executemany(
            "INSERT INTO sequences (name, last_id) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
            list(values.items()),
        )
