# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL: a partial index of the unready tasks by change and status (ix_tasks_change_unready).

On a shared store, a unit of work needs to know of a change's tasks it
does not hold only whether some are unready, of which statuses, a few of
each (engine/store/postgresql_counts.py): counting all of them by status,
in every unit of work, cost the server about 0.4 ms a step of a chain of
1,000 and 3 to 5 ms a unit of work of W1 (docs/performance.md). Through the
unready tasks' index on (status, id), which has no change, the look-up of a
change with few tasks of a status walked the unready tasks of that status
of every change in flight: the snap-install shape, 1,000 changes, ran 5
times slower. This index finds a change's own unready tasks of a status.
Its first key is the expression change_id + 0, which the probe names: on
change_id itself, the planner (which takes every change for one of about
the average size) went through a change's tasks by ix_tasks_change_id for
its Do tasks instead, walking the change's done ones.

SQLite gets none: its single writer counts a change's tasks once and keeps
the counts (engine/cache.py), never asks the question, and would only pay
for one more index at every insert of a task and update of its status.

Revision ID: 0012_hpg5_change_unready_index
Revises: 0011_h27pack_timing_batches
Create Date: 2026-12-07 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_hpg5_change_unready_index"
down_revision: str | None = "0011_h27pack_timing_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: PostgreSQL's predicate of the unready tasks at this revision (a copy: a migration is a snapshot).
UNREADY = "status NOT IN ('Done','Undone','Hold','Error')"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.create_index("ix_tasks_change_unready", "tasks", [sa.text("(change_id + 0)"), "status"], unique=False,
                    postgresql_where=sa.text(UNREADY))


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_tasks_change_unready", table_name="tasks")
