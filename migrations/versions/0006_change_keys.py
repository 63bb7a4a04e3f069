# SPDX-License-Identifier: GPL-3.0-or-later
"""Idempotency keys of changes, and the keys changes affect (conflicts that can wait).

Revision ID: 0006_change_keys
Revises: 0005_notices
Create Date: 2026-12-07 08:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

#: The 64-bit integer of the models at this revision (a copy: this migration is a snapshot of the schema).
Int = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

revision: str = "0006_change_keys"
down_revision: str | None = "0005_notices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_keys",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("change_id", Int, nullable=False),
        sa.Column("expire_time", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_change_keys")),
    )
    op.create_index("ix_change_keys_change_id", "change_keys", ["change_id"], unique=False)
    op.create_table(
        "change_affects",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("change_id", Int, nullable=False),
        sa.Column("queued", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("key", "change_id", name=op.f("pk_change_affects")),
    )
    op.create_index("ix_change_affects_change_id", "change_affects", ["change_id"], unique=False)
    op.create_index("ix_change_affects_queued", "change_affects", ["change_id"], unique=False,
                    sqlite_where=sa.text("queued = 1"), postgresql_where=sa.text("queued"))


def downgrade() -> None:
    op.drop_index("ix_change_affects_queued", table_name="change_affects")
    op.drop_index("ix_change_affects_change_id", table_name="change_affects")
    op.drop_table("change_affects")
    op.drop_index("ix_change_keys_change_id", table_name="change_keys")
    op.drop_table("change_keys")
