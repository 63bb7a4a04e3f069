# SPDX-License-Identifier: GPL-3.0-or-later
"""SqlStore: the Store verbs, written once over the compiled statements; backends run them.

A backend (engine.store.sqlite, engine.store.postgresql) gives the
statements' Catalog, runs compiled statements on its driver connection
(query, execute, executemany, and the IN-list forms), maps driver errors and
owns the transactions; everything else is here, and in its base classes
(engine.store.sqlbackend: the primitives a backend provides, the keys' verbs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .base import ChangeSetWrite, Row
from .compiled import Compiled, table_statement, table_upsert, task_update
from .sqlbackend import KeyVerbs

log = logging.getLogger("engine.store")

#: What unclean_changes asks for when there is no limit.
_ALL = 2**62


class SqlStore(KeyVerbs):
    """SqlStore implements the Store verbs; a backend subclass runs the SQL."""

    # -- reads ---------------------------------------------------------------------------

    def sequences(self, *, quiet: bool = False) -> dict[str, int]:
        """sequences returns the last ids handed out, never below the largest ids in use.

        A sequences row edited by hand (reset to 0, deleted) cannot make the
        engine hand out an id that a change, a task or a live lane holds.
        quiet (a reader, which hands out no id) says nothing of a sequence
        that is behind: it is the writer's to mend.
        """
        stored: dict[str, int] = {}
        for name, last in self.query(self.sql["sequences"]):
            try:
                stored[str(name)] = int(last)
            except (TypeError, ValueError):
                if not quiet:
                    log.error("ignoring the hand-edited sequence %r of %s: %r is not a number", name, self.target,
                              last)
        used = self.query(self.sql["ids_in_use"])[0]
        for name, top in zip(("change", "task", "lane", "notice"), used, strict=True):
            if isinstance(top, int) and top > stored.get(name, 0):
                if name in stored and not quiet:
                    log.warning("the %s sequence of %s is behind the ids in use (%d < %d): ids go on from %d",
                                name, self.target, stored[name], top, top)
                stored[name] = top
        return stored

    def task_rows(self, ids: Sequence[int]) -> list[Row]:
        """task_rows loads tasks by id."""
        if len(ids) == 1:
            return self.query(self.sql["task"], ids)
        return self.query_in(self.sql["tasks"], ids)

    def change_row(self, cid: int) -> Row | None:
        """change_row loads one change."""
        rows = self.query(self.sql["change"], (cid,))
        return rows[0] if rows else None

    def change_rows(self, ids: Sequence[int]) -> list[Row]:
        """change_rows loads changes by id."""
        return self.query_in(self.sql["changes"], ids)

    def change_ids(self) -> list[int]:
        """change_ids lists every change."""
        return self._ids("change_ids")

    def tasks_of_change(self, cid: int) -> list[Row]:
        """tasks_of_change loads all the tasks of one change."""
        return self.query(self.sql["tasks_of_change"], (cid,))

    def each_task_of_change(self, cid: int, page: int = 256) -> Iterator[Row]:
        """each_task_of_change yields the tasks of one change a page at a time (for big changes)."""
        return self.each(self.sql["tasks_of_change"], (cid,), page)

    def task_ids_of_change(self, cid: int) -> list[int]:
        """task_ids_of_change lists the ids of the tasks of one change."""
        return self._ids("task_ids_of_change", (cid,))

    def status_counts(self, cid: int) -> tuple[dict[str, int], int]:
        """status_counts counts the tasks of a change by status, and the unclean ones."""
        rows = self.query(self.sql["status_counts"], (cid,))
        return {status: int(n) for status, n, _ in rows}, sum(int(u or 0) for _, _, u in rows)

    def status_counts_of(self, ids: Sequence[int]) -> dict[int, tuple[dict[str, int], int]]:
        """status_counts_of is status_counts for several changes in one query (a change without tasks: absent)."""
        out: dict[int, tuple[dict[str, int], int]] = {}
        for cid, status, n, unclean in self.query_in(self.sql["status_counts_of"], ids):
            counts, total = out.get(cid, ({}, 0))
            counts[status] = int(n)
            out[cid] = (counts, total + int(unclean or 0))
        return out

    def task_ids_with_status(self, cid: int, status: str) -> list[int]:
        """task_ids_with_status lists the tasks of a change that have a status (as stored)."""
        return self._ids("task_ids_with_status", (cid, status))

    def changes_with_waiting_tasks(self) -> list[int]:
        """changes_with_waiting_tasks lists the changes that have tasks in Wait."""
        return self._ids("changes_with_waiting_tasks")

    def linked_task_ids(self) -> list[int]:
        """linked_task_ids lists every task that belongs to a change."""
        return self._ids("linked_task_ids")

    def task_count(self) -> int:
        """task_count counts every task, in a change or not."""
        return int(self.query(self.sql["task_count"])[0][0])

    def edges_touching(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """edges_touching returns every (task, wait task) edge with an end in ids."""
        rows = self.query_in(self.sql["edges_from"], ids) + self.query_in(self.sql["edges_to"], ids)
        return sorted({(r[0], r[1]) for r in rows})

    def lanes(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """lanes returns the (task, lane) rows of the given tasks."""
        return [(r[0], r[1]) for r in self.query_in(self.sql["lanes"], ids)]

    def log_lines(self, tid: int, keep: int) -> list[tuple[str, str, str]]:
        """log_lines returns the last keep log lines of a task, oldest first."""
        rows = self.query(self.sql["log_lines"], (tid, keep))
        rows.reverse()
        return [(str(t), str(lv), str(m)) for t, lv, m in rows]

    def state_value(self, key: str) -> str | None:
        """state_value returns the JSON text stored under key."""
        rows = self.query(self.sql["state_value"], (key,))
        return str(rows[0][0]) if rows else None

    def warning_rows(self) -> list[Row]:
        """warning_rows loads every warning."""
        return self.query(self.sql["warnings"])

    def notice_row(self, type: str, key: str) -> Row | None:
        """notice_row loads the notice of a type and key."""
        rows = self.query(self.sql["notice"], (type, key))
        return rows[0] if rows else None

    def notice_rows(self, after: str, now: str) -> list[Row]:
        """notice_rows loads the notices repeated after a time and not expired at now, oldest repeat first."""
        return self.query(self.sql["notices_after"], (after, now))

    def expired_notices(self, now: str) -> list[int]:
        """expired_notices lists the notices expired at now."""
        return self._ids("expired_notices", (now,))

    def task_timings(self, cid: int) -> list[Row]:
        """task_timings loads the runs of a change's tasks, oldest first: task id, kind, TASK_TIMING_COLUMNS[1:]."""
        return self.query(self.sql["task_timings_of_change"], (cid,))

    def timing_batches(self, cid: int) -> list[Row]:
        """timing_batches loads the batches of a change's task runs, oldest first: id, runs (JSON text)."""
        return self.query(self.sql["timing_batches_of_change"], (cid,))

    def last_timing_batch(self) -> int:
        """last_timing_batch is the id of the newest batch of task runs (0: none; the tracing helper reads those
        after it)."""
        return int(self.query(self.sql["last_timing_batch"])[0][0])

    def rewrite_timing_batches(self, updates: Sequence[Row], deleted: Sequence[int]) -> None:
        """rewrite_timing_batches replaces the runs of batches (runs, id) and deletes batches."""
        if updates:
            self.executemany(self.sql["update_timing_batch"], updates)
        if deleted:
            self.execute_in(self.sql["delete_timing_batches"], deleted)

    def ensure_timings(self) -> list[Row]:
        """ensure_timings loads the kept rows of slow ensure passes, oldest first (ENSURE_TIMING_COLUMNS)."""
        return self.query(self.sql["ensure_timings"])

    # -- manager tables (engine.tables) -------------------------------------------------

    def read_rows(self, statement: Any, params: Mapping[str, Any] | None = None) -> list[Row]:
        """read_rows runs a Core SELECT on a manager's table; params give its bindparam() values."""
        c, names, bound = table_statement(self.sql, statement)
        given = params or {}
        return self.query(c, [given[n] if n in given else bound[n] for n in names])

    def write_rows(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """write_rows runs a Core INSERT, UPDATE or DELETE on a manager's table once per row, in the write
        transaction; each row gives the statement's bindparam() values."""
        if not rows:
            return
        c, names, bound = table_statement(self.sql, statement)
        self.begin_write()
        self.executemany(c, [[r[n] if n in r else bound[n] for n in names] for r in rows])

    def upsert_statement(self, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """upsert_statement is this backend's INSERT of columns that updates the row whose keys exist."""
        return table_upsert(self.sql, table, keys, columns)

    # -- the runner's queries ---------------------------------------------------------------

    def tasks_in_status(self, status: str, after_id: int, limit: int) -> list[Row]:
        """tasks_in_status pages through the unready tasks of changes with a status, by id."""
        return self.query(self.sql["tasks_in_status"], (status, after_id, limit))

    def started_tasks(self, after_id: int, limit: int) -> list[Row]:
        """started_tasks pages through Doing and Undoing tasks, by id."""
        return self.query(self.sql["started_tasks"], (after_id, limit))

    def runnable_do(self, after_id: int, limit: int) -> list[Row]:
        """runnable_do pages through Do tasks whose wait tasks are all Done."""
        return self.query(self.sql["runnable_do"], (after_id, limit))

    def runnable_do_ids(self, after_id: int, limit: int) -> list[int]:
        """runnable_do_ids is runnable_do's ids alone."""
        return [r[0] for r in self.query(self.sql["runnable_do_ids"], (after_id, limit))]

    def runnable_undo(self, after_id: int, limit: int) -> list[Row]:
        """runnable_undo pages through Undo tasks whose halt tasks are all ready."""
        return self.query(self.sql["runnable_undo"], (after_id, limit))

    def halted_by(self, ids: Sequence[int]) -> list[int]:
        """halted_by lists the tasks that wait for any of ids."""
        return [r[0] for r in self.query_in(self.sql["halted_by"], ids)]

    def stale_blockers(self) -> list[int]:
        """stale_blockers lists unready tasks whose blockers count is wrong."""
        return self._ids("stale_blockers")

    def unknown_status_tasks(self) -> list[Row]:
        """unknown_status_tasks loads the tasks of changes whose status the engine does not know (hand-edited)."""
        return self.query(self.sql["unknown_status_tasks"])

    def blocked_changes(self) -> list[int]:
        """blocked_changes lists the changes with Do tasks waiting for others, or with Undo tasks."""
        return self._ids("blocked_changes")

    def cycle_suspects(self) -> list[int]:
        """cycle_suspects are the blocked changes (the runner's search rules out the others in memory)."""
        return self.blocked_changes()

    def unclean_changes(self, limit: int | None = None) -> list[int]:
        """unclean_changes lists ready changes with tasks left to clean."""
        return self._ids("unclean_changes", (_ALL if limit is None else limit,))

    def unclean_tasks(self, cid: int) -> list[Row]:
        """unclean_tasks loads the tasks of a change that are not clean yet."""
        return self.query(self.sql["unclean_tasks"], (cid,))

    # -- prune ---------------------------------------------------------------------------------

    def ready_changes_before(self, before: str) -> list[int]:
        """ready_changes_before lists the changes that became ready before a time."""
        return self._ids("ready_changes_before", (before,))

    def ready_change_count(self) -> int:
        """ready_change_count counts the ready changes."""
        return int(self.query(self.sql["ready_change_count"])[0][0])

    def oldest_ready_changes(self, since: str, limit: int) -> list[int]:
        """oldest_ready_changes lists up to limit changes ready since a time, oldest first."""
        return self._ids("oldest_ready_changes", (since, limit))

    def unready_changes(self) -> list[tuple[int, Any, int]]:
        """unready_changes lists (id, spawn time, task count) of every change not ready yet."""
        return [(r[0], r[1], int(r[2])) for r in self.query(self.sql["unready_changes"])]

    def orphan_tasks_before(self, before: str) -> list[int]:
        """orphan_tasks_before lists tasks in no change spawned before a time."""
        return self._ids("orphan_tasks_before", (before,))

    def delete_changes(self, ids: Sequence[int]) -> None:
        """delete_changes deletes changes, their tasks going with them (the foreign keys cascade), their keys."""
        self.execute_in(self.sql["delete_changes"], ids)
        self.execute_in(self.sql["delete_change_keys"], ids)
        self.execute_in(self.sql["delete_affects"], ids)

    def delete_tasks(self, ids: Sequence[int]) -> None:
        """delete_tasks deletes tasks."""
        self.execute_in(self.sql["delete_tasks"], ids)

    # -- writes ----------------------------------------------------------------------------

    def write(self, changes: ChangeSetWrite) -> None:
        """write writes what a unit of work's flush changed, in the order of ChangeSetWrite's fields.

        Each step below is a statement or two, run for many rows (none when
        it has no rows); a backend overrides the steps it does differently
        (PostgreSQL: the recount finds the halted tasks itself, leases end,
        no sequence row).
        """
        if changes.changes:
            self.executemany(self.sql["insert_changes"], changes.changes)
        if changes.tasks:
            self.executemany(self.sql["insert_tasks"], changes.tasks)
        if changes.tasks_counted:
            self.executemany(self.sql["insert_tasks_counted"], changes.tasks_counted)
        if changes.new_tasks:
            self.executemany(self.sql["insert_new_tasks"], changes.new_tasks)
        if changes.counted_tasks:
            self.executemany(self.sql["insert_counted_tasks"], changes.counted_tasks)
        if changes.task_updates:
            self.executemany(self.sql["update_tasks"], changes.task_updates)
        for columns, rows in changes.task_changes:
            self.executemany(self._task_update(columns), rows)
        if changes.edges:
            self.executemany(self.sql["insert_edges"], changes.edges)
        if changes.recount or changes.halted_by:
            self.recount_blockers(changes.recount, halted_by=changes.halted_by)
        if changes.lanes:
            self.executemany(self.sql["insert_lanes"], changes.lanes)
        if changes.ended:
            self.end_leases(changes.ended)
        if changes.log:
            self.executemany(self.sql["insert_log"], changes.log)
            self.executemany(self.sql["trim_log"], [(tid, tid, changes.log_keep) for tid in changes.log_trim])
        if changes.settle is not None:
            changes.settle(changes)
        if changes.change_updates:
            self.update_changes(changes.change_updates)
        if changes.statuses:
            self.executemany(self.sql["update_change_status"], changes.statuses)
        if changes.values:
            self.executemany(self.sql["delete_state_value"], [(k,) for k, v in changes.values.items() if v is None])
            self.executemany(self.sql["upsert_state_value"],
                             [(k, v) for k, v in changes.values.items() if v is not None])
        if changes.sequences:
            self.save_sequences(changes.sequences)

    def _task_update(self, columns: tuple[int, ...]) -> Compiled:
        """_task_update is the UPDATE of some columns of a task (indexes in TASK_COLUMNS), compiled once per set."""
        return task_update(self.sql, columns)

    def update_changes(self, rows: Sequence[Row]) -> None:
        """update_changes rewrites changes; each row is CHANGE_COLUMNS rotated, id last."""
        self.executemany(self.sql["update_changes"], rows)

    def recount_blockers(self, ids: Sequence[int], halted_by: Sequence[int] = ()) -> None:
        """recount_blockers recomputes the blockers count of the given tasks, and of those waiting for halted_by."""
        if ids:
            self.execute_in(self.sql["recount_blockers"], ids)
        if halted_by:
            self.execute_in(self.sql["recount_halted"], halted_by)

    def end_leases(self, ids: Sequence[int]) -> None:
        """end_leases (a step of write) does nothing: a single writer takes no leases."""

    def save_sequences(self, values: Mapping[str, int]) -> None:
        """save_sequences (a step of write) stores the last ids handed out (re-creating a deleted sequence row)."""
        self.executemany(self.sql["upsert_sequence"], list(values.items()))

    def save_warnings(self, rows: Sequence[Row], deleted: Sequence[str]) -> None:
        """save_warnings upserts warnings and deletes the given ones."""
        self.executemany(self.sql["delete_warning"], [(m,) for m in deleted])
        self.executemany(self.sql["upsert_warning"], rows)

    def save_notices(self, rows: Sequence[Row], deleted: Sequence[int], updates: Sequence[Row] = ()) -> None:
        """save_notices deletes the given notices, upserts rows by type and key, and applies updates.

        An update is NOTICE_COLUMNS[4:] then the id.
        """
        if deleted:
            self.execute_in(self.sql["delete_notices"], list(deleted))
        if rows:
            self.executemany(self.sql["upsert_notice"], rows)
        if updates:
            self.executemany(self.sql["update_notice"], updates)

    def save_timings(self, batches: Sequence[Row], passes: Sequence[Row], keep_passes: int | None) -> None:
        """save_timings appends batches of task runs (runs, change id; those of changes gone are dropped) and
        ensure rows, then keeps the newest keep_passes of those (None: no trim)."""
        if batches:
            self.executemany(self.sql["insert_task_timing_batch"], batches)
        if passes:
            self.executemany(self.sql["insert_ensure_timings"], passes)
        if keep_passes is not None:
            self.execute(self.sql["trim_ensure_timings"], (keep_passes,))

    # -- several hosts: a single writer needs none of it -------------------------------------

    def next_id(self, name: str) -> int:
        """next_id is for shared stores: a single writer hands out ids from its own counters."""
        raise NotImplementedError(f"internal error: {type(self).__name__} hands out no ids")

    def locked_change_rows(self, ids: Sequence[int]) -> list[Row]:
        """locked_change_rows reads change rows: a single writer locks the whole database."""
        return self.change_rows(ids)

    def counts_besides(self, cid: int, held: Sequence[int]) -> tuple[dict[str, int], int]:
        """counts_besides counts the tasks of a change other than held (a single writer's cache never asks)."""
        counts: dict[str, int] = {}
        unclean, out = 0, set(held)
        for row in self.tasks_of_change(cid):
            if row[0] not in out:
                counts[row[4]] = counts.get(row[4], 0) + 1
                unclean += not row[6]
        return counts, unclean

    def keep_changes(self, statuses: Mapping[int, str], settle: Sequence[int] = ()) -> set[int]:
        """keep_changes keeps none: a single writer's unit of work settles every change it touched."""
        return set()

    def runners_of(self, ids: Sequence[int]) -> dict[int, str | None]:
        """runners_of is empty: a single writer takes no leases."""
        return {}

    def expired_leases(self) -> list[int]:
        """expired_leases is empty: a single writer takes no leases."""
        return []

    def lease_expired(self, tid: int) -> bool:
        """lease_expired is False: a single writer takes no leases."""
        return False

    def heartbeat(self, runner: str, lease: float) -> int:
        """heartbeat does nothing: a single writer takes no leases."""
        return 0

    def release_claims(self, kept: Sequence[int], *, others: bool = False) -> None:
        """release_claims does nothing: a single writer takes no leases."""

    def claim_cleanup(self, tid: int) -> bool:
        """claim_cleanup is True: a single writer's cleanups need no lease."""
        return True
