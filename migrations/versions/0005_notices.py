# SPDX-License-Identifier: GPL-3.0-or-later
"""Notices: occurrences of events aggregated by type and key, for clients that wait on them.

Revision ID: 0005_notices
Revises: 0004_task_leases
Create Date: 2026-12-07 06:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_notices"
down_revision: str | None = "0004_task_leases"
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
        "notices",
        sa.Column("id", Int, autoincrement=False, nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("first_occurred", sa.String(length=32), nullable=False),
        sa.Column("last_occurred", sa.String(length=32), nullable=False),
        sa.Column("last_repeated", sa.String(length=32), nullable=False),
        sa.Column("occurrences", Int, nullable=False),
        sa.Column("last_data", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("repeat_after", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("expire_after", sa.Float(), nullable=False),
        sa.Column("expire_time", sa.String(length=32), nullable=False),
        sa.CheckConstraint(json_check_sql("last_data", op.get_context().dialect.name),
                           name=op.f("ck_notices_last_data")),
        sa.CheckConstraint("occurrences >= 1", name=op.f("ck_notices_occurrences")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("type", "key", name=op.f("uq_notices_type_key")),
    )
    op.create_index("ix_notices_last_repeated", "notices", ["last_repeated"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notices_last_repeated", table_name="notices")
    op.drop_table("notices")
    # The ids handed out to notices go with them.
    op.execute("DELETE FROM sequences WHERE name = 'notice'")
