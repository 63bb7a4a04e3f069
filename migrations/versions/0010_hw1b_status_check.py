# SPDX-License-Identifier: GPL-3.0-or-later
"""The check of a task's status on SQLite: one comparison per status instead of an IN list.

SQLite builds a temporary table for an IN list in a CHECK constraint each
time a statement inserts a row or changes the column it checks: about 2.3 us
of every insert of a task and every update of its status, of some 5 us in
all (docs/performance.md, "W1's run and submit, cut further"). The statuses
allowed are the same. A CHECK cannot be altered in SQLite; rewriting the
table's definition in sqlite_master (SQLite's documented procedure for
changes that leave the stored rows as they are: "ALTER TABLE", "Making
other kinds of table schema changes") takes no copy of the table, whatever
its size. PostgreSQL's check is left as it is.

Revision ID: 0010_hw1b_status_check
Revises: 0009_unready_index
Create Date: 2026-12-07 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_hw1b_status_check"
down_revision: str | None = "0009_unready_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The check at this revision and before it (copies: a migration is a snapshot).
_STATUSES = ("Hold", "Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Error", "Wait")
CHECK = "CHECK (" + " OR ".join(f"status = '{s}'" for s in _STATUSES) + ")"
CHECK_BEFORE = "CHECK (status IN (" + ",".join(f"'{s}'" for s in _STATUSES) + "))"


def _rewrite(old: str, new: str) -> None:
    """_rewrite replaces the check of ck_tasks_status in the stored definition of tasks (SQLite only)."""
    if op.get_context().dialect.name != "sqlite":
        return
    bind = op.get_bind()
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").scalar()
    constraint = "CONSTRAINT ck_tasks_status "
    if not isinstance(sql, str) or sql.count(constraint + old) != 1:
        raise RuntimeError(f"cannot rewrite the status check of table tasks: its definition is not as expected: {sql!r}")
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'tasks'",
                             (sql.replace(constraint + old, constraint + new),))
        bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")  # every connection reads the schema again
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _rewrite(CHECK_BEFORE, CHECK)


def downgrade() -> None:
    _rewrite(CHECK, CHECK_BEFORE)
