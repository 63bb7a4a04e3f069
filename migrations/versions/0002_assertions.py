# SPDX-License-Identifier: GPL-3.0-or-later
"""Assertions: signed documents by type and primary key, newest revision only.

Revision ID: 0002_assertions
Revises: 0001_initial
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_assertions"
down_revision: str | None = "0001_initial"
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
        "assertions",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("primary_key", sa.Text(), nullable=False),
        sa.Column("revision", Int, nullable=False),
        sa.Column("authority_id", sa.Text(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("added_time", sa.String(length=32), nullable=False),
        sa.CheckConstraint(json_check_sql("headers", op.get_context().dialect.name), name=op.f("ck_assertions_headers")),
        sa.CheckConstraint("revision >= 0", name=op.f("ck_assertions_revision")),
        sa.PrimaryKeyConstraint("type", "primary_key", name=op.f("pk_assertions")),
    )


def downgrade() -> None:
    # The table is the assert manager's now (managers.assertstate): a database made fresh by the engine alone
    # (no manager declared it) has none to drop.
    if sa.inspect(op.get_bind()).has_table("assertions"):
        op.drop_table("assertions")
