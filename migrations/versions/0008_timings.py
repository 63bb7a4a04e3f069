# SPDX-License-Identifier: GPL-3.0-or-later
"""Timings: the duration of each run of a task's handlers, and of each manager in slow ensure passes.

Revision ID: 0008_timings
Revises: 0007_coordination
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

#: The 64-bit integer of the models at this revision (a copy: this migration is a snapshot of the schema).
Int = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision: str = "0008_timings"
down_revision: str | None = "0007_coordination"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_timings",
        sa.Column("id", Int, nullable=False),
        sa.Column("task_id", Int, nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("attempt", Int, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("started", sa.String(length=32), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.CheckConstraint("phase IN ('do','undo')", name=op.f("ck_task_timings_phase")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_task_timings_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_timings")),
    )
    op.create_index("ix_task_timings_task_id", "task_timings", ["task_id", "id"], unique=False)
    op.create_table(
        "ensure_timings",
        sa.Column("id", Int, nullable=False),
        sa.Column("pass_id", sa.String(length=32), nullable=False),
        sa.Column("started", sa.String(length=32), nullable=False),
        sa.Column("manager", sa.Text(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ensure_timings")),
    )


def downgrade() -> None:
    op.drop_table("ensure_timings")
    op.drop_index("ix_task_timings_task_id", table_name="task_timings")
    op.drop_table("task_timings")
