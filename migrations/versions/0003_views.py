# SPDX-License-Identifier: GPL-3.0-or-later
"""Views for the sqlite3 shell: v_changes (a change with its task counts) and v_task_last_log.

Revision ID: 0003_views
Revises: 0002_assertions
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from engine.store.views import VIEWS_0003, create_views, drop_views

revision: str = "0003_views"
down_revision: str | None = "0002_assertions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_views(op.get_bind(), VIEWS_0003)


def downgrade() -> None:
    drop_views(op.get_bind(), VIEWS_0003)
