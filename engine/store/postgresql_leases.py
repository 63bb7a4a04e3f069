# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresLeases: the leases that end with an outcome, cleared in the UPDATE that writes the task's row.

A unit of work that records outcomes writes each task's row (its new
status) and ends the task's lease (runner and lease_until cleared): on
SQLite's single writer the lease columns are never set; on PostgreSQL
they were two UPDATEs of the same row in one transaction, two row versions
with their index entries (lease_until is indexed for the reaper, so neither
update is HOT). Here a task whose row the flush writes has its lease
cleared by that same UPDATE; only the leases of tasks whose row is not
written (a cleanup recorded on a clean task, the reaper's) end by
end_leases' own statement. W1 wrote 4 versions of each task's row (the
claim, Doing, Done, the lease's end), now 3. docs/scale-out.md, "What costs what".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .base import ChangeSetWrite
from .compiled import Compiled
from .postgresql_counts import PostgresCounts
from .postgresql_sql import CATALOG

_UPDATE = CATALOG["update_tasks"]
#: The full-row UPDATE of a task (update_tasks: its columns, then its id) that also ends its lease.
UPDATE_TASKS_UNLEASED: Compiled = replace(
    _UPDATE, name="update_tasks_unleased",
    sql=_UPDATE.sql.replace(" WHERE tasks.id = ", ", runner=NULL, lease_until=NULL WHERE tasks.id = ", 1))
assert UPDATE_TASKS_UNLEASED.sql != _UPDATE.sql


class PostgresLeases(PostgresCounts):
    """PostgresLeases writes a flush with the ending leases cleared by the rows' own UPDATEs where it can."""

    #: The tasks whose leases the next update_tasks of this flush ends (None: none, or not in a flush).
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
        """executemany runs a statement for many rows; the flush's task updates whose leases end clear them too."""
        unleasing = self._unleasing
        if unleasing is None or c.name != _UPDATE.name:
            super().executemany(c, rows)
            return
        self._unleasing = None
        keep = [r for r in rows if r[-1] not in unleasing]
        if keep:
            super().executemany(c, keep)
        super().executemany(UPDATE_TASKS_UNLEASED, [r for r in rows if r[-1] in unleasing])
