# SPDX-License-Identifier: GPL-3.0-or-later
"""SQLAlchemy models: the schema of the state database, on SQLite and on PostgreSQL.

The rows are private to the engine: the public Change and Task objects read
and write them through engine.store. The tables are meant to be read with the
sqlite3 shell (or psql) too; docs/schema.md describes them. Where the
dialects differ, the model says both: integers are 64-bit on both
(PostgreSQL's BIGINT), JSON columns are checked with json_valid() on SQLite
and by a cast to json on PostgreSQL, and partial indexes carry each
dialect's predicate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_TASK_STATUS_CHECK = "status IN ('Hold','Do','Doing','Done','Abort','Undo','Undoing','Undone','Error','Wait')"
#: The same check on SQLite, one comparison per status: SQLite builds a temporary table for an IN list in a
#: CHECK each time a row is inserted or its status updated (2.3 us of every such statement; 0010_hw1b_status_check).
_SQLITE_TASK_STATUS_CHECK = " OR ".join(
    f"status = '{s}'" for s in ("Hold", "Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Error", "Wait"))
_CHANGE_STATUS_CHECK = (
    "status IN ('Default','Hold','Do','Doing','Done','Abort','Undo','Undoing','Undone','Error','Wait')"
)
#: The ready statuses (a status the engine does not know is unready).
READY_STATUSES = ("Done", "Undone", "Hold", "Error")


def unready_predicate(prefix: str = "") -> str:
    """unready_predicate is the predicate of unready rows (prefix: a table's alias and a dot).

    On SQLite, one comparison per ready status, not NOT IN: a partial index
    whose predicate holds an IN list makes SQLite build a temporary table for
    the list each time a statement changes the column (about 75 us for each
    UPDATE of a task's status, against 1 us: half the Python-free cost of a
    chain's step). PostgreSQL's index keeps NOT IN, which implies this.
    """
    return " AND ".join(f"{prefix}status <> '{s}'" for s in READY_STATUSES)


#: The partial index on unready tasks uses this exact predicate; queries
#: repeat it word for word so that SQLite picks the index.
UNREADY_PREDICATE = unready_predicate()
#: What PostgreSQL's partial index of unready tasks says (it implies the same rows).
PG_UNREADY_PREDICATE = "status NOT IN ('Done','Undone','Hold','Error')"
#: The first key of ix_tasks_change_unready (PostgreSQL), which the status probe repeats word for word. Not
#: change_id itself: the planner, which takes every change for one of about the average size, went through a
#: change's tasks by ix_tasks_change_id for its Do tasks, walking its done ones (0.5 to 1 ms on a change of
#: 10,000 half done, against 0.05 ms through this index).
CHANGE_UNREADY_KEY = "(change_id + 0)"
#: Likewise for the partial index on runnable Do tasks.
RUNNABLE_PREDICATE = "status = 'Do' AND blockers = 0"

#: Int is a 64-bit integer on both dialects (SQLite's INTEGER is already 64-bit).
Int = Integer().with_variant(BigInteger(), "postgresql")


def json_check_sql(column: str, dialect: str) -> str:
    """json_check_sql is the check that column holds JSON text, in a dialect (for models and migrations)."""
    return f"({column}::json IS NOT NULL)" if dialect == "postgresql" else f"json_valid({column})"


def json_check(column: str, name: str) -> list[CheckConstraint]:
    """json_check refuses text that is not JSON in column: json_valid() on SQLite, a cast on PostgreSQL."""
    return [CheckConstraint(json_check_sql(column, d), name=name).ddl_if(dialect=d) for d in ("sqlite", "postgresql")]


def partial(name: str, *columns: str, where: str, pg_where: str | None = None) -> Index:
    """partial is an index of the rows matching where (pg_where on PostgreSQL, when it must be spelt otherwise)."""
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(pg_where or where))


def made_on(item: Any, dialect: str) -> bool:
    """made_on says whether a schema item is made on a dialect (an index or constraint may be one's own: ddl_if)."""
    only = getattr(item, "_ddl_if", None)
    return only is None or only.dialect in (None, dialect)


class Base(DeclarativeBase):
    """Base is the declarative base of the engine's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ChangeRow(Base):
    """ChangeRow is one change: a user-visible operation made of tasks."""

    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    # The status as chg.status computes it, rewritten at every commit.
    status: Mapped[str] = mapped_column(String(16))
    # The status set with chg.set_status(), or NULL when computed from tasks.
    explicit_status: Mapped[str | None] = mapped_column(String(16))
    clean: Mapped[bool] = mapped_column(Boolean, server_default=false())
    data: Mapped[str] = mapped_column(Text, server_default=text("'{}'"))
    spawn_time: Mapped[str] = mapped_column(String(32))
    ready_time: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        CheckConstraint(_CHANGE_STATUS_CHECK, name="status"),
        CheckConstraint(
            "explicit_status IS NULL OR " + _CHANGE_STATUS_CHECK.replace("status", "explicit_status"),
            name="explicit_status",
        ),
        *json_check("data", "data"),
        # Prune walks ready changes oldest first.
        Index("ix_changes_ready_time", "ready_time"),
        # Changes not yet ready: prune's abort rule and the runner's cleanup.
        partial("ix_changes_unready", "id", where="ready_time IS NULL"),
        # Ready changes whose tasks still need cleaning.
        partial("ix_changes_unclean", "id", where="ready_time IS NOT NULL AND clean = 0",
                pg_where="ready_time IS NOT NULL AND NOT clean"),
    )


class TaskRow(Base):
    """TaskRow is one task: a unit of work with do and undo handlers."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    change_id: Mapped[int | None] = mapped_column(Int, ForeignKey("changes.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    # "Default" is stored as "Do": a task reads its default status as Do.
    status: Mapped[str] = mapped_column(String(16), server_default=text("'Do'"))
    waited_status: Mapped[str] = mapped_column(String(16), server_default=text("'Done'"))
    clean: Mapped[bool] = mapped_column(Boolean, server_default=false())
    progress_label: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int | None] = mapped_column(Int)
    progress_total: Mapped[int | None] = mapped_column(Int)
    data: Mapped[str] = mapped_column(Text, server_default=text("'{}'"))
    spawn_time: Mapped[str] = mapped_column(String(32))
    ready_time: Mapped[str | None] = mapped_column(String(32))
    at_time: Mapped[str | None] = mapped_column(String(32))
    # Seconds spent in the do and undo handlers, accumulated.
    doing_time: Mapped[float] = mapped_column(Float, server_default=text("0"))
    undoing_time: Mapped[float] = mapped_column(Float, server_default=text("0"))
    # Handler runs that asked for a retry or failed under a retry policy.
    attempts: Mapped[int] = mapped_column(Int, server_default=text("0"))
    # The failures of the current do (or undo) phase under its retry policy,
    # and when the first of them happened: what the policy's stop looks at.
    retry_attempts: Mapped[int] = mapped_column(Int, server_default=text("0"))
    retry_since: Mapped[str | None] = mapped_column(String(32))
    # How many of the tasks it waits for are not Done: a Do task with none
    # left is runnable. Kept by the engine at each commit.
    blockers: Mapped[int] = mapped_column(Int, server_default=text("0"))
    # On PostgreSQL, the runner that claimed the task (a unique id per process
    # start) and until when its lease runs (seconds since the epoch, by the
    # database server's clock); the runner's heartbeat extends it while the
    # handler runs. NULL on SQLite, whose single writer needs no lease.
    runner: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(_SQLITE_TASK_STATUS_CHECK, name="status").ddl_if(dialect="sqlite"),
        CheckConstraint(_TASK_STATUS_CHECK, name="status").ddl_if(dialect="postgresql"),
        *json_check("data", "data"),
        Index("ix_tasks_change_id", "change_id"),
        # Only unready tasks: the runner's pickup never touches history.
        partial("ix_tasks_unready", "status", "id", where=UNREADY_PREDICATE, pg_where=PG_UNREADY_PREDICATE),
        # (PostgreSQL only) A change's unready tasks by status: a shared store's unit of work asks whether a change
        # has unready tasks of a status, a few at most, not the counts of all its tasks (postgresql_counts.py).
        # SQLite's single writer counts a change's tasks once and keeps the counts: it would only pay for the index.
        # (change_id + 0: an expression ix_tasks_change_id does not have, which the probe names, so that the
        # planner cannot take that index instead and walk the change's done tasks; see CHANGE_UNREADY_KEY.)
        Index("ix_tasks_change_unready", text(CHANGE_UNREADY_KEY), "status",
              postgresql_where=text(PG_UNREADY_PREDICATE)).ddl_if(dialect="postgresql"),
        # Do tasks with nothing left to wait for: the runnable ones.
        partial("ix_tasks_runnable", "id", where=RUNNABLE_PREDICATE),
        # Tasks that were never added to a change, for prune.
        partial("ix_tasks_orphan", "spawn_time", where="change_id IS NULL"),
        # Tasks claimed under a lease (PostgreSQL, several runner hosts): the reaper's look-up.
        partial("ix_tasks_leased", "lease_until", where="lease_until IS NOT NULL"),
    )


class TaskDependencyRow(Base):
    """TaskDependencyRow is one wait-for edge: task_id waits for wait_task_id."""

    __tablename__ = "task_dependencies"

    task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    wait_task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (
        # The other direction: the tasks that wait for a task (its halt tasks).
        Index("ix_task_dependencies_wait_task_id", "wait_task_id", "task_id"),
        {"sqlite_with_rowid": False},
    )


class TaskLaneRow(Base):
    """TaskLaneRow records that a task belongs to a lane."""

    __tablename__ = "task_lanes"

    task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    lane: Mapped[int] = mapped_column(Int, primary_key=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class TaskLogRow(Base):
    """TaskLogRow is one line of a task's log (the last ten are kept)."""

    __tablename__ = "task_log"

    id: Mapped[int] = mapped_column(Int, primary_key=True)
    task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"))
    time: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("level IN ('INFO','ERROR')", name="level"),
        Index("ix_task_log_task_id", "task_id", "id"),
    )


class StateDataRow(Base):
    """StateDataRow is one key of the state's own key/value data."""

    __tablename__ = "state_data"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (*json_check("value", "value"),)


class WarningRow(Base):
    """WarningRow is one warning, keyed by its message."""

    __tablename__ = "warnings"

    message: Mapped[str] = mapped_column(Text, primary_key=True)
    first_added: Mapped[str] = mapped_column(String(32))
    last_added: Mapped[str] = mapped_column(String(32))
    last_shown: Mapped[str | None] = mapped_column(String(32))
    # Durations in seconds.
    expire_after: Mapped[float] = mapped_column(Float)
    repeat_after: Mapped[float] = mapped_column(Float)


class NoticeRow(Base):
    """NoticeRow is one notice: occurrences of an event aggregated by type and key (snapd's notices)."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    # What happened ("change-update", "warning", or a type of the user's) and to what (a change id, a message).
    type: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    first_occurred: Mapped[str] = mapped_column(String(32))
    last_occurred: Mapped[str] = mapped_column(String(32))
    # When it last counted as new for waiters (every occurrence, or once per repeat_after).
    last_repeated: Mapped[str] = mapped_column(String(32))
    occurrences: Mapped[int] = mapped_column(Int)
    # The data of the last occurrence: a JSON object of strings.
    last_data: Mapped[str] = mapped_column(Text, server_default=text("'{}'"))
    # Durations in seconds (repeat_after 0: every occurrence repeats).
    repeat_after: Mapped[float] = mapped_column(Float, server_default=text("0"))
    expire_after: Mapped[float] = mapped_column(Float)
    # last_occurred + expire_after: prune deletes the notice after it.
    expire_time: Mapped[str] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("type", "key"),
        *json_check("last_data", "last_data"),
        CheckConstraint("occurrences >= 1", name="occurrences"),
        # Waiters ask for what was repeated after a time.
        # (No index on expire_time: prune, every 10 minutes, reads the table through; each
        # occurrence, a change's every status transition, would update one more index.)
        Index("ix_notices_last_repeated", "last_repeated"),
    )


class SequenceRow(Base):
    """SequenceRow holds the last id handed out for changes, tasks or lanes."""

    __tablename__ = "sequences"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_id: Mapped[int] = mapped_column(Int)


class ChangeKeyRow(Base):
    """ChangeKeyRow is the idempotency key of a change: a second request with the key gets that change."""

    __tablename__ = "change_keys"

    # The caller's key (an Idempotency-Key header, say); unique: two requests racing on it make one change.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    change_id: Mapped[int] = mapped_column(Int)
    # Until when the key names its change; after it, the key makes a new change (prune deletes the row).
    expire_time: Mapped[str] = mapped_column(String(32))

    __table_args__ = (
        # Prune deletes the keys of the changes it deletes; Change.key looks a change's key up.
        Index("ix_change_keys_change_id", "change_id"),
    )


class ChangeAffectRow(Base):
    """ChangeAffectRow says that a change affects a key (such as "snap:hello"): what conflicts are found by."""

    __tablename__ = "change_affects"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    change_id: Mapped[int] = mapped_column(Int, primary_key=True)
    # True while the change waits for the older unready changes affecting its keys (on_conflict="queue").
    queued: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (
        # A change's own keys (Change.affects, prune).
        Index("ix_change_affects_change_id", "change_id"),
        # The runner's look at the changes still queued: usually none.
        partial("ix_change_affects_queued", "change_id", where="queued = 1", pg_where="queued"),
    )
# -- events, concurrency slots and schedules (0007_coordination) -------------------------------------


class EventRow(Base):
    """EventRow is one event emitted with State.emit: kept a while so that a task parking just then sees it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text)
    # The data handed to the waiting tasks: JSON.
    data: Mapped[str] = mapped_column(Text, server_default=text("'null'"))
    time: Mapped[str] = mapped_column(String(32))

    __table_args__ = (
        *json_check("data", "data"),
        Index("ix_events_key", "key", "id"),
    )


class EventWaitRow(Base):
    """EventWaitRow is a task parked until an event: what it waits for, until when, and what it got."""

    __tablename__ = "event_waits"

    task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    key: Mapped[str] = mapped_column(Text)
    # When the wait times out (NULL: never), and what happens then: 'error' or 'retry'.
    deadline: Mapped[str | None] = mapped_column(String(32))
    on_timeout: Mapped[str] = mapped_column(String(8), server_default=text("'error'"))
    # Whether an event was delivered, and its data (JSON).
    delivered: Mapped[bool] = mapped_column(Boolean, server_default=false())
    data: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("on_timeout IN ('error','retry')", name="on_timeout"),
        Index("ix_event_waits_key", "key"),
        partial("ix_event_waits_deadline", "deadline", where="deadline IS NOT NULL AND delivered = 0",
                pg_where="deadline IS NOT NULL AND NOT delivered"),
    )


class ConcurrencySlotRow(Base):
    """ConcurrencySlotRow says that a task took a slot of a concurrency key when it last started.

    The slot is held while the task is Doing or Undoing under a live lease
    (PostgreSQL): a host that dies frees its slots when its leases run out.
    """

    __tablename__ = "concurrency_slots"

    task_id: Mapped[int] = mapped_column(Int, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    key: Mapped[str] = mapped_column(Text)
    # When the task last started (the State's clock): what rate limits count.
    started: Mapped[str] = mapped_column(String(32))

    __table_args__ = (Index("ix_concurrency_slots_key", "key", "started"),)


class ScheduleRow(Base):
    """ScheduleRow is a schedule: when it is due, and the change it makes then."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    # Cron syntax ("*/5 * * * *") or snapd's timer syntax ("mon-fri,10:00-12:00").
    spec: Mapped[str] = mapped_column(Text)
    # The change to make: {"kind", "summary", "tasks": [{"kind", "summary", "data"}], "data"} (JSON).
    template: Mapped[str] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # After downtime: 'skip' the missed slots, or run 'once' for them.
    missed: Mapped[str] = mapped_column(String(8), server_default=text("'skip'"))
    # The next slot to run, and the last one run.
    next_time: Mapped[str | None] = mapped_column(String(32))
    last_time: Mapped[str | None] = mapped_column(String(32))
    created: Mapped[str] = mapped_column(String(32))

    __table_args__ = (
        *json_check("template", "template"),
        CheckConstraint("missed IN ('skip','once')", name="missed"),
    )


class ScheduleRunRow(Base):
    """ScheduleRunRow is one slot of a schedule that was run: its key makes a slot run once across hosts."""

    __tablename__ = "schedule_runs"

    name: Mapped[str] = mapped_column(Text, ForeignKey("schedules.name", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(32), primary_key=True)
    change_id: Mapped[int | None] = mapped_column(Int)
    time: Mapped[str] = mapped_column(String(32))
class TaskTimingBatchRow(Base):
    """TaskTimingBatchRow is the runs of a change's task handlers that one commit wrote (engine.timings).

    One row per change per batch, not one per run: a row of its own cost a
    run 3 us of SQLite's (the row, its index, its foreign key), over 5 % of
    W1's CPU per task (docs/performance.md). The view task_timings shows
    one row per run (engine.store.views).
    """

    __tablename__ = "task_timing_batches"

    id: Mapped[int] = mapped_column(Int, primary_key=True)
    change_id: Mapped[int] = mapped_column(Int, ForeignKey("changes.id", ondelete="CASCADE"))
    # The runs, oldest first, as JSON, an array per field (engine.timings.RUN_FIELDS, _packed): {"since": S,
    # "task_id": [...], "phase": [...] ("do", "undo"), "attempt": [...] (1 + the task's attempts before it),
    # "outcome": [...] (done, undone, retry, wait, error, aborted), "started": [...] (microseconds after S, which
    # is microseconds since the epoch; the State's clock), "duration": [...] (microseconds)}; a phase, attempt
    # or outcome every run shares is that one value, not an array.
    runs: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        *json_check("runs", "runs"),
        # A change's runs, oldest first, and the cascade when a change is pruned.
        Index("ix_task_timing_batches_change_id", "change_id", "id"),
    )


class EnsureTimingRow(Base):
    """EnsureTimingRow is one manager's ensure() in one ensure pass that took long enough to keep."""

    __tablename__ = "ensure_timings"

    id: Mapped[int] = mapped_column(Int, primary_key=True)
    # The rows of one pass share it (a random text); when the pass started (the State's clock).
    pass_id: Mapped[str] = mapped_column(String(32))
    started: Mapped[str] = mapped_column(String(32))
    # The manager's class name ("TaskRunner", "SnapManager", ...).
    manager: Mapped[str] = mapped_column(Text)
    duration: Mapped[float] = mapped_column(Float)


#: ENGINE_OWN names the engine's own tables: those declared above, before any manager declares its own on
#: Base.metadata (engine.tables).
ENGINE_OWN = frozenset(Base.metadata.tables)
