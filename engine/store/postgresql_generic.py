# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain's step's statements on PostgreSQL in a form the server plans once per connection.

psycopg prepares a statement at its sixth run on a connection; the server
then plans it for each run's parameters (a custom plan) until it finds a
plan for any parameters (a generic one) no dearer than those plus what
planning costs. A list of ids as one array parameter, `id = ANY (%s)`,
makes the generic plan look dearer (the server takes an unknown array for
about ten elements, a known one of one element for one) and every run was
planned again: the lock of a step's task and what is read ahead with it,
and the end of its lease, about 0.3 ms of the server's time a step on a
busy machine. Given as `id = ANY (ARRAY(SELECT unnest(%s::bigint[])))`, the
list is the result of a sub-select in both plans: they cost the same, and
the server keeps the generic plan (a look-up by primary key either way).
The blockers recount and the status probe had that form already. Not the
edges and lanes read ahead (GRAPH_OF): for an unknown number of ids, their
generic plan scans task_dependencies whole (0.18 ms a step on a chain of
1,000, against about 0.1 ms to plan a custom one), so they keep theirs,
but for one task (a chain's step), whose id is a scalar (GRAPH_OF_ONE).
docs/performance.md, "... (issue 25, hpg6, 2026-12-08)".
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Row
from .postgresql_sql import (
    CATALOG,
    CHANGE_LIST,
    GRAPH_OF,
    PROBE_CLAIMED,
    PROBE_OF,
    RECOUNT_HALTED,
    TASKS_LOCKED_RUNNER,
    WAITING_AND_QUEUED,
)
from .statements import CHANGE_COLUMNS

__all__ = ["CHANGES_AND_FLAGS", "CHANGES_OF_TASKS", "CLAIM_AHEAD", "END_LEASES", "GRAPH_OF_ONE", "LOCK_AHEAD_ONE",
           "RECOUNT_HALTED_BY_ONE", "TASKS_LOCKED_PLANNED", "id_array", "planned_once", "split_claim_ahead",
           "split_lock_ahead"]

_ANY = "= ANY (%s)"
_ANY_ARRAY = "= ANY (ARRAY(SELECT unnest(%s::bigint[])))"


def id_array(ids: Iterable[int]) -> str:
    """id_array is a list of ids as the text of an array, for a parameter the statement casts (%s::bigint[]).

    psycopg dumps a Python list as an array by looking at its elements'
    types, about 15 us a list where a string costs nothing much: a step
    sends about ten such lists.
    """
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def planned_once(sql: str) -> str:
    """planned_once is sql with each list of ids given as one array parameter (= ANY (%s)) as a sub-select's."""
    assert _ANY in sql, sql
    return sql.replace(_ANY, _ANY_ARRAY)


#: The tasks locked in id order with their lease holders (%s: ids): PostgresStore.task_rows.
TASKS_LOCKED_PLANNED = planned_once(TASKS_LOCKED_RUNNER)
#: The rows of the changes of the tasks (%s: ids), read ahead with their lock.
CHANGES_OF_TASKS = planned_once(f"SELECT {CHANGE_LIST} FROM changes WHERE id IN (SELECT change_id FROM tasks "
                                "WHERE id = ANY (%s))")
#: CHANGES_OF_TASKS tagged 'c' and, in the same statement, the changes with tasks in Wait and those still queued
#: (WAITING_AND_QUEUED, tagged 'w' and 'q'; the rest of their columns NULL): a statement fewer a step (each costs
#: the client about 25 us in psycopg).
CHANGES_AND_FLAGS = (f"SELECT 'c', {CHANGES_OF_TASKS.removeprefix('SELECT ')} UNION ALL SELECT f.what, f.change_id"
                     f"{', NULL' * (len(CHANGE_COLUMNS) - 1)} FROM ({WAITING_AND_QUEUED}) f(what, change_id)")
#: GRAPH_OF for one task (%s: its id, three times), a chain's step: its generic plan finds the rows by index (the
#: server takes one id for one row), where GRAPH_OF's was planned at every run (about 0.1 ms).
GRAPH_OF_ONE = GRAPH_OF.replace("= ANY (%s)", "= %s")
assert GRAPH_OF_ONE.count("= %s") == 3
#: RECOUNT_HALTED after one task's outcome (%s: ids, then that task's id), a chain's step: the waiters of one task
#: found by a scalar, planned once (a list of one, `= ANY (%s::bigint[])`, had a custom plan at every run where the
#: table holds a few thousand edges; as a sub-select's array, the plan scanned the edges of a smaller table).
RECOUNT_HALTED_BY_ONE = RECOUNT_HALTED.replace("wait_task_id = ANY (%s::bigint[])", "wait_task_id = %s::bigint")
assert RECOUNT_HALTED_BY_ONE != RECOUNT_HALTED
#: The leases of the tasks whose outcome is recorded (%s: ids) end (PostgresStore.end_leases).
#: (`lease_until + 0`: with `lease_until IS NOT NULL`, the generic plan went through the leased tasks' index,
#: ix_tasks_leased, for every lease held, rather than by primary key.)
END_LEASES = planned_once("UPDATE tasks SET runner = NULL, lease_until = NULL WHERE id = ANY (%s) "
                          "AND (lease_until + 0) IS NOT NULL")

# What a chain's step reads ahead, in fewer statements (issue 25, hpgw2): each statement of a pipeline costs the
# client about 25 us in psycopg (a cursor, its parameters dumped, its results fetched) and the server an executor
# started. The statements below return, in one result, the rows several returned: tagged, in WIDE columns (a tag,
# a change row's columns, then two bigints), each part's own columns where its rows are read (split_*). Each part
# keeps its own form, planned once (the step's statements are prepared: their generic plans are kept).
_PADS = {"id": "NULL::bigint", "clean": "NULL::boolean"}
_NULLS = tuple(_PADS.get(c, "NULL::text") for c in CHANGE_COLUMNS)


def _named(sql: str, name: str) -> str:
    """_named is sql with each of its positional parameters (%s) as the named one %(name)s (one value; name::type:
    cast to type)."""
    assert "%(" not in sql and "%%" not in sql, sql
    param, _, cast = name.partition("::")
    return sql.replace("%s", f"%({param})s" + (f"::{cast}" if cast else ""))


def _wide(tag: str, cols: dict[int, str], source: str) -> str:
    """_wide selects a part's rows in the WIDE columns: tag, cols by their position (1 to 11), NULLs elsewhere."""
    nulls = (*_NULLS, "NULL::bigint", "NULL::bigint")
    return f"SELECT {tag}, {', '.join(cols.get(i + 1, n) for i, n in enumerate(nulls))} FROM {source}"


_PROBE_COLS = {1: "p.cid", 4: "p.status", 10: "p.n", 11: "p.unclean"}
#: What task_rows reads ahead with the lock of one task (a chain's step), in one statement (three before): its edges
#: and lanes (GRAPH_OF_ONE: 'e' and 'l' rows), its change with the changes that have tasks in Wait or are queued
#: (CHANGES_AND_FLAGS: 'c', 'w' and 'q' rows) and the status probe of its change (PROBE_OF: its rows tagged 'p' and
#: theirs). Parameters: PROBE_OF's, %(one)s the task's id (text) and %(ids)s the same as an array literal.
LOCK_AHEAD_ONE = " UNION ALL ".join((
    _wide("g.k", {1: "g.a", 10: "g.b"}, f"({_named(GRAPH_OF_ONE, 'one::bigint')}) g(k, a, b)"),
    f"SELECT x.*, NULL::bigint, NULL::bigint FROM ({_named(CHANGES_AND_FLAGS, 'ids')}) x",
    _wide("'p' || p.k", _PROBE_COLS, f"({PROBE_OF}) p(k, cid, status, n, unclean)")))


def split_lock_ahead(rows: list[Row]) -> tuple[list[Row], list[Row], list[Row]]:
    """split_lock_ahead is LOCK_AHEAD_ONE's rows as GRAPH_OF's, CHANGES_AND_FLAGS' and PROBE_OF's would be."""
    graph: list[Row] = []
    tagged: list[Row] = []
    probe: list[Row] = []
    for r in rows:
        k = r[0]
        if k == "e" or k == "l":
            graph.append((k, r[1], r[10]))
        elif k[0] == "p":
            probe.append((k[1:], r[1], r[4], r[10], r[11]))
        else:
            tagged.append(r[:10])
    return graph, tagged, probe


#: What the claim reads ahead after the share locks of the changes it took tasks of (CLAIMED_SHARED), in one statement
#: (three before): the rows of those changes not read yet in this transaction ('c'; %(counted)s: those read), what
#: their statuses need of their other tasks (PROBE_CLAIMED's rows, tagged 'f'; %(known)s: the changes probed, %(ex)s)
#: and the changes with tasks in Wait ('w': read after the share locks, so as committed once they were taken).
CLAIM_AHEAD = " UNION ALL ".join((
    f"SELECT 'c', {CHANGE_LIST}, NULL::bigint, NULL::bigint FROM changes WHERE id IN (SELECT change_id FROM tasks "
    "WHERE lease_until IS NOT NULL AND runner = %(runner)s AND change_id <> ALL (%(counted)s::bigint[]))",
    _wide("p.k", _PROBE_COLS, f"({PROBE_CLAIMED}) p(k, cid, status, n, unclean)"),
    _wide("'w'", {1: "w.change_id"}, f"({CATALOG['changes_with_waiting_tasks'].sql}) w(change_id)")))


def split_claim_ahead(rows: list[Row]) -> tuple[list[Row], list[Row], list[Row]]:
    """split_claim_ahead is CLAIM_AHEAD's rows as the change rows, PROBE_CLAIMED's and the changes with tasks in
    Wait ((id,) rows) would be."""
    changes: list[Row] = []
    probe: list[Row] = []
    waiting: list[Row] = []
    for r in rows:
        k = r[0]
        if k == "c":
            changes.append(r[1:10])
        elif k == "w":
            waiting.append((r[1],))
        else:
            probe.append((k, r[1], r[4], r[10], r[11]))
    return changes, probe, waiting
