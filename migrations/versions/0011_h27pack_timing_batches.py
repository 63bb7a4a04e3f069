# SPDX-License-Identifier: GPL-3.0-or-later
"""Task runs packed: one row per change per batch (task_timing_batches), a view task_timings of one row per run.

A row per run, with its index on (task_id, id) and its foreign key, cost
SQLite about 3 us a run, more than 5 % of W1's CPU per task
(docs/performance.md, "Timings and traces"); a batch's runs of one change
as one row of JSON text, an array per field, cost a fraction of it. The
view task_timings (engine/store/views.py, VIEWS_0011) shows them one row
per run, as the table of that name did. The rows move in their order, a
batch per stretch of rows of one change (at most 64), their durations kept to the
microsecond (as every reader showed them: a TaskTiming's timedelta);
runs of tasks in no change go (no reader listed them). Downgrading moves
them back, a row per run, in the order of the batches.

Revision ID: 0011_h27pack_timing_batches
Revises: 0010_hw1b_status_check
Create Date: 2026-12-07 19:30:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011_h27pack_timing_batches"
down_revision: str | None = "0010_hw1b_status_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The 64-bit integer of the models at this revision (a copy: this migration is a snapshot of the schema).
Int = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
#: How many runs a moved batch holds at most.
BATCH = 64
#: How many rows are read at a time (memory stays bounded whatever the table holds).
CHUNK = 10_000
#: The fields of a run in task_timing_batches.runs, an array each, or one value for all the runs of a batch
#: (engine.timings.RUN_FIELDS at this revision).
FIELDS = ("task_id", "phase", "attempt", "outcome", "started", "duration")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The engine's time text (engine._time.to_text), which task_timings.started holds.
_TEXT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: The view task_timings at this revision, by dialect (a copy of engine/store/views.py's VIEWS_0011: a
#: migration is a snapshot). A run's fields are arrays in task_timing_batches.runs, or one value for all its runs.
VIEW = {
    "sqlite": """CREATE VIEW task_timings AS
SELECT b.id AS batch_id, r.key AS seq, b.change_id, r.value AS task_id,
       coalesce(json_extract(b.runs, '$.phase[' || r.key || ']'), json_extract(b.runs, '$.phase')) AS phase,
       coalesce(json_extract(b.runs, '$.attempt[' || r.key || ']'), json_extract(b.runs, '$.attempt')) AS attempt,
       coalesce(json_extract(b.runs, '$.outcome[' || r.key || ']'), json_extract(b.runs, '$.outcome')) AS outcome,
       strftime('%Y-%m-%dT%H:%M:%S', (json_extract(b.runs, '$.since') + json_extract(b.runs, '$.started[' || r.key || ']')) / 1000000, 'unixepoch')
       || printf('.%06dZ', (json_extract(b.runs, '$.since') + json_extract(b.runs, '$.started[' || r.key || ']')) % 1000000) AS started,
       json_extract(b.runs, '$.duration[' || r.key || ']') / 1e6 AS duration
FROM task_timing_batches b, json_each(b.runs, '$.task_id') r""",
    "postgresql": """CREATE VIEW task_timings AS
SELECT b.id AS batch_id, r.seq - 1 AS seq, b.change_id, r.task_id::bigint AS task_id,
       coalesce((j.runs -> 'phase' ->> (r.seq - 1)::integer), j.runs ->> 'phase') AS phase,
       coalesce((j.runs -> 'attempt' ->> (r.seq - 1)::integer), j.runs ->> 'attempt')::integer AS attempt,
       coalesce((j.runs -> 'outcome' ->> (r.seq - 1)::integer), j.runs ->> 'outcome') AS outcome,
       to_char(timestamp 'epoch' + (((j.runs ->> 'since')::bigint + (j.runs -> 'started' ->> (r.seq - 1)::integer)::bigint) / 1000000) * interval '1 second'
               + mod((j.runs ->> 'since')::bigint + (j.runs -> 'started' ->> (r.seq - 1)::integer)::bigint, 1000000) * interval '1 microsecond',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started,
       (j.runs -> 'duration' ->> (r.seq - 1)::integer)::double precision / 1e6 AS duration
FROM task_timing_batches b
CROSS JOIN LATERAL (SELECT b.runs::jsonb AS runs) j
CROSS JOIN LATERAL jsonb_array_elements_text(j.runs -> 'task_id') WITH ORDINALITY AS r(task_id, seq)""",
}


def json_check_sql(column: str, dialect: str) -> str:
    """json_check_sql is the check that column holds JSON text, in a dialect."""
    return f"({column}::json IS NOT NULL)" if dialect == "postgresql" else f"json_valid({column})"


def _create_batches(dialect: str) -> None:
    op.create_table(
        "task_timing_batches",
        sa.Column("id", Int, nullable=False),
        sa.Column("change_id", Int, nullable=False),
        sa.Column("runs", sa.Text(), nullable=False),
        sa.CheckConstraint(json_check_sql("runs", dialect), name=op.f("ck_task_timing_batches_runs")),
        sa.ForeignKeyConstraint(["change_id"], ["changes.id"], name=op.f("fk_task_timing_batches_change_id_changes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_timing_batches")),
    )
    op.create_index("ix_task_timing_batches_change_id", "task_timing_batches", ["change_id", "id"], unique=False)


def _create_rows() -> None:
    """_create_rows creates the table task_timings of revision 0008_timings, a row per run."""
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


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    bind = op.get_bind()
    _create_batches(dialect)
    # A batch per stretch of rows of one change (at most BATCH): the rows keep their order, so a downgrade
    # gives them back in it. started: microseconds after the batch's since (its first run's start, in
    # microseconds since the epoch); duration: microseconds (what every reader showed). CHUNK rows at a
    # time, whatever the table holds.
    select_rows = sa.text(
        "SELECT r.id, t.change_id, r.task_id, r.phase, r.attempt, r.outcome, r.started, r.duration "
        "FROM task_timings r JOIN tasks t ON t.id = r.task_id WHERE t.change_id IS NOT NULL AND r.id > :after "
        "ORDER BY r.id LIMIT :chunk")
    insert = sa.text("INSERT INTO task_timing_batches (change_id, runs) VALUES (:cid, :runs)")
    moved: list[tuple[int, dict[str, Any]]] = []
    after = -1
    while True:
        rows = bind.execute(select_rows, {"after": after, "chunk": CHUNK}).all()
        for rid, cid, tid, phase, attempt, outcome, started, duration in rows:
            when = (datetime.strptime(started, _TEXT).replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
            if not moved or moved[-1][0] != int(cid) or len(moved[-1][1]["task_id"]) == BATCH:
                moved.append((int(cid), {"since": when, **{name: [] for name in FIELDS}}))
            batch = moved[-1][1]
            run = (int(tid), phase, int(attempt), outcome, when - batch["since"], round(float(duration) * 1e6))
            for name, value in zip(FIELDS, run, strict=True):
                batch[name].append(value)
            after = int(rid)
        done = len(rows) < CHUNK
        full = moved if done else moved[:-1]  # (the last may go on in the next chunk)
        if full:
            bind.execute(insert, [{"cid": cid, "runs": json.dumps(runs, separators=(",", ":"))} for cid, runs in full])
            moved = moved[len(full):]
        if done:
            break
    op.drop_index("ix_task_timings_task_id", table_name="task_timings")
    op.drop_table("task_timings")
    bind.exec_driver_sql(VIEW[dialect])


def downgrade() -> None:
    bind = op.get_bind()
    bind.exec_driver_sql("DROP VIEW IF EXISTS task_timings")
    _create_rows()
    select_batches = sa.text("SELECT id, runs FROM task_timing_batches WHERE id > :after ORDER BY id LIMIT :chunk")
    insert = sa.text("INSERT INTO task_timings (task_id, phase, attempt, outcome, started, duration) "
                     "VALUES (:task_id, :phase, :attempt, :outcome, :started, :duration)")
    after = -1
    while True:
        batches = bind.execute(select_batches, {"after": after, "chunk": max(1, CHUNK // BATCH)}).all()
        runs = []
        for bid, text in batches:
            batch = json.loads(text)
            n = len(batch["task_id"])  # (a phase, attempt or outcome the runs share is one value, not an array)
            columns = (batch[name] if isinstance(batch[name], list) else [batch[name]] * n for name in FIELDS)
            for tid, phase, attempt, outcome, started, duration in zip(*columns, strict=True):
                runs.append({"task_id": tid, "phase": phase, "attempt": attempt, "outcome": outcome,
                             "started": f"{_EPOCH + (batch['since'] + started) * _MICROSECOND:{_TEXT}}",
                             "duration": duration / 1e6})
            after = int(bid)
        if runs:  # (the tasks are there: a batch goes with its change, and a change's tasks with it)
            bind.execute(insert, runs)
        if len(batches) < max(1, CHUNK // BATCH):
            break
    op.drop_index("ix_task_timing_batches_change_id", table_name="task_timing_batches")
    op.drop_table("task_timing_batches")
