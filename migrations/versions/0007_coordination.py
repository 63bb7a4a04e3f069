# SPDX-License-Identifier: GPL-3.0-or-later
"""Coordination: events and the tasks waiting for them, concurrency slots, schedules.

Revision ID: 0007_coordination
Revises: 0006_change_keys
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

#: The 64-bit integer of the models at this revision (a copy: this migration is a snapshot of the schema).
Int = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision: str = "0007_coordination"
down_revision: str | None = "0006_change_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_check_sql(column: str, dialect: str) -> str:
    """json_check_sql is the check that column holds JSON text, in a dialect."""
    return f"({column}::json IS NOT NULL)" if dialect == "postgresql" else f"json_valid({column})"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "events",
        sa.Column("id", Int, autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), server_default=sa.text("'null'"), nullable=False),
        sa.Column("time", sa.String(length=32), nullable=False),
        sa.CheckConstraint(json_check_sql("data", dialect), name=op.f("ck_events_data")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_key", "events", ["key", "id"], unique=False)
    op.create_table(
        "event_waits",
        sa.Column("task_id", Int, autoincrement=False, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("deadline", sa.String(length=32), nullable=True),
        sa.Column("on_timeout", sa.String(length=8), server_default=sa.text("'error'"), nullable=False),
        sa.Column("delivered", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.CheckConstraint("on_timeout IN ('error','retry')", name=op.f("ck_event_waits_on_timeout")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_event_waits_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_event_waits")),
    )
    op.create_index("ix_event_waits_key", "event_waits", ["key"], unique=False)
    op.create_index("ix_event_waits_deadline", "event_waits", ["deadline"], unique=False,
                    sqlite_where=sa.text("deadline IS NOT NULL AND delivered = 0"),
                    postgresql_where=sa.text("deadline IS NOT NULL AND NOT delivered"))
    op.create_table(
        "concurrency_slots",
        sa.Column("task_id", Int, autoincrement=False, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("started", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_concurrency_slots_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_concurrency_slots")),
    )
    op.create_index("ix_concurrency_slots_key", "concurrency_slots", ["key", "started"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("missed", sa.String(length=8), server_default=sa.text("'skip'"), nullable=False),
        sa.Column("next_time", sa.String(length=32), nullable=True),
        sa.Column("last_time", sa.String(length=32), nullable=True),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.CheckConstraint(json_check_sql("template", dialect), name=op.f("ck_schedules_template")),
        sa.CheckConstraint("missed IN ('skip','once')", name=op.f("ck_schedules_missed")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedules")),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("change_id", Int, nullable=True),
        sa.Column("time", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["name"], ["schedules.name"], name=op.f("fk_schedule_runs_name_schedules"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name", "slot", name=op.f("pk_schedule_runs")),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
    op.drop_index("ix_concurrency_slots_key", table_name="concurrency_slots")
    op.drop_table("concurrency_slots")
    op.drop_index("ix_event_waits_deadline", table_name="event_waits")
    op.drop_index("ix_event_waits_key", table_name="event_waits")
    op.drop_table("event_waits")
    op.drop_index("ix_events_key", table_name="events")
    op.drop_table("events")
