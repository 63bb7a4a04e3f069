# SPDX-License-Identifier: GPL-3.0-or-later
"""Initial schema: changes, tasks, edges, lanes, task log, state data, warnings.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25 06:23:26.497196
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What this revision needs of the models, as it was then: a migration is a snapshot and imports no live
# model code (engine/models.py may change; this file must not).
Int = sa.Integer().with_variant(sa.BigInteger(), "postgresql")


def json_check_sql(column: str, dialect: str) -> str:
    """json_check_sql is the check that column holds JSON text, in a dialect."""
    return f"({column}::json IS NOT NULL)" if dialect == "postgresql" else f"json_valid({column})"


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("id", Int, autoincrement=False, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("explicit_status", sa.String(length=16), nullable=True),
        sa.Column("clean", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("data", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("spawn_time", sa.String(length=32), nullable=False),
        sa.Column("ready_time", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "explicit_status IS NULL OR explicit_status IN ('Default','Hold','Do','Doing','Done','Abort','Undo','Undoing','Undone','Error','Wait')",
            name=op.f("ck_changes_explicit_status"),
        ),
        sa.CheckConstraint(
            "status IN ('Default','Hold','Do','Doing','Done','Abort','Undo','Undoing','Undone','Error','Wait')",
            name=op.f("ck_changes_status"),
        ),
        sa.CheckConstraint(json_check_sql("data", op.get_context().dialect.name), name=op.f("ck_changes_data")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changes")),
    )
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.create_index("ix_changes_ready_time", ["ready_time"], unique=False)
        batch_op.create_index(
            "ix_changes_unclean",
            ["id"],
            unique=False,
            sqlite_where=sa.text("ready_time IS NOT NULL AND clean = 0"), postgresql_where=sa.text("ready_time IS NOT NULL AND NOT clean"),
        )
        batch_op.create_index(
            "ix_changes_unready",
            ["id"],
            unique=False,
            sqlite_where=sa.text("ready_time IS NULL"), postgresql_where=sa.text("ready_time IS NULL"),
        )

    sequences = op.create_table(
        "sequences",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("last_id", Int, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sequences")),
    )
    op.bulk_insert(sequences, [{"name": name, "last_id": 0} for name in ("change", "task", "lane")])
    op.create_table(
        "state_data",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.CheckConstraint(json_check_sql("value", op.get_context().dialect.name), name=op.f("ck_state_data_value")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_state_data")),
    )
    op.create_table(
        "warnings",
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("first_added", sa.String(length=32), nullable=False),
        sa.Column("last_added", sa.String(length=32), nullable=False),
        sa.Column("last_shown", sa.String(length=32), nullable=True),
        sa.Column("expire_after", sa.Float(), nullable=False),
        sa.Column("repeat_after", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("message", name=op.f("pk_warnings")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", Int, autoincrement=False, nullable=False),
        sa.Column("change_id", Int, nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.String(length=16),
            server_default=sa.text("'Do'"),
            nullable=False,
        ),
        sa.Column(
            "waited_status",
            sa.String(length=16),
            server_default=sa.text("'Done'"),
            nullable=False,
        ),
        sa.Column("clean", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("progress_label", sa.Text(), nullable=True),
        sa.Column("progress_done", Int, nullable=True),
        sa.Column("progress_total", Int, nullable=True),
        sa.Column("data", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("spawn_time", sa.String(length=32), nullable=False),
        sa.Column("ready_time", sa.String(length=32), nullable=True),
        sa.Column("at_time", sa.String(length=32), nullable=True),
        sa.Column("doing_time", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("undoing_time", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempts", Int, server_default=sa.text("0"), nullable=False),
        sa.Column("retry_attempts", Int, server_default=sa.text("0"), nullable=False),
        sa.Column("retry_since", sa.String(length=32), nullable=True),
        sa.Column("blockers", Int, server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "status IN ('Hold','Do','Doing','Done','Abort','Undo','Undoing','Undone','Error','Wait')",
            name=op.f("ck_tasks_status"),
        ),
        sa.CheckConstraint(json_check_sql("data", op.get_context().dialect.name), name=op.f("ck_tasks_data")),
        sa.ForeignKeyConstraint(
            ["change_id"],
            ["changes.id"],
            name=op.f("fk_tasks_change_id_changes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_change_id", ["change_id"], unique=False)
        batch_op.create_index(
            "ix_tasks_orphan",
            ["spawn_time"],
            unique=False,
            sqlite_where=sa.text("change_id IS NULL"), postgresql_where=sa.text("change_id IS NULL"),
        )
        batch_op.create_index(
            "ix_tasks_unready",
            ["status", "id"],
            unique=False,
            sqlite_where=sa.text("status NOT IN ('Done','Undone','Hold','Error')"), postgresql_where=sa.text("status NOT IN ('Done','Undone','Hold','Error')"),
        )
        batch_op.create_index(
            "ix_tasks_runnable", ["id"], unique=False, sqlite_where=sa.text("status = 'Do' AND blockers = 0"), postgresql_where=sa.text("status = 'Do' AND blockers = 0")
        )

    op.create_table(
        "task_dependencies",
        sa.Column("task_id", Int, nullable=False),
        sa.Column("wait_task_id", Int, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["wait_task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_wait_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "wait_task_id", name=op.f("pk_task_dependencies")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_dependencies_wait_task_id",
            ["wait_task_id", "task_id"],
            unique=False,
        )

    op.create_table(
        "task_lanes",
        sa.Column("task_id", Int, nullable=False),
        sa.Column("lane", Int, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_lanes_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "lane", name=op.f("pk_task_lanes")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "task_log",
        sa.Column("id", Int, nullable=False),
        sa.Column("task_id", Int, nullable=False),
        sa.Column("time", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.CheckConstraint("level IN ('INFO','ERROR')", name=op.f("ck_task_log_level")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_log_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_log")),
    )
    with op.batch_alter_table("task_log", schema=None) as batch_op:
        batch_op.create_index("ix_task_log_task_id", ["task_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_log", schema=None) as batch_op:
        batch_op.drop_index("ix_task_log_task_id")

    op.drop_table("task_log")
    op.drop_table("task_lanes")
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.drop_index("ix_task_dependencies_wait_task_id")

    op.drop_table("task_dependencies")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_runnable", sqlite_where=sa.text("status = 'Do' AND blockers = 0"), postgresql_where=sa.text("status = 'Do' AND blockers = 0"))
        batch_op.drop_index(
            "ix_tasks_unready",
            sqlite_where=sa.text("status NOT IN ('Done','Undone','Hold','Error')"), postgresql_where=sa.text("status NOT IN ('Done','Undone','Hold','Error')"),
        )
        batch_op.drop_index("ix_tasks_orphan", sqlite_where=sa.text("change_id IS NULL"), postgresql_where=sa.text("change_id IS NULL"))
        batch_op.drop_index("ix_tasks_change_id")

    op.drop_table("tasks")
    op.drop_table("warnings")
    op.drop_table("state_data")
    op.drop_table("sequences")
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index("ix_changes_unready", sqlite_where=sa.text("ready_time IS NULL"), postgresql_where=sa.text("ready_time IS NULL"))
        batch_op.drop_index(
            "ix_changes_unclean",
            sqlite_where=sa.text("ready_time IS NOT NULL AND clean = 0"), postgresql_where=sa.text("ready_time IS NOT NULL AND NOT clean"),
        )
        batch_op.drop_index("ix_changes_ready_time")

    op.drop_table("changes")
