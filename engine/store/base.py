# SPDX-License-Identifier: GPL-3.0-or-later
"""Store: what the engine asks of a database, as verbs; the only way the rest of the engine reaches one.

The unit of work reads rows and writes what changed in one transaction per
commit (its change set as one ChangeSetWrite, with write); the runner finds
runnable tasks; prune finds and deletes old rows; managers' own tables are
read and written with Core statements (engine.tables). Rows travel as
tuples in the column orders of engine.store.statements (TASK_COLUMNS, CHANGE_COLUMNS ...);
an update's row is those columns rotated, id last. Driver errors leave a
store as DatabaseError subclasses that say what failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

Row = tuple[Any, ...]
_NONE: Mapping[str, Any] = MappingProxyType({})


class ChangeSetWrite:
    """ChangeSetWrite is what one flush of a unit of work writes (engine.changeset), for Store.write.

    Its fields are in the order the store writes them, which matters: a
    task's row after its change's (foreign keys), the blockers counts after
    the edges and the tasks' statuses they count, the PostgreSQL row locks
    always taken in the same order. Rows are in the column orders of
    engine.store.statements; an update's row is those columns rotated, id
    last; a field left alone keeps its empty default (a flush makes no list
    for what it does not write).
    settle, when set, is called once everything before change_updates is
    written and fills change_updates, statuses and sequences: a change's
    status is computed from its tasks and edges, which it may read back.
    """

    #: New changes and tasks; tasks rewritten.
    changes: Sequence[Row] = ()
    tasks: Sequence[Row] = ()
    #: The same with their blockers count last (statements.TASK_COUNTED_COLUMNS, insert_tasks_counted): a single
    #: writer's new tasks that wait, counted from its cache (not recounted).
    tasks_counted: Sequence[Row] = ()
    #: New tasks as new_task made them, in the columns of statements.NEW_TASK_COLUMNS (insert_new_tasks).
    new_tasks: Sequence[Row] = ()
    #: The same with their blockers count last (statements.COUNTED_TASK_COLUMNS, insert_counted_tasks): a single
    #: writer's new tasks that wait, counted from its cache (not recounted).
    counted_tasks: Sequence[Row] = ()
    task_updates: Sequence[Row] = ()
    #: Tasks rewritten in part (a single writer's): (the indexes in TASK_COLUMNS of the columns written, their
    #: rows: those columns' values, then the id).
    task_changes: Sequence[tuple[tuple[int, ...], Sequence[Row]]] = ()
    #: New (task, wait task) edges.
    edges: Sequence[tuple[int, int]] = ()
    #: Tasks whose blockers count is computed again, and tasks that became Done or stopped being Done
    #: (what waits for them is counted again too; recount_blockers is skipped when both are empty).
    recount: Sequence[int] = ()
    halted_by: Sequence[int] = ()
    #: New (task, lane) rows.
    lanes: Sequence[tuple[int, int]] = ()
    #: Tasks that stopped running: their leases end (shared stores).
    ended: Sequence[int] = ()
    #: Log lines (task, time, level, message) appended; the tasks whose logs are trimmed to log_keep lines.
    log: Sequence[tuple[int, str, str, str]] = ()
    log_trim: Sequence[int] = ()
    log_keep: int = 0
    settle: Callable[[ChangeSetWrite], None] | None
    #: Changes rewritten; computed statuses stored, as (status, change id).
    change_updates: Sequence[Row] = ()
    statuses: Sequence[tuple[str, int]] = ()
    #: State keys upserted (None: deleted).
    values: Mapping[str, str | None] = _NONE
    #: The last ids handed out, by sequence (a single writer's; shared stores take ids from the database).
    sequences: Mapping[str, int] = _NONE

    def __init__(self, settle: Callable[[ChangeSetWrite], None] | None = None) -> None:
        self.settle = settle


class Store(Protocol):
    """Store is one State's link to its database (engine.store.sqlite, engine.store.postgresql)."""

    #: What the database is called in messages (a path, or a URL without its password).
    target: str
    #: Why nothing may be written (a read-only or fenced State), or None.
    refusal: str | None
    #: shared says whether other hosts write the same database (PostgreSQL): the cache lives
    #: one unit of work, ids come from the database, tasks are claimed under leases.
    shared: bool
    #: The runner that claims through this store, and its lease in seconds (shared stores).
    runner_id: str | None
    lease: float
    #: notify asks the commit to wake the other hosts' loops (shared stores).
    notify: bool
    #: notify_notices asks the commit to wake the other hosts' notice waiters (shared stores).
    notify_notices: bool

    # -- the transaction of a unit of work --------------------------------------------

    @property
    def in_write(self) -> bool:
        """in_write says whether a write transaction is open."""

    def begin_write(self, relaxed: bool = False) -> None:
        """begin_write opens the write transaction (relaxed: it may commit without its own sync)."""

    def commit(self) -> None:
        """commit ends the write transaction."""

    def rollback(self) -> None:
        """rollback abandons the write transaction, if one is open."""

    # -- the life of the link --------------------------------------------------------------

    def refresh(self) -> bool:
        """refresh, at the start of a unit of work, says whether others wrote since (the cache must go)."""

    def check_read(self) -> None:
        """check_read, at the end of a unit of work, raises DatabaseBusyError if what it read may be torn."""

    def replaced(self) -> str | None:
        """replaced says why this writer may never commit again: its path names another file now (SQLite)."""

    def fence(self, *, tidy: bool = True) -> None:
        """fence lets another writer take the database (a stopped overlord); this link may still read.

        tidy first leaves the database self-contained (SQLite: the log checkpointed).
        """

    def close(self, *, tidy: bool) -> None:
        """close closes the link; tidy also leaves the database self-contained (a writer's checkpoint)."""

    # -- reads --------------------------------------------------------------------------

    def sequences(self, *, quiet: bool = False) -> dict[str, int]:
        """sequences returns the last ids handed out, never below the largest ids in use (quiet: say nothing)."""

    def task_rows(self, ids: Sequence[int]) -> list[Row]:
        """task_rows loads tasks by id."""

    def change_row(self, cid: int) -> Row | None:
        """change_row loads one change."""

    def change_rows(self, ids: Sequence[int]) -> list[Row]:
        """change_rows loads changes by id."""

    def change_ids(self) -> list[int]:
        """change_ids lists every change."""

    def tasks_of_change(self, cid: int) -> list[Row]:
        """tasks_of_change loads all the tasks of one change."""

    def each_task_of_change(self, cid: int, page: int = 256) -> Iterator[Row]:
        """each_task_of_change yields the tasks of one change a page at a time."""

    def task_ids_of_change(self, cid: int) -> list[int]:
        """task_ids_of_change lists the ids of the tasks of one change."""

    def status_counts(self, cid: int) -> tuple[dict[str, int], int]:
        """status_counts counts the tasks of a change by status, and the unclean ones."""

    def status_counts_of(self, ids: Sequence[int]) -> dict[int, tuple[dict[str, int], int]]:
        """status_counts_of is status_counts for several changes in one query (a change without tasks: absent)."""

    def task_ids_with_status(self, cid: int, status: str) -> list[int]:
        """task_ids_with_status lists the tasks of a change that have a status (as stored)."""

    def changes_with_waiting_tasks(self) -> list[int]:
        """changes_with_waiting_tasks lists the changes that have tasks in Wait."""

    def linked_task_ids(self) -> list[int]:
        """linked_task_ids lists every task that belongs to a change."""

    def task_count(self) -> int:
        """task_count counts every task, in a change or not."""

    def edges_touching(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """edges_touching returns every (task, wait task) edge with an end in ids."""

    def lanes(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """lanes returns the (task, lane) rows of the given tasks."""

    def log_lines(self, tid: int, keep: int) -> list[tuple[str, str, str]]:
        """log_lines returns the last keep log lines of a task, oldest first."""

    def state_value(self, key: str) -> str | None:
        """state_value returns the JSON text stored under key."""

    def warning_rows(self) -> list[Row]:
        """warning_rows loads every warning."""

    def notice_row(self, type: str, key: str) -> Row | None:
        """notice_row loads the notice of a type and key."""

    def notice_rows(self, after: str, now: str) -> list[Row]:
        """notice_rows loads the notices repeated after a time and not expired at now, oldest repeat first."""

    def expired_notices(self, now: str) -> list[int]:
        """expired_notices lists the notices expired at now."""

    def task_timings(self, cid: int) -> list[Row]:
        """task_timings loads the runs of a change's tasks, oldest first: task id, kind, TASK_TIMING_COLUMNS[1:]."""

    def timing_batches(self, cid: int) -> list[Row]:
        """timing_batches loads the batches of a change's task runs, oldest first: id, runs (JSON text)."""

    def last_timing_batch(self) -> int:
        """last_timing_batch is the id of the newest batch of task runs (0: none)."""

    def ensure_timings(self) -> list[Row]:
        """ensure_timings loads the kept rows of slow ensure passes, oldest first (ENSURE_TIMING_COLUMNS)."""

    def read_rows(self, statement: Any, params: Mapping[str, Any] | None = None) -> list[Row]:
        """read_rows runs a Core SELECT on a manager's table (engine.tables); params give its bindparam() values."""

    # -- the runner's queries -------------------------------------------------------------

    def tasks_in_status(self, status: str, after_id: int, limit: int) -> list[Row]:
        """tasks_in_status pages through the unready tasks of changes with a status, by id."""

    def started_tasks(self, after_id: int, limit: int) -> list[Row]:
        """started_tasks pages through Doing and Undoing tasks (left over from a previous run), by id."""

    def runnable_do(self, after_id: int, limit: int) -> list[Row]:
        """runnable_do pages through Do tasks whose wait tasks are all Done."""

    def runnable_do_ids(self, after_id: int, limit: int) -> list[int]:
        """runnable_do_ids is runnable_do's ids alone (a single writer's: no claim)."""

    def runnable_undo(self, after_id: int, limit: int) -> list[Row]:
        """runnable_undo pages through Undo tasks whose halt tasks are all ready."""

    def halted_by(self, ids: Sequence[int]) -> list[int]:
        """halted_by lists the tasks that wait for any of ids."""

    def stale_blockers(self) -> list[int]:
        """stale_blockers lists unready tasks whose blockers count is wrong."""

    def unknown_status_tasks(self) -> list[Row]:
        """unknown_status_tasks loads the tasks of changes whose status the engine does not know (hand-edited)."""

    def blocked_changes(self) -> list[int]:
        """blocked_changes lists the changes with Do tasks waiting for others, or with Undo tasks."""

    def cycle_suspects(self) -> list[int]:
        """cycle_suspects lists the blocked changes a cycle of waiting tasks could go through (all, or fewer)."""

    def unclean_changes(self, limit: int | None = None) -> list[int]:
        """unclean_changes lists ready changes with tasks left to clean."""

    def unclean_tasks(self, cid: int) -> list[Row]:
        """unclean_tasks loads the tasks of a change that are not clean yet."""

    # -- prune ---------------------------------------------------------------------------------

    def ready_changes_before(self, before: str) -> list[int]:
        """ready_changes_before lists the changes that became ready before a time."""

    def ready_change_count(self) -> int:
        """ready_change_count counts the ready changes."""

    def oldest_ready_changes(self, since: str, limit: int) -> list[int]:
        """oldest_ready_changes lists up to limit changes ready since a time, oldest first."""

    def unready_changes(self) -> list[tuple[int, Any, int]]:
        """unready_changes lists (id, spawn time, task count) of every change not ready yet."""

    def orphan_tasks_before(self, before: str) -> list[int]:
        """orphan_tasks_before lists tasks in no change spawned before a time."""

    def delete_changes(self, ids: Sequence[int]) -> None:
        """delete_changes deletes changes, their tasks going with them."""

    def delete_tasks(self, ids: Sequence[int]) -> None:
        """delete_tasks deletes tasks."""

    # -- writes (inside begin_write) ----------------------------------------------------

    def write(self, changes: ChangeSetWrite) -> None:
        """write writes what a unit of work's flush changed (ChangeSetWrite), in its fields' order."""

    def update_changes(self, rows: Sequence[Row]) -> None:
        """update_changes rewrites changes (rows rotated, id last): a shared store's commit (engine.shared)."""

    def recount_blockers(self, ids: Sequence[int], halted_by: Sequence[int] = ()) -> None:
        """recount_blockers recomputes the blockers count of the given tasks, and of those waiting for halted_by."""

    def save_warnings(self, rows: Sequence[Row], deleted: Sequence[str]) -> None:
        """save_warnings upserts warnings and deletes the given ones."""

    def save_notices(self, rows: Sequence[Row], deleted: Sequence[int], updates: Sequence[Row] = ()) -> None:
        """save_notices deletes the given notices, upserts rows by type and key, and applies updates.

        An update is NOTICE_COLUMNS[4:] then the id (a notice already stored).
        """

    def save_timings(self, batches: Sequence[Row], passes: Sequence[Row], keep_passes: int | None) -> None:
        """save_timings appends batches of task runs (runs as JSON text, change id; those of changes gone are
        dropped) and ensure rows (ENSURE_TIMING_COLUMNS), then keeps the newest keep_passes of those (None: no
        trim)."""

    def rewrite_timing_batches(self, updates: Sequence[Row], deleted: Sequence[int]) -> None:
        """rewrite_timing_batches replaces the runs of batches (runs, id) and deletes batches (a trim)."""

    def write_rows(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """write_rows runs a Core INSERT, UPDATE or DELETE on a manager's table once per row (engine.tables)."""

    def upsert_statement(self, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """upsert_statement is this backend's INSERT of columns that updates the row whose keys exist."""

    # -- several hosts (shared stores; a single writer's store does nothing) ---------------------

    def next_id(self, name: str) -> int:
        """next_id hands out the next id of a sequence straight from the database."""

    def locked_change_rows(self, ids: Sequence[int]) -> list[Row]:
        """locked_change_rows locks change rows until the end of the unit of work and reads them afresh."""

    def counts_besides(self, cid: int, held: Sequence[int]) -> tuple[dict[str, int], int]:
        """counts_besides is status_counts of the tasks of a change other than held, or (a shared store's) what a
        status needs of them: 1 for an unready status some have, the counts where none is unready."""

    def keep_changes(self, statuses: Mapping[int, str], settle: Sequence[int] = ()) -> set[int]:
        """keep_changes share-locks change rows and returns those that have the given status and keep it.

        (The status a unit of work cannot move: engine.shared; those not
        returned are settled under the rows' exclusive locks. settle: the
        other changes the commit settles, which a store may lock with these.)
        """

    def runners_of(self, ids: Sequence[int]) -> dict[int, str | None]:
        """runners_of says which runner holds the lease of each task."""

    def expired_leases(self) -> list[int]:
        """expired_leases lists running tasks whose lease ran out."""

    def lease_expired(self, tid: int) -> bool:
        """lease_expired says whether a task's lease is still out, once the task is locked."""

    def heartbeat(self, runner: str, lease: float) -> int:
        """heartbeat extends the leases of a runner's running tasks; it returns how many."""

    def release_claims(self, kept: Sequence[int], *, others: bool = False) -> None:
        """release_claims gives back the leases a pass took on tasks it did not start.

        others: tasks were left runnable for want of workers here; the commit wakes the other hosts.
        """

    def claim_cleanup(self, tid: int) -> bool:
        """claim_cleanup takes a lease on a task for its cleanup handler; False: another runner has it."""

    # -- idempotency keys and affected keys (engine.keys)

    def claim_change_key(self, key: str, cid: int, expire: str, now: str) -> int | None:
        """claim_change_key makes key name change cid unless another unexpired change has it (cid or None)."""

    def change_of_key(self, key: str, now: str) -> int | None:
        """change_of_key returns the change an unexpired key names, or None."""

    def key_of_change(self, cid: int, now: str) -> str | None:
        """key_of_change returns the unexpired key that names a change, or None."""

    def delete_expired_change_keys(self, now: str) -> int:
        """delete_expired_change_keys deletes the keys expired at now."""

    def insert_affects(self, rows: Sequence[tuple[str, int, bool]]) -> None:
        """insert_affects records (key, change id, queued) rows."""

    def affects_of_change(self, cid: int) -> list[str]:
        """affects_of_change lists the keys a change affects."""

    def unready_affecting(self, keys: Sequence[str]) -> list[tuple[int, str]]:
        """unready_affecting lists (change id, key) for the unready changes affecting keys."""

    def queued_changes(self) -> list[int]:
        """queued_changes lists the changes still marked queued."""

    def held_changes(self, ids: Sequence[int]) -> list[int]:
        """held_changes lists those of ids that an older unready change sharing a key holds back."""

    def unqueue_changes(self, ids: Sequence[int]) -> None:
        """unqueue_changes marks changes as no longer queued."""

    def reopen_change(self, cid: int) -> None:
        """reopen_change makes a ready change's row unready again (a retry)."""
