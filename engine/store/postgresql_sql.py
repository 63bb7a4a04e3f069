# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL's own SQL for the engine: its forms of the shared statements, and the claims, locks and channels.

engine.store.postgresql runs them (the design: docs/scale-out.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from ..models import CHANGE_UNREADY_KEY
from .compiled import Catalog
from .statements import CHANGE_COLUMNS, TASK_COLUMNS

#: The channel a commit that made tasks runnable notifies (LISTEN engine_work).
CHANNEL = "engine_work"
#: The channel a commit that added or repeated notices notifies (State.wait_notices on other hosts).
NOTICE_CHANNEL = "engine_notices"
#: The type of the notice a change's status moves repeat (engine.notice.CHANGE_UPDATE).
CHANGE_UPDATE = "change-update"
#: How many ids a host takes from a sequence at once.
ID_BLOCK = 64
#: The statuses of a task whose handler may be running (an aborted one still runs until it returns).
HELD = "('Doing','Undoing','Abort')"


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
_RECOUNT = CATALOG["recount_blockers"]
#: The blockers recount of tasks (%s: ids), and of those waiting for others (%s: ids), in one statement.
#: (The ids as one array, = ANY (ARRAY(...)): with `id = ANY (%s) OR id IN (SELECT ...)` the planner scanned
#: every task of the table, at every outcome: W1's largest cost on the server with 2 hosts.)
RECOUNT_HALTED = _RECOUNT.sql.replace(
    f"tasks.id IN ({_RECOUNT.token})",
    "tasks.id = ANY (ARRAY(SELECT unnest(%s::bigint[]) UNION SELECT task_id FROM task_dependencies "
    "WHERE wait_task_id = ANY (%s::bigint[])))")
assert _RECOUNT.sql != RECOUNT_HALTED and _RECOUNT.slots == (0,)

_T = ", ".join(f"t.{c}" for c in TASK_COLUMNS)
#: The columns of a change row, as a select list.
CHANGE_LIST = ", ".join(CHANGE_COLUMNS)
#: Now by the server's clock, in seconds (leases are compared with it).
NOW = "extract(epoch from clock_timestamp())"
_UNREADY = "t.status NOT IN ('Done','Undone','Hold','Error')"
# The claims: one UPDATE over candidates this transaction locks, passing over
# tasks another host is writing (SKIP LOCKED).
# The outer condition ({again}) is checked again on the row as it is when it is updated: a task
# another host claimed (and committed) after this statement's snapshot is passed over, not taken twice.
# (= ANY (ARRAY(...)), the subquery run once and the rows updated by primary key, is the IN form that
# PostgreSQL's planner never turns into a scan of every task. The status in {again} is compared as
# (status || ''), which no index has: with the statistics of a table that just got thousands of Do tasks
# not yet analyzed, the planner took the unready tasks' index on status and scanned every Do task to
# update a page of them (12 ms against 0.8 ms a claim, 10,000 Do tasks).)
_CLAIM = (f"UPDATE tasks SET runner = %s, lease_until = {NOW} + %s WHERE {{again}} AND id = ANY (ARRAY("
          "SELECT t.id FROM tasks t JOIN changes c ON c.id = t.change_id WHERE {where} "
          f"ORDER BY t.id LIMIT %s FOR NO KEY UPDATE OF t SKIP LOCKED)) RETURNING {', '.join(TASK_COLUMNS)}")
# (A Do task of a change still queued (engine.keys) is never claimed: the runner unqueues, in the same
# transaction before its claim, the queued changes whose turn came; those it did not see queued yet, queued by
# another host's commit since, are passed over here.)
CLAIM_DO = _CLAIM.format(again="(status || '') = 'Do' AND lease_until IS NULL", where=(
    "t.status = 'Do' AND t.blockers = 0 AND t.id > %s AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
    "JOIN tasks w ON w.id = d.wait_task_id WHERE d.task_id = t.id AND w.status <> 'Done') "
    "AND NOT EXISTS (SELECT 1 FROM change_affects a WHERE a.change_id = t.change_id AND a.queued)"))
CLAIM_UNDO = _CLAIM.format(again="(status || '') = 'Undo' AND lease_until IS NULL", where=(
    f"{_UNREADY} AND t.status = 'Undo' AND t.id > %s AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
    "JOIN tasks h ON h.id = d.task_id WHERE d.wait_task_id = t.id "
    "AND h.status NOT IN ('Done','Undone','Hold','Error'))"))
# Doing and Undoing tasks that no runner holds: waiting for a retry, or left from a crash before leases.
CLAIM_STARTED = _CLAIM.format(again="(status || '') IN ('Doing','Undoing') AND lease_until IS NULL",
                               where="t.status IN ('Doing','Undoing') AND t.lease_until IS NULL AND t.id > %s")
# Tasks in a status (Abort) that this transaction could lock, except those another runner holds.
LOCKED_IN_STATUS = (f"SELECT {_T} FROM tasks t JOIN changes c ON c.id = t.change_id WHERE {_UNREADY} "
                     f"AND t.status = %s AND (t.lease_until IS NULL OR t.runner = %s OR t.lease_until < {NOW}) "
                     "AND t.id > %s ORDER BY t.id LIMIT %s FOR NO KEY UPDATE OF t SKIP LOCKED")
# Rows locked as they are read, in id order (so that two hosts lock them in the same order).
# FOR NO KEY UPDATE, not FOR UPDATE: the foreign key checks of other transactions' task writes take
# FOR KEY SHARE on the change row (also for a task row this transaction wrote before), and two units
# of work each holding that and waiting for FOR UPDATE deadlocked (found by bench/pg.py with 2 hosts).
TASKS_LOCKED = f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks WHERE id = ANY (%s) ORDER BY id FOR NO KEY UPDATE"
#: TASKS_LOCKED with the lease holder (runner) after the task's columns: a statement fewer than reading it apart.
TASKS_LOCKED_RUNNER = TASKS_LOCKED.replace(" FROM tasks ", ", runner FROM tasks ", 1)
assert TASKS_LOCKED_RUNNER != TASKS_LOCKED
CHANGES_LOCKED = f"SELECT {CHANGE_LIST} FROM changes WHERE id = ANY (%s) ORDER BY id FOR NO KEY UPDATE"
# Change rows a unit of work keeps the status of (engine.shared): share-locked, so that units of work on one
# change commit side by side, and one that settles the change (FOR NO KEY UPDATE) waits for them all.
CHANGES_SHARED = ("SELECT id, status, explicit_status, ready_time FROM changes WHERE id = ANY (%s) "
                  "ORDER BY id FOR SHARE")
#: Which of the changes (%s: ids) have a task in Wait (read after CHANGES_SHARED, so as committed once it locked).
CHANGES_WAITING = ("SELECT DISTINCT change_id FROM tasks WHERE change_id = ANY (%s) "
                   f"AND {_UNREADY.replace('t.', '')} AND status = 'Wait'")
# The changes in Doing of the Do tasks this transaction just claimed (%s: its runner; status still Do, the
# runner recorded): a claim that moves them to Doing keeps their status, so their rows are share-locked with
# the claim (CLAIM_DO), in its round trip, and checked as keep_changes checks them (Store.keep_changes): the
# changes with tasks in Wait are read after them in the same round trip.
_CLAIMED_CHANGES = ("SELECT change_id FROM tasks WHERE lease_until IS NOT NULL AND runner = %s "
                    "AND status = 'Do'")
CLAIMED_SHARED = (f"SELECT id, status, explicit_status, ready_time FROM changes WHERE status = 'Doing' "
                  f"AND id IN ({_CLAIMED_CHANGES}) ORDER BY id FOR SHARE")

# What a unit of work reads ahead with the tasks it locks (PostgresStore.task_rows), fewer statements for the same
# rows: the edges with an end in the tasks and their lanes (%s: ids, three times), tagged 'e' and 'l'; the changes
# with tasks in Wait and those still queued, tagged 'w' and 'q'.
GRAPH_OF = ("SELECT 'e', task_id, wait_task_id FROM task_dependencies WHERE task_id = ANY (%s) "
            "UNION SELECT 'e', task_id, wait_task_id FROM task_dependencies WHERE wait_task_id = ANY (%s) "
            "UNION ALL SELECT 'l', task_id, lane FROM task_lanes WHERE task_id = ANY (%s)")
WAITING_AND_QUEUED = (f"SELECT 'w', change_id FROM ({CATALOG['changes_with_waiting_tasks'].sql}) w "
                      f"UNION ALL SELECT 'q', change_id FROM ({CATALOG['queued_changes'].sql}) q")
assert not CATALOG["changes_with_waiting_tasks"].slots and not CATALOG["queued_changes"].slots


def sqlstate(e: BaseException) -> str:
    """sqlstate is the SQLSTATE code of a driver error (empty if none)."""
    return str(getattr(e, "sqlstate", "") or "")


# What a change's status needs of the tasks of changes (%(cids)s in {cids}) that a unit of work does not hold
# (%(ex)s: the ids it holds), without counting them all (PostgresCounts.counts_besides). Rows (kind, change,
# status, n, unclean):
#  'u': n tasks of that unready status are there, counted up to %(cap)s (the unready tasks' index by change,
#     ix_tasks_change_unready on (change_id, status), finds them among the change's own unready tasks; counting all
#     the change's tasks took about 0.35 ms a step on a chain of 1,000, and 3 to 18 ms a unit of work in W1, growing
#     with the change);
#  'c': some task not cleaned is there (for a change with unready tasks);
#  'f': the count of a status and of its tasks not cleaned, for a change where no unready status reached the cap
#     (none, or a few: the step of a chain that adds its next task as it runs leaves one, whose claim takes it).
#: CAP: more than a claim takes at once, most often (what leaves the others then is known to leave some).
CAP = 64
UNREADY_STATUSES = ("Abort", "Undoing", "Undo", "Doing", "Do", "Wait")
# (The ids left out as a subquery's array: a constant array had the planner estimate each of its elements,
# for each look-up, at every statement: 4 ms of planning a claim in W1.)
_OTHER = "t.change_id = c.id AND t.id <> ALL (ARRAY(SELECT unnest(%(ex)s::bigint[])))"
# (Each look-up is an index scan of ix_tasks_change_unready: its change's unready tasks of one status. Through the
# unready tasks' index on (status, id), without the change, the look-up of a change with few tasks of a status
# walked every unready task of that status of every change: the snap-install shape, 1,000 changes in flight,
# ran 5 times slower. The change is named as that index's key, CHANGE_UNREADY_KEY: with `t.change_id = c.id`
# the planner took ix_tasks_change_id for the Do tasks and walked the change's done ones.)
_UP_TO = ", ".join(
    f"('{s}', (SELECT count(*) FROM (SELECT 1 FROM tasks t WHERE t.status = '{s}' AND {_UNREADY} AND "
    f"{_OTHER.replace('t.change_id = c.id', 't.' + CHANGE_UNREADY_KEY.strip('()') + ' = c.id')} LIMIT %(cap)s) f))"
    for s in UNREADY_STATUSES)
# (A change of fewer than %(small)s tasks is counted whole ('f' rows only): its few tasks cost less to count than
# the look-ups; the snap-install shape, changes of 12 tasks, ran 2 to 3 times slower with the look-ups. The changes
# of %(big)s are known to have more (PostgresCounts.probe_args): their first tasks are not counted again, a third of the
# probe's time at every step of a chain of 1,000.)
_PROBE = (
    "WITH c0 AS (SELECT DISTINCT unnest({cids}) AS id), "
    "c AS (SELECT c0.id, CASE WHEN c0.id = ANY (%(big)s::bigint[]) THEN false ELSE (SELECT count(*) FROM "
    "(SELECT 1 FROM tasks t WHERE t.change_id = c0.id LIMIT %(small)s) s) < %(small)s END AS small FROM c0), "
    f"u AS (SELECT c.id AS change_id, v.status, v.n FROM c CROSS JOIN LATERAL (VALUES {_UP_TO}) v(status, n) "
    "WHERE NOT c.small AND v.n > 0) "
    "SELECT 'u', change_id, status, n, 0::bigint FROM u "
    "UNION ALL SELECT 'c', c.id, '', 0::bigint, 1::bigint FROM c WHERE c.id IN (SELECT change_id FROM u) "
    f"AND EXISTS (SELECT 1 FROM tasks t WHERE NOT t.clean AND {_OTHER}) "
    "UNION ALL SELECT 'f', c.id, t.status, count(*), sum(CASE WHEN t.clean THEN 0 ELSE 1 END) FROM c "
    f"JOIN tasks t ON {_OTHER} WHERE c.small OR NOT EXISTS (SELECT 1 FROM u WHERE u.change_id = c.id "
    "AND u.n >= %(cap)s) GROUP BY c.id, t.status")
#: A change with fewer tasks than this is counted whole by a probe (PostgresCounts.small).
SMALL = 256
#: PROBE_OF: the changes of the tasks %(ids)s (read ahead with their lock); PROBE: the changes %(cids)s;
#: PROBE_CLAIMED: the changes of the Do tasks this transaction just claimed (%(runner)s: its runner), but those in
#: %(known)s (read ahead with the claim: 2 look-ups alone a change of the snap-install shape before).
PROBE = _PROBE.format(cids="%(cids)s::bigint[]")
PROBE_OF = _PROBE.format(cids="ARRAY(SELECT change_id FROM tasks WHERE id = ANY (%(ids)s::bigint[]) "
                              "AND change_id IS NOT NULL)")
#: (Counted whole, as PROBE counts a small change: the snap-install shape's claims took tasks of many changes of 12
#: tasks, whose probe cost the claim 2 to 3 times their count; a big change's, W1's, was most often probed already,
#: by the lock of the outcomes that the claim hands on from.)
PROBE_CLAIMED = ("SELECT 'f', t.change_id, t.status, count(*), sum(CASE WHEN t.clean THEN 0 ELSE 1 END) FROM tasks t "
                 "WHERE t.change_id IN (SELECT change_id FROM tasks WHERE lease_until IS NOT NULL "
                 "AND runner = %(runner)s AND status = 'Do' AND change_id <> ALL (%(known)s::bigint[])) "
                 "AND t.id <> ALL (ARRAY(SELECT unnest(%(ex)s::bigint[]))) GROUP BY t.change_id, t.status")
