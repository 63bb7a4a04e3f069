# SPDX-License-Identifier: GPL-3.0-or-later
"""The partial index of unready tasks on SQLite: one comparison per ready status instead of NOT IN.

SQLite builds a temporary table for an IN list in a partial index's
predicate each time a statement changes the indexed column: about 75 us of
every UPDATE of a task's status (docs/performance.md, "A chain's hand-off").
The rows indexed are the same. PostgreSQL's index is left as it is (its
planner reads NOT IN as the same comparisons).

Revision ID: 0009_unready_index
Revises: 0008_timings
Create Date: 2026-12-07 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_unready_index"
down_revision: str | None = "0008_timings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The predicates of the index at this revision and before it (copies: a migration is a snapshot).
UNREADY = "status <> 'Done' AND status <> 'Undone' AND status <> 'Hold' AND status <> 'Error'"
UNREADY_BEFORE = "status NOT IN ('Done','Undone','Hold','Error')"


def _recreate(where: str) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.drop_index("ix_tasks_unready", table_name="tasks")
    op.create_index("ix_tasks_unready", "tasks", ["status", "id"], unique=False, sqlite_where=sa.text(where))


def upgrade() -> None:
    _recreate(UNREADY)


def downgrade() -> None:
    _recreate(UNREADY_BEFORE)
