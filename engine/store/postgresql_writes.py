# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresWrites: a flush's task rows in one UPDATE, and the leases that end with an outcome cleared there.

A unit of work that records outcomes (and claims the next tasks) writes
whole task rows: update_tasks, one statement a row. On PostgreSQL:

- **One UPDATE for the rows of a flush** (UPDATE_TASKS_BATCH): the rows
  go as one JSON array, joined to the tasks by id. A W1 unit
  of work wrote 20 to 30 rows with as many executions of update_tasks (each
  one's dump of 19 parameters by psycopg, and the server's executor started
  for it); now one. Every row it writes is already locked by this
  transaction (a task row is locked as it is read, a claimed one by the
  claim), so the order the join meets them in takes no lock.
- **The lease ends in the same UPDATE**: a task whose outcome is recorded
  had its row written (its new status) and then its runner and lease_until
  cleared by end_leases: two row versions in one transaction, neither HOT
  (lease_until is indexed for the reaper), each with its index entries.
  Now the row's own UPDATE clears them; end_leases' statement is left for
  the tasks whose row the flush does not write (a cleanup recorded on a
  clean task, the reaper's). W1 wrote 4 versions of each task's row during
  its run (the claim, Doing, Done, the lease's end), now 3.

docs/scale-out.md, "What costs what".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .base import ChangeSetWrite
from .compiled import Compiled
from .postgresql_counts import PostgresCounts
from .postgresql_sql import CATALOG
from .statements import TASK_COLUMNS

_UPDATE = CATALOG["update_tasks"]
assert _UPDATE.direct  # (its rows are its parameters: TASK_COLUMNS[1:], then the id)
#: The full-row UPDATE of a task (update_tasks: its columns, then its id) that also ends its lease.
UPDATE_TASKS_UNLEASED: Compiled = replace(
    _UPDATE, name="update_tasks_unleased",
    sql=_UPDATE.sql.replace(" WHERE tasks.id = ", ", runner=NULL, lease_until=NULL WHERE tasks.id = ", 1))
assert UPDATE_TASKS_UNLEASED.sql != _UPDATE.sql

#: The PostgreSQL type of each column of a task row (TASK_COLUMNS) that is not text.
_TYPES = {"id": "bigint", "change_id": "bigint", "clean": "boolean", "progress_done": "bigint",
          "progress_total": "bigint", "doing_time": "float8", "undoing_time": "float8", "attempts": "bigint",
          "retry_attempts": "bigint"}
_WRITTEN = TASK_COLUMNS[1:]


def _field(i: int, column: str) -> str:
    """_field is the i-th value of a row of UPDATE_TASKS_BATCH's JSON array (v.e), as the column's type."""
    kind = _TYPES.get(column)
    return f"(v.e->>{i})::{kind}" if kind else f"v.e->>{i}"


_ID, _UNLEASE = len(_WRITTEN), len(_WRITTEN) + 1
#: update_tasks for many rows at once (%s: a JSON array of update_tasks' rows, each followed by whether the row's
#: lease ends; %s: their ids). (The rows as one JSON text, not an array a column: psycopg dumps a list element by
#: element in Python, a regex search each, which cost the client more than the statements a row it saves. The ids
#: apart: the planner takes jsonb_array_elements for 100 rows, and joined them to a scan of every task.)
UPDATE_TASKS_BATCH = (
    f"UPDATE tasks SET {', '.join(f'{c} = {_field(i, c)}' for i, c in enumerate(_WRITTEN))}, "
    f"runner = CASE WHEN {_field(_UNLEASE, 'clean')} THEN NULL ELSE tasks.runner END, "
    f"lease_until = CASE WHEN {_field(_UNLEASE, 'clean')} THEN NULL ELSE tasks.lease_until END "
    f"FROM jsonb_array_elements(%s::jsonb) AS v(e) WHERE tasks.id = ANY (%s::bigint[]) "
    f"AND tasks.id = {_field(_ID, 'id')}")


def batch_json(rows: Sequence[Sequence[Any]], unleasing: set[int]) -> str | None:
    """batch_json is UPDATE_TASKS_BATCH's parameter for update_tasks' rows, with the rows whose leases end marked.

    None where a value has no JSON form that reads back the same (a float that is not finite): the rows then go
    one statement each, as update_tasks.
    """
    try:
        return json.dumps([[*r, r[-1] in unleasing] for r in rows], allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


class PostgresWrites(PostgresCounts):
    """PostgresWrites writes a flush's task rows in one UPDATE, which also ends the leases of those that end."""

    #: The tasks whose leases the update_tasks of the flush being written ends (None: not in such a flush).
    _unleasing: set[int] | None = None

    def write(self, changes: ChangeSetWrite) -> None:
        """write writes a flush (SqlStore.write); a task in changes.ended whose row it writes ends its lease there.

        The tasks whose leases so end are taken out of changes.ended (this
        flush's own, written once), so that end_leases does not write their
        rows a second time.
        """
        if changes.ended and changes.task_updates:
            written = {r[-1] for r in changes.task_updates}  # (an update's row: its columns, then the id)
            merged = {tid for tid in changes.ended if tid in written}
            if merged:
                changes.ended = [tid for tid in changes.ended if tid not in merged]
                self._unleasing = merged
                try:
                    super().write(changes)
                finally:
                    self._unleasing = None
                return
        super().write(changes)

    def executemany(self, c: Compiled, rows: Sequence[Sequence[Any]]) -> None:
        """executemany runs a statement for many rows; a flush's task updates go as one statement (UPDATE_TASKS_BATCH),
        which also clears the leases that end."""
        if c.name != _UPDATE.name:
            super().executemany(c, rows)
            return
        unleasing, self._unleasing = self._unleasing or set(), None
        if len(rows) > 1 and len({r[-1] for r in rows}) == len(rows):
            batch = batch_json(rows, unleasing)
            if batch is not None:
                self.send(UPDATE_TASKS_BATCH, (batch, [r[-1] for r in rows]))
                return
        keep = [r for r in rows if r[-1] not in unleasing]  # (one row, or a task written twice: in order, one each)
        if keep:
            super().executemany(c, keep)
        if len(keep) < len(rows):
            super().executemany(UPDATE_TASKS_UNLEASED, [r for r in rows if r[-1] in unleasing])
