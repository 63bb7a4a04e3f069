# SPDX-License-Identifier: GPL-3.0-or-later
"""Views of the state database for the sqlite3 shell: v_changes and v_task_last_log (docs/schema.md).

The engine never reads them; they are for people. A new database gets them
when its schema is created (engine.store.sqlite_open, engine.store.
postgresql_open), an older one from the migration that added them
(0003_views), both from the definitions here, so the two schemas stay equal.
Definitions are kept per schema revision: a migration imports
the set of its own revision by name (VIEWS_0003), and VIEWS is the set of
the newest one. A later migration that changes a view adds a new set rather
than editing an old one.

SQLite refuses to rename a table while a view names a table that does not
exist, which is what Alembic's batch mode does to alter a table: a
migration that alters changes, tasks or task_log drops the views first
(drop_views) and creates them again at its end (create_views).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection

_STATUSES = ("Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Hold", "Error", "Wait")
_COUNTS = ",\n       ".join(f"count(CASE WHEN t.status = '{s}' THEN 1 END) AS {s.lower()}_tasks" for s in _STATUSES)

#: VIEWS_0003 are the views of schema revision 0003_views, by name: the SQL that creates each.
VIEWS_0003: Mapping[str, str] = {
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

#: VIEWS are the views of the newest schema revision (what a new database gets).
VIEWS: Mapping[str, str] = VIEWS_0003


def create_views(conn: Connection, views: Mapping[str, str] = VIEWS) -> None:
    """create_views creates views on conn (in a migration: op.get_bind())."""
    for sql in views.values():
        conn.exec_driver_sql(sql)


def drop_views(conn: Connection, views: Mapping[str, str] = VIEWS) -> None:
    """drop_views drops views from conn, those that exist."""
    for name in reversed(list(views)):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
