# SPDX-License-Identifier: GPL-3.0-or-later
"""Views for the sqlite3 shell: v_changes (a change with its task counts) and v_task_last_log.

Revision ID: 0003_views
Revises: 0002_assertions
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_views"
down_revision: str | None = "0002_assertions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_STATUSES = ("Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Hold", "Error", "Wait")
_COUNTS = ",\n       ".join(f"count(CASE WHEN t.status = '{s}' THEN 1 END) AS {s.lower()}_tasks" for s in _STATUSES)

#: VIEWS are the views of this revision, by name: the SQL that creates each (a snapshot: engine/store/views.py
#: holds those of the newest revision).
VIEWS = {
    # One row per change: its columns, how many of its tasks are in each status, and how many
    # ERROR lines their logs hold.
    "v_changes": f"""CREATE VIEW v_changes AS
SELECT c.id, c.kind, c.summary, c.status, c.spawn_time, c.ready_time,
       count(t.id) AS tasks,
       {_COUNTS},
       (SELECT count(*) FROM task_log g JOIN tasks e ON e.id = g.task_id
        WHERE e.change_id = c.id AND g.level = 'ERROR') AS error_lines
FROM changes c LEFT JOIN tasks t ON t.change_id = c.id
GROUP BY c.id""",
    # One row per task that has logged anything: the task and its newest log line.
    "v_task_last_log": """CREATE VIEW v_task_last_log AS
SELECT t.id AS task_id, t.change_id, t.kind, t.summary, t.status, g.time, g.level, g.message
FROM tasks t JOIN task_log g ON g.id = (SELECT max(l.id) FROM task_log l WHERE l.task_id = t.id)""",
}


def upgrade() -> None:
    conn = op.get_bind()
    for sql in VIEWS.values():
        conn.exec_driver_sql(sql)


def downgrade() -> None:
    conn = op.get_bind()
    for name in reversed(list(VIEWS)):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
