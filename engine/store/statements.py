# SPDX-License-Identifier: GPL-3.0-or-later
"""Every statement the engine runs, defined once in SQLAlchemy Core over the tables of engine.models.

A statement is a function of the backend's Forms (what the dialects do
differently: upserts, index hints) that builds a Core construct; each
backend compiles it once per process (Sql.compile) and runs the compiled
text on its driver connection. Parameters are positional, in the order each
definition names them (checked when compiled).

Why the compiled text runs on the driver connection and not through
SQLAlchemy's Connection.execute: a claim pass or a commit runs a dozen
small statements, and Connection.execute costs about 25 us more per call
than the driver's own execute (measured on this machine: 31 us against
6 us for a one-row SELECT by primary key), which would cost W2 (a chain,
about 20 statements per task) about a third of its speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    ClauseElement,
    Table,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)

from ..models import (
    RUNNABLE_PREDICATE,
    UNREADY_PREDICATE,
    ChangeAffectRow,
    ChangeKeyRow,
    ChangeRow,
    ConcurrencySlotRow,
    EnsureTimingRow,
    EventRow,
    EventWaitRow,
    NoticeRow,
    ScheduleRow,
    ScheduleRunRow,
    SequenceRow,
    StateDataRow,
    TaskDependencyRow,
    TaskLaneRow,
    TaskLogRow,
    TaskRow,
    TaskTimingBatchRow,
    WarningRow,
    unready_predicate,
)
from ..status import TASK_STATUSES

changes: Table = ChangeRow.__table__  # type: ignore[assignment]
tasks: Table = TaskRow.__table__  # type: ignore[assignment]
deps: Table = TaskDependencyRow.__table__  # type: ignore[assignment]
lanes: Table = TaskLaneRow.__table__  # type: ignore[assignment]
task_log: Table = TaskLogRow.__table__  # type: ignore[assignment]
state_data: Table = StateDataRow.__table__  # type: ignore[assignment]
warnings: Table = WarningRow.__table__  # type: ignore[assignment]
sequences: Table = SequenceRow.__table__  # type: ignore[assignment]
notices: Table = NoticeRow.__table__  # type: ignore[assignment]
change_keys: Table = ChangeKeyRow.__table__  # type: ignore[assignment]
affects: Table = ChangeAffectRow.__table__  # type: ignore[assignment]
events: Table = EventRow.__table__  # type: ignore[assignment]
event_waits: Table = EventWaitRow.__table__  # type: ignore[assignment]
slots: Table = ConcurrencySlotRow.__table__  # type: ignore[assignment]
schedules: Table = ScheduleRow.__table__  # type: ignore[assignment]
schedule_runs: Table = ScheduleRunRow.__table__  # type: ignore[assignment]
timing_batches: Table = TaskTimingBatchRow.__table__  # type: ignore[assignment]
ensure_timings: Table = EnsureTimingRow.__table__  # type: ignore[assignment]

#: The columns of a task row as the engine reads and writes it (engine._records.TASK_FIELDS).
TASK_COLUMNS = ("id", "change_id", "kind", "summary", "status", "waited_status", "clean", "progress_label",
                "progress_done", "progress_total", "data", "spawn_time", "ready_time", "at_time", "doing_time",
                "undoing_time", "attempts", "retry_attempts", "retry_since")
#: The columns of a change row (engine._records.CHANGE_FIELDS).
CHANGE_COLUMNS = ("id", "kind", "summary", "status", "explicit_status", "clean", "data", "spawn_time", "ready_time")
#: The columns a new task sets (insert_new_tasks; engine._records.TaskRec.new_row): its other columns hold what
#: new_task gives them (Do, waiting for Done, no data, no times, no attempts).
NEW_TASK_COLUMNS = ("id", "change_id", "kind", "summary", "spawn_time")
#: The same with the task's blockers count (insert_counted_tasks: a single writer's new task that waits, counted
#: from its cache).
COUNTED_TASK_COLUMNS = (*NEW_TASK_COLUMNS, "blockers")
#: A whole task row with its blockers count (insert_tasks_counted: a single writer's new task with values set,
#: say, that waits, counted from its cache).
TASK_COUNTED_COLUMNS = (*TASK_COLUMNS, "blockers")
WARNING_COLUMNS = ("message", "first_added", "last_added", "last_shown", "expire_after", "repeat_after")
#: The columns of a notice row (engine.notice.Notice.row).
NOTICE_COLUMNS = ("id", "type", "key", "first_occurred", "last_occurred", "last_repeated", "occurrences", "last_data",
                  "repeat_after", "expire_after", "expire_time")
#: The columns of a task run as the engine reads it (engine.timings; the view task_timings), after its task's kind.
TASK_TIMING_COLUMNS = ("task_id", "phase", "attempt", "outcome", "started", "duration")
#: The columns of a manager's ensure in one pass (engine.timings).
ENSURE_TIMING_COLUMNS = ("pass_id", "started", "manager", "duration")

#: A task row whose status the schema does not know (hand-edited) is never rewritten.
KNOWN_STATUS = "status IN (" + ",".join(f"'{v}'" for v in TASK_STATUSES) + ")"
KNOWN_STATUS_COMPARED = "(" + " OR ".join(f"status = '{v}'" for v in TASK_STATUSES) + ")"
UNREADY = text(UNREADY_PREDICATE)


class Forms(Protocol):
    """Forms are what one backend writes its own way; each backend module defines them in one place."""

    name: str

    def insert_ignore(self, table: Table) -> Any:
        """insert_ignore is an INSERT that skips rows whose key exists."""

    def upsert(self, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """upsert is an INSERT of columns that updates the row whose keys exist."""

    def hint(self, stmt: Any, table: Any, index: str) -> Any:
        """hint names the index a query must use (a no-op where the planner needs no help)."""

    def json_valid(self, column: str) -> Any:
        """json_valid is true where column holds JSON (SQLite: a row edited with its checks off may not)."""


Builder = Callable[[Forms], ClauseElement]


@dataclass(frozen=True)
class Sql:
    """Sql is one statement: how to build it, and the names of its parameters in the order given."""

    name: str
    build: Builder
    params: tuple[str, ...] = ()
    #: The parameter that takes a list (an IN list), if any.
    expanding: str | None = None


def _s(value: str) -> Any:
    """_s is a string constant written into the statement (statuses: index predicates need them literal)."""
    return literal_column(f"'{value}'")


def _b(name: str) -> Any:
    return bindparam(name)


def _ids(name: str = "ids") -> Any:
    return bindparam(name, expanding=True)


def _cols(table: Table, names: tuple[str, ...]) -> list[Any]:
    return [table.c[n] for n in names]


def _recount(f: Forms, which: Any) -> Any:
    """_recount recomputes the blockers count of the tasks which selects.

    Known statuses by comparisons, not IN: SQLite builds a temporary table
    for an IN list at each run (9 against 5 us a run).
    """
    return update(tasks).values(blockers=(
        select(func.count()).select_from(_d.join(_w, _w.c.id == _d.c.wait_task_id))
        .where(_d.c.task_id == tasks.c.id, _w.c.status != _s("Done")).scalar_subquery())) \
        .where(text(KNOWN_STATUS_COMPARED), f.json_valid("data"), which)


def _values(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: bindparam(n) for n in names}


# -- reads ----------------------------------------------------------------------

TASK_ALIAS = tasks.alias("t")
_t = TASK_ALIAS
_d = deps.alias("d")
_w = tasks.alias("w")
_h = tasks.alias("h")

#: Subquery: how many of the tasks that t waits for are not Done.
_OPEN_WAITS = (select(func.count()).select_from(_d.join(_w, _w.c.id == _d.c.wait_task_id))
               .where(_d.c.task_id == _t.c.id, _w.c.status != _s("Done")).scalar_subquery())


def _task_select(table: Any = tasks) -> Any:
    return select(*_cols(table, TASK_COLUMNS))


STATEMENTS: list[Sql] = [
    Sql("sequences", lambda f: select(sequences.c.name, sequences.c.last_id)),
    Sql("ids_in_use", lambda f: select(
        select(func.max(changes.c.id)).scalar_subquery(),
        select(func.max(tasks.c.id)).scalar_subquery(),
        select(func.max(lanes.c.lane)).where(
            lanes.c.task_id.in_(select(tasks.c.id).where(UNREADY))).scalar_subquery(),
        select(func.max(notices.c.id)).scalar_subquery())),
    Sql("task", lambda f: _task_select().where(tasks.c.id == _b("id")), ("id",)),
    Sql("tasks", lambda f: _task_select().where(tasks.c.id.in_(_ids())), ("ids",), "ids"),
    Sql("change", lambda f: select(*_cols(changes, CHANGE_COLUMNS)).where(changes.c.id == _b("id")), ("id",)),
    Sql("changes", lambda f: select(*_cols(changes, CHANGE_COLUMNS)).where(changes.c.id.in_(_ids())),
        ("ids",), "ids"),
    Sql("change_ids", lambda f: select(changes.c.id).order_by(changes.c.id)),
    Sql("tasks_of_change", lambda f: _task_select().where(tasks.c.change_id == _b("cid")).order_by(tasks.c.id),
        ("cid",)),
    Sql("task_ids_of_change", lambda f: select(tasks.c.id).where(tasks.c.change_id == _b("cid"))
        .order_by(tasks.c.id), ("cid",)),
    Sql("status_counts", lambda f: select(
        tasks.c.status, func.count(), func.sum(case((tasks.c.clean == false(), 1), else_=0)))
        .where(tasks.c.change_id == _b("cid")).group_by(tasks.c.status), ("cid",)),
    Sql("status_counts_of", lambda f: select(
        tasks.c.change_id, tasks.c.status, func.count(), func.sum(case((tasks.c.clean == false(), 1), else_=0)))
        .where(tasks.c.change_id.in_(_ids())).group_by(tasks.c.change_id, tasks.c.status), ("ids",), "ids"),
    Sql("task_ids_with_status", lambda f: select(tasks.c.id).where(
        tasks.c.change_id == _b("cid"), tasks.c.status == _b("status")).order_by(tasks.c.id), ("cid", "status")),
    Sql("changes_with_waiting_tasks", lambda f: select(tasks.c.change_id).distinct().where(
        UNREADY, tasks.c.status == _s("Wait"), tasks.c.change_id.is_not(None))),
    Sql("linked_task_ids", lambda f: select(tasks.c.id).where(tasks.c.change_id.is_not(None)).order_by(tasks.c.id)),
    Sql("task_count", lambda f: select(func.count()).select_from(tasks)),
    Sql("edges_from", lambda f: select(deps.c.task_id, deps.c.wait_task_id).where(deps.c.task_id.in_(_ids())),
        ("ids",), "ids"),
    Sql("edges_to", lambda f: select(deps.c.task_id, deps.c.wait_task_id).where(deps.c.wait_task_id.in_(_ids())),
        ("ids",), "ids"),
    Sql("lanes", lambda f: select(lanes.c.task_id, lanes.c.lane).where(lanes.c.task_id.in_(_ids())),
        ("ids",), "ids"),
    Sql("log_lines", lambda f: select(task_log.c.time, task_log.c.level, task_log.c.message)
        .where(task_log.c.task_id == _b("tid")).order_by(task_log.c.id.desc()).limit(_b("keep")), ("tid", "keep")),
    Sql("state_value", lambda f: select(state_data.c.value).where(state_data.c.key == _b("key")), ("key",)),
    Sql("warnings", lambda f: select(*_cols(warnings, WARNING_COLUMNS))),
    Sql("notice", lambda f: select(*_cols(notices, NOTICE_COLUMNS)).where(
        notices.c.type == _b("type"), notices.c.key == _b("key")), ("type", "key")),
    # What a waiter asks for: unexpired notices repeated after a time, in the order they were repeated.
    Sql("notices_after", lambda f: select(*_cols(notices, NOTICE_COLUMNS)).where(
        notices.c.last_repeated > _b("after"), notices.c.expire_time >= _b("now"))
        .order_by(notices.c.last_repeated, notices.c.id), ("after", "now")),
    Sql("expired_notices", lambda f: select(notices.c.id).where(notices.c.expire_time < _b("now")), ("now",)),
    # -- the runner's queries: unready tasks only, through the partial indexes
    # "status IN (?)", not "status = ?": SQLite runs it 7 times faster (5 against 36 us, same plan).
    Sql("tasks_in_status", lambda f: _task_select(_t).where(
        UNREADY, _t.c.status.in_([_b("status")]), _t.c.change_id.is_not(None), _t.c.id > _b("after"))
        .order_by(_t.c.id).limit(_b("limit")), ("status", "after", "limit")),
    Sql("started_tasks", lambda f: _task_select(_t).where(
        UNREADY, _t.c.status.in_([_s("Doing"), _s("Undoing")]), _t.c.change_id.is_not(None),
        _t.c.id > _b("after")).order_by(_t.c.id).limit(_b("limit")), ("after", "limit")),
    # The blockers count finds runnable Do tasks through a small partial
    # index (named: without statistics SQLite may prefer another one); the
    # NOT EXISTS check guards against a count gone stale.
    Sql("runnable_do", lambda f: f.hint(_task_select(_t).where(
        text(RUNNABLE_PREDICATE), _t.c.change_id.is_not(None), _t.c.id > _b("after"),
        ~exists().where(_d.c.task_id == _t.c.id, _w.c.id == _d.c.wait_task_id, _w.c.status != _s("Done")))
        .order_by(_t.c.id).limit(_b("limit")), _t, "ix_tasks_runnable"), ("after", "limit")),
    # The same, ids only: a single writer's runner takes the rows its cache holds from the cache.
    Sql("runnable_do_ids", lambda f: f.hint(select(_t.c.id).where(
        text(RUNNABLE_PREDICATE), _t.c.change_id.is_not(None), _t.c.id > _b("after"),
        ~exists().where(_d.c.task_id == _t.c.id, _w.c.id == _d.c.wait_task_id, _w.c.status != _s("Done")))
        .order_by(_t.c.id).limit(_b("limit")), _t, "ix_tasks_runnable"), ("after", "limit")),
    Sql("runnable_undo", lambda f: _task_select(_t).where(
        UNREADY, _t.c.status == _s("Undo"), _t.c.change_id.is_not(None), _t.c.id > _b("after"),
        ~exists().where(_d.c.wait_task_id == _t.c.id, _h.c.id == _d.c.task_id, text(unready_predicate("h."))))
        .order_by(_t.c.id).limit(_b("limit")), ("after", "limit")),
    Sql("halted_by", lambda f: select(deps.c.task_id).distinct().where(deps.c.wait_task_id.in_(_ids())),
        ("ids",), "ids"),
    # Rows whose data was made invalid by hand would fail their CHECK when rewritten: left alone
    # (the runner reports them).
    Sql("stale_blockers", lambda f: select(_t.c.id).where(
        UNREADY, text(KNOWN_STATUS), f.json_valid("data"), _t.c.blockers != _OPEN_WAITS)),
    # A status the engine does not know is not ready: the partial index of unready tasks holds them.
    # No runner query selects them (nor, at the head of a chain, the tasks waiting for them).
    # (Named, as blocked_changes: without statistics SQLite scans every task ever run instead.)
    Sql("unknown_status_tasks", lambda f: f.hint(_task_select().where(
        UNREADY, text(f"NOT ({KNOWN_STATUS})"), tasks.c.change_id.is_not(None)).order_by(tasks.c.id),
        tasks, "ix_tasks_unready")),
    # Named: SQLite otherwise walks ix_tasks_change_id, every task ever run
    # (168 ms a pass with 1,000,000 finished tasks, against 0.005 ms).
    Sql("blocked_changes", lambda f: f.hint(select(tasks.c.change_id).distinct().where(
        UNREADY, text("((status = 'Do' AND blockers > 0) OR status = 'Undo')"), tasks.c.change_id.is_not(None)),
        tasks, "ix_tasks_unready")),
    Sql("unclean_changes", lambda f: f.hint(select(changes.c.id).where(
        changes.c.ready_time.is_not(None), changes.c.clean == false()).order_by(changes.c.id).limit(_b("limit")),
        changes, "ix_changes_unclean"), ("limit",)),
    Sql("unclean_tasks", lambda f: _task_select().where(
        tasks.c.change_id == _b("cid"), tasks.c.clean == false()).order_by(tasks.c.id), ("cid",)),
    # -- prune
    Sql("ready_changes_before", lambda f: select(changes.c.id).where(
        changes.c.ready_time.is_not(None), changes.c.ready_time < _b("before")).order_by(changes.c.id),
        ("before",)),
    Sql("ready_change_count", lambda f: select(func.count()).select_from(changes).where(
        changes.c.ready_time.is_not(None))),
    Sql("oldest_ready_changes", lambda f: select(changes.c.id).where(
        changes.c.ready_time.is_not(None), changes.c.ready_time >= _b("since"))
        .order_by(changes.c.ready_time, changes.c.id).limit(_b("limit")), ("since", "limit")),
    Sql("unready_changes", lambda f: select(
        changes.c.id, changes.c.spawn_time,
        select(func.count()).select_from(tasks).where(tasks.c.change_id == changes.c.id).scalar_subquery())
        .where(changes.c.ready_time.is_(None)).order_by(changes.c.id)),
    Sql("orphan_tasks_before", lambda f: select(tasks.c.id).where(
        tasks.c.change_id.is_(None), tasks.c.spawn_time < _b("before")), ("before",)),
    # -- writes (inside a write transaction)
    Sql("insert_changes", lambda f: insert(changes).values(_values(CHANGE_COLUMNS)), CHANGE_COLUMNS),
    Sql("update_changes", lambda f: update(changes).values(_values(CHANGE_COLUMNS[1:]))
        .where(changes.c.id == _b("cid")), (*CHANGE_COLUMNS[1:], "cid")),
    Sql("insert_tasks", lambda f: insert(tasks).values(_values(TASK_COLUMNS)), TASK_COLUMNS),
    # The same with its blockers count (a new task with values that waits: no recount_blockers statement for it).
    Sql("insert_tasks_counted", lambda f: insert(tasks).values(_values(TASK_COUNTED_COLUMNS)), TASK_COUNTED_COLUMNS),
    # A task as new_task made it: five values bound instead of nineteen, the rest written as constants (not left
    # to the columns' defaults); 10.0 -> 7.3 us a row in SQLite (W1's 10,000 tasks).
    Sql("insert_new_tasks", lambda f: insert(tasks).values(
        **_values(NEW_TASK_COLUMNS), status=_s("Do"), waited_status=_s("Done"), clean=false(), data=_s("{}"),
        doing_time=literal_column("0"), undoing_time=literal_column("0"), attempts=literal_column("0"),
        retry_attempts=literal_column("0")), NEW_TASK_COLUMNS),
    # The same with its blockers count (a chain's tasks: no recount_blockers statement for them).
    Sql("insert_counted_tasks", lambda f: insert(tasks).values(
        **_values(COUNTED_TASK_COLUMNS), status=_s("Do"), waited_status=_s("Done"), clean=false(), data=_s("{}"),
        doing_time=literal_column("0"), undoing_time=literal_column("0"), attempts=literal_column("0"),
        retry_attempts=literal_column("0")), COUNTED_TASK_COLUMNS),
    Sql("update_tasks", lambda f: update(tasks).values(_values(TASK_COLUMNS[1:]))
        .where(tasks.c.id == _b("tid")), (*TASK_COLUMNS[1:], "tid")),
    Sql("update_change_status", lambda f: update(changes).values(status=_b("status"))
        .where(changes.c.id == _b("cid"), f.json_valid("data")), ("status", "cid")),
    Sql("insert_edges", lambda f: f.insert_ignore(deps).values(task_id=_b("tid"), wait_task_id=_b("wid")),
        ("tid", "wid")),
    Sql("insert_lanes", lambda f: f.insert_ignore(lanes).values(task_id=_b("tid"), lane=_b("lane")),
        ("tid", "lane")),
    Sql("insert_log", lambda f: insert(task_log).values(_values(("task_id", "time", "level", "message"))),
        ("task_id", "time", "level", "message")),
    Sql("trim_log", lambda f: delete(task_log).where(
        task_log.c.task_id == _b("tid"), task_log.c.id.not_in(
            select(task_log.c.id).where(task_log.c.task_id == _b("tid2")).order_by(task_log.c.id.desc())
            .limit(_b("keep")).scalar_subquery())), ("tid", "tid2", "keep")),
    Sql("delete_state_value", lambda f: delete(state_data).where(state_data.c.key == _b("key")), ("key",)),
    Sql("upsert_state_value", lambda f: f.upsert(state_data, ("key",), ("key", "value")), ("key", "value")),
    Sql("delete_warning", lambda f: delete(warnings).where(warnings.c.message == _b("message")), ("message",)),
    Sql("upsert_warning", lambda f: f.upsert(warnings, ("message",), WARNING_COLUMNS), WARNING_COLUMNS),
    Sql("upsert_notice", lambda f: f.upsert(notices, ("type", "key"), NOTICE_COLUMNS), NOTICE_COLUMNS),
    # An occurrence of a notice already stored: its id and first occurrence stay (the row is not moved).
    Sql("update_notice", lambda f: update(notices).values(_values(NOTICE_COLUMNS[4:]))
        .where(notices.c.id == _b("nid")), (*NOTICE_COLUMNS[4:], "nid")),
    Sql("delete_notices", lambda f: delete(notices).where(notices.c.id.in_(_ids())), ("ids",), "ids"),
    Sql("upsert_sequence", lambda f: f.upsert(sequences, ("name",), ("name", "last_id")), ("name", "last_id")),
    # Rows with a status the schema does not know (hand-edited) are left
    # alone: rewriting them would fail their CHECK constraint. (No alias on
    # the updated table: SQLite before 3.33 does not take one.)
    Sql("recount_blockers", lambda f: _recount(f, tasks.c.id.in_(_ids())), ("ids",), "ids"),
    # The same for the tasks that wait for ids (the tasks that became Done or stopped being Done).
    Sql("recount_halted", lambda f: _recount(f, tasks.c.id.in_(
        select(deps.c.task_id).where(deps.c.wait_task_id.in_(_ids())))), ("ids",), "ids"),
    Sql("delete_changes", lambda f: delete(changes).where(changes.c.id.in_(_ids())), ("ids",), "ids"),
    Sql("delete_tasks", lambda f: delete(tasks).where(tasks.c.id.in_(_ids())), ("ids",), "ids"),
    # Timings (engine.timings): a change's task runs, oldest first (through the view, a row per run); a batch
    # of a change's runs written, unless the change is gone (pruned meanwhile, by this process or another);
    # a change's batches read, rewritten and deleted to trim a task's oldest runs; the newest rows of slow
    # ensure passes kept.
    Sql("task_timings_of_change", lambda f: text(
        "SELECT v.task_id, t.kind, " + ", ".join(f"v.{n}" for n in TASK_TIMING_COLUMNS[1:])
        + " FROM task_timings v JOIN tasks t ON t.id = v.task_id WHERE v.change_id = :cid"
        " ORDER BY v.batch_id, v.seq"), ("cid",)),
    Sql("insert_task_timing_batch", lambda f: insert(timing_batches).from_select(
        ["change_id", "runs"], select(changes.c.id, bindparam("runs", type_=timing_batches.c.runs.type))
        .where(changes.c.id == _b("cid"))), ("runs", "cid")),
    Sql("last_timing_batch", lambda f: select(func.coalesce(func.max(timing_batches.c.id), 0))),
    Sql("timing_batches_of_change", lambda f: select(timing_batches.c.id, timing_batches.c.runs)
        .where(timing_batches.c.change_id == _b("cid")).order_by(timing_batches.c.id), ("cid",)),
    Sql("update_timing_batch", lambda f: update(timing_batches).where(timing_batches.c.id == _b("bid"))
        .values(runs=_b("new_runs")), ("new_runs", "bid")),
    Sql("delete_timing_batches", lambda f: delete(timing_batches).where(timing_batches.c.id.in_(_ids())),
        ("ids",), "ids"),
    Sql("ensure_timings", lambda f: select(*_cols(ensure_timings, ENSURE_TIMING_COLUMNS))
        .order_by(ensure_timings.c.id)),
    Sql("insert_ensure_timings", lambda f: insert(ensure_timings).values(_values(ENSURE_TIMING_COLUMNS)),
        ENSURE_TIMING_COLUMNS),
    Sql("trim_ensure_timings", lambda f: delete(ensure_timings).where(
        ensure_timings.c.id <= select(func.max(ensure_timings.c.id)).scalar_subquery() - _b("keep")), ("keep",)),
]


def _claim_key(f: Forms) -> Any:
    """_claim_key inserts a key, or takes over an expired one; it returns the change id it now names, or no row.

    One statement, so that two hosts racing on a key cannot both insert it:
    the second waits for the first's transaction (PostgreSQL) and then finds
    the key taken (ON CONFLICT, the WHERE false: no row returned).
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert: Any = postgresql.insert if f.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(change_keys).values(key=_b("key"), change_id=_b("cid"), expire_time=_b("expire"))
    return stmt.on_conflict_do_update(
        index_elements=["key"], set_={"change_id": stmt.excluded.change_id, "expire_time": stmt.excluded.expire_time},
        where=change_keys.c.expire_time < _b("now")).returning(change_keys.c.change_id)


def _queued(f: Forms) -> Any:
    """_queued is the predicate of ix_change_affects_queued, word for word (SQLite picks the index then)."""
    return text("queued") if f.name == "postgresql" else text("queued = 1")


_a = affects.alias("a")
_o = affects.alias("o")
_oc = changes.alias("oc")

# -- idempotency keys and affected keys (engine.keys)
STATEMENTS += [
    Sql("claim_change_key", _claim_key, ("key", "cid", "expire", "now")),
    Sql("change_of_key", lambda f: select(change_keys.c.change_id).where(
        change_keys.c.key == _b("key"), change_keys.c.expire_time >= _b("now")), ("key", "now")),
    Sql("key_of_change", lambda f: select(change_keys.c.key).where(
        change_keys.c.change_id == _b("cid"), change_keys.c.expire_time >= _b("now")), ("cid", "now")),
    Sql("expired_change_keys", lambda f: delete(change_keys).where(
        change_keys.c.expire_time < _b("now")), ("now",)),
    Sql("delete_change_keys", lambda f: delete(change_keys).where(change_keys.c.change_id.in_(_ids())),
        ("ids",), "ids"),
    Sql("insert_affects", lambda f: f.insert_ignore(affects).values(
        key=_b("key"), change_id=_b("cid"), queued=_b("queued")), ("key", "cid", "queued")),
    Sql("affects_of_change", lambda f: select(affects.c.key).where(affects.c.change_id == _b("cid"))
        .order_by(affects.c.key), ("cid",)),
    # Does anything unready affect these keys? The primary key (key, change_id) finds the changes, their
    # stored status says which are unready: no task is read.
    Sql("unready_affecting", lambda f: select(affects.c.change_id, affects.c.key).distinct()
        .select_from(affects.join(changes, changes.c.id == affects.c.change_id))
        .where(affects.c.key.in_(_ids("keys")), text(unready_predicate("changes.")))
        .order_by(affects.c.change_id), ("keys",), "keys"),
    Sql("queued_changes", lambda f: select(affects.c.change_id).distinct().where(_queued(f))),
    # The queued changes that must wait still: an older unready change affects one of their keys.
    Sql("held_changes", lambda f: select(_a.c.change_id).distinct()
        .select_from(_a.join(_o, (_o.c.key == _a.c.key) & (_o.c.change_id < _a.c.change_id))
                     .join(_oc, _oc.c.id == _o.c.change_id))
        .where(_a.c.change_id.in_(_ids()), text(unready_predicate("oc."))), ("ids",), "ids"),
    Sql("unqueue_changes", lambda f: update(affects).values(queued=false()).where(
        affects.c.change_id.in_(_ids())), ("ids",), "ids"),
    Sql("delete_affects", lambda f: delete(affects).where(affects.c.change_id.in_(_ids())), ("ids",), "ids"),
    # -- repair (engine.repair): a change retried is unready again
    Sql("reopen_change", lambda f: update(changes).values(ready_time=None, clean=false(), explicit_status=None)
        .where(changes.c.id == _b("cid")), ("cid",)),
]

# -- events, concurrency slots, schedules (engine.events, engine.concurrency, engine.schedules) ----------

#: The columns of a schedule row (engine.schedules).
SCHEDULE_COLUMNS = ("name", "spec", "template", "paused", "missed", "next_time", "last_time", "created")
_LIVE = "t.status IN ('Doing','Undoing','Abort') AND t.lease_until > extract(epoch from clock_timestamp())"

STATEMENTS += [
    # PostgreSQL only: serialises, until commit, the transactions that look at one key (emit and park;
    # the claims of one concurrency key; the runs of one schedule).
    Sql("lock_key", lambda f: text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), ("key",)),
    Sql("try_lock_key", lambda f: text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))"), ("key",)),
    Sql("insert_event", lambda f: insert(events).values(_values(("key", "data", "time"))), ("key", "data", "time")),
    Sql("last_event", lambda f: select(func.max(events.c.id)).where(events.c.key == _b("key")), ("key",)),
    Sql("events_after", lambda f: select(events.c.id, events.c.data).where(
        events.c.key == _b("key"), events.c.id > _b("after")).order_by(events.c.id).limit(1), ("key", "after")),
    Sql("delete_old_events", lambda f: delete(events).where(events.c.time < _b("before")), ("before",)),
    Sql("upsert_event_wait", lambda f: f.upsert(event_waits, ("task_id",), (
        "task_id", "key", "deadline", "on_timeout", "delivered", "data")),
        ("task_id", "key", "deadline", "on_timeout", "delivered", "data")),
    Sql("event_wait", lambda f: select(event_waits.c.key, event_waits.c.delivered, event_waits.c.data)
        .where(event_waits.c.task_id == _b("task_id")), ("task_id",)),
    Sql("event_waiters", lambda f: select(event_waits.c.task_id).where(
        event_waits.c.key == _b("key"), event_waits.c.delivered == false()).order_by(event_waits.c.task_id),
        ("key",)),
    Sql("deliver_event", lambda f: update(event_waits).values(delivered=True, data=_b("data"))
        .where(event_waits.c.task_id == _b("task_id")), ("data", "task_id")),
    Sql("delete_event_wait", lambda f: delete(event_waits).where(event_waits.c.task_id == _b("task_id")),
        ("task_id",)),
    Sql("due_event_waits", lambda f: select(event_waits.c.task_id, event_waits.c.key, event_waits.c.on_timeout,
                                            event_waits.c.deadline)
        .where(event_waits.c.deadline.is_not(None), event_waits.c.delivered == false(),
               event_waits.c.deadline <= _b("now")).order_by(event_waits.c.task_id), ("now",)),
    Sql("next_event_deadline", lambda f: select(func.min(event_waits.c.deadline)).where(
        event_waits.c.deadline.is_not(None), event_waits.c.delivered == false())),
    # PostgreSQL only: the slots of a key that other runners hold now (a task running under a live lease).
    Sql("live_slots", lambda f: text(
        "SELECT count(*) FROM concurrency_slots s JOIN tasks t ON t.id = s.task_id "
        f"WHERE s.key = :key AND {_LIVE} AND t.runner IS DISTINCT FROM :me"), ("key", "me")),
    Sql("slot_starts", lambda f: select(slots.c.started).where(
        slots.c.key == _b("key"), slots.c.started > _b("since")).order_by(slots.c.started), ("key", "since")),
    Sql("upsert_slot", lambda f: f.upsert(slots, ("task_id",), ("task_id", "key", "started")),
        ("task_id", "key", "started")),
    Sql("schedules", lambda f: select(*_cols(schedules, SCHEDULE_COLUMNS)).order_by(schedules.c.name)),
    Sql("schedule", lambda f: select(*_cols(schedules, SCHEDULE_COLUMNS)).where(schedules.c.name == _b("name")),
        ("name",)),
    Sql("due_schedules", lambda f: select(*_cols(schedules, SCHEDULE_COLUMNS)).where(
        schedules.c.paused == false(), schedules.c.next_time <= _b("now")).order_by(schedules.c.name), ("now",)),
    Sql("next_schedule", lambda f: select(func.min(schedules.c.next_time)).where(schedules.c.paused == false())),
    Sql("upsert_schedule", lambda f: f.upsert(schedules, ("name",), SCHEDULE_COLUMNS), SCHEDULE_COLUMNS),
    Sql("delete_schedule", lambda f: delete(schedules).where(schedules.c.name == _b("name")), ("name",)),
    Sql("set_schedule_run_change", lambda f: update(schedule_runs).values(change_id=_b("change_id")).where(
        schedule_runs.c.name == _b("name"), schedule_runs.c.slot == _b("slot")), ("change_id", "name", "slot")),
    Sql("delete_old_schedule_runs", lambda f: delete(schedule_runs).where(schedule_runs.c.time < _b("before")),
        ("before",)),
    Sql("insert_schedule_run", lambda f: f.insert_ignore(schedule_runs).values(
        _values(("name", "slot", "change_id", "time"))), ("name", "slot", "change_id", "time")),
]

BY_NAME: dict[str, Sql] = {s.name: s for s in STATEMENTS}
