# SPDX-License-Identifier: GPL-3.0-or-later
"""Views of the state database for the sqlite3 shell: v_changes, v_task_last_log and task_timings (docs/schema.md).

The engine never reads the first two; they are for people. task_timings
shows the runs of task handlers one row per run, as the table of that name
did before revision 0011 packed them (task_timing_batches); the engine
reads a change's runs through it too. A new database gets them
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

def _sqlite_run(field: str) -> str:
    return f"json_extract(b.runs, '$.{field}[' || r.key || ']')"


def _sqlite_shared(field: str) -> str:
    """_sqlite_shared is a field that is an array, or one value for every run."""
    return f"coalesce({_sqlite_run(field)}, json_extract(b.runs, '$.{field}'))"


def _pg_run(field: str) -> str:
    return f"(j.runs -> '{field}' ->> (r.seq - 1)::integer)"


def _pg_shared(field: str) -> str:
    """_pg_shared is a field that is an array, or one value for every run."""
    return f"coalesce({_pg_run(field)}, j.runs ->> '{field}')"


_SQLITE_STARTED = "json_extract(b.runs, '$.since') + " + _sqlite_run("started")
_PG_STARTED = "(j.runs ->> 'since')::bigint + " + _pg_run("started") + "::bigint"


#: VIEWS_0011 are the views revision 0011_h27pack_timing_batches adds: the runs of task handlers, one row per
#: run (batch_id, seq: the order they were written in), from the batches, whose runs are a JSON object of
#: arrays, a field each (engine.timings.RUN_FIELDS; phase, attempt and outcome one value when the runs share
#: it); started, microseconds after the batch's "since" (microseconds since the epoch), shown as the engine's
#: time text; duration, microseconds, shown in seconds. A view per dialect: SQLite's json_each, PostgreSQL's
#: jsonb_array_elements_text.
VIEWS_0011: Mapping[str, Mapping[str, str]] = {
    "task_timings": {
        "sqlite": f"""CREATE VIEW task_timings AS
SELECT b.id AS batch_id, r.key AS seq, b.change_id, r.value AS task_id,
       {_sqlite_shared("phase")} AS phase,
       {_sqlite_shared("attempt")} AS attempt,
       {_sqlite_shared("outcome")} AS outcome,
       strftime('%Y-%m-%dT%H:%M:%S', ({_SQLITE_STARTED}) / 1000000, 'unixepoch')
       || printf('.%06dZ', ({_SQLITE_STARTED}) % 1000000) AS started,
       {_sqlite_run("duration")} / 1e6 AS duration
FROM task_timing_batches b, json_each(b.runs, '$.task_id') r""",
        "postgresql": f"""CREATE VIEW task_timings AS
SELECT b.id AS batch_id, r.seq - 1 AS seq, b.change_id, r.task_id::bigint AS task_id,
       {_pg_shared("phase")} AS phase,
       {_pg_shared("attempt")}::integer AS attempt,
       {_pg_shared("outcome")} AS outcome,
       to_char(timestamp 'epoch' + (({_PG_STARTED}) / 1000000) * interval '1 second'
               + mod({_PG_STARTED}, 1000000) * interval '1 microsecond',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started,
       {_pg_run("duration")}::double precision / 1e6 AS duration
FROM task_timing_batches b
CROSS JOIN LATERAL (SELECT b.runs::jsonb AS runs) j
CROSS JOIN LATERAL jsonb_array_elements_text(j.runs -> 'task_id') WITH ORDINALITY AS r(task_id, seq)""",
    },
}

#: VIEWS are the views of the newest schema revision (what a new database gets): a view's SQL, or its SQL by
#: dialect name.
VIEWS: Mapping[str, str | Mapping[str, str]] = {**VIEWS_0003, **VIEWS_0011}


def create_views(conn: Connection, views: Mapping[str, str | Mapping[str, str]] = VIEWS) -> None:
    """create_views creates views on conn (in a migration: op.get_bind())."""
    for sql in views.values():
        conn.exec_driver_sql(sql if isinstance(sql, str) else sql[conn.dialect.name])


def drop_views(conn: Connection, views: Mapping[str, str | Mapping[str, str]] = VIEWS) -> None:
    """drop_views drops views from conn, those that exist."""
    for name in reversed(list(views)):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
