# SPDX-License-Identifier: GPL-3.0-or-later
"""Task leases: which runner claimed a task and until when (several runner hosts on PostgreSQL).

Revision ID: 0004_task_leases
Revises: 0003_views
Create Date: 2026-12-01 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_task_leases"
down_revision: str | None = "0003_views"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN (no batch copy): the views on tasks stay.
    op.add_column("tasks", sa.Column("runner", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("lease_until", sa.Float(), nullable=True))
    op.create_index("ix_tasks_leased", "tasks", ["lease_until"], unique=False,
                    sqlite_where=sa.text("lease_until IS NOT NULL"),
                    postgresql_where=sa.text("lease_until IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_tasks_leased", table_name="tasks")
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35 and later), not a batch copy of the table.
    op.execute("ALTER TABLE tasks DROP COLUMN lease_until")
    op.execute("ALTER TABLE tasks DROP COLUMN runner")
