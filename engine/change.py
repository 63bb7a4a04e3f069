# SPDX-License-Identifier: GPL-3.0-or-later
"""Change: a user-visible operation made of tasks; the rules of its status (the status order, the
Wait rule); aborting its lanes; the dependency cycles that keep tasks from ever running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._records import ChangeRec
from ._values import MISSING, check_key, get_value, set_value
from .errors import ChangeError, DatabaseConflictError, EngineError, TaskDependencyCycleError
from .keys import check_keys
from .repair import ATTEMPT_KEY, retry_change
from .status import Status
from .statusrules import abort_lanes, abort_tasks, mark_ready, notify_change
from .task import Task, TaskSet, record_of, task_id_of, work_of

if TYPE_CHECKING:
    from ._records import TaskRec
    from ._work import Work
    from .state import State
    from .timings import TaskTiming

log = logging.getLogger("engine.change")

#: How often wait_ready looks again on a shared store (another host may finish the change).
_SHARED_POLL = 0.2


def _after_running(w: Work, trec: TaskRec) -> bool:
    """_after_running says whether a task added to a change cannot run before a running task's outcome.

    Such a task (in Do, waiting for a task in Doing, and waited for by none,
    so in no cycle) is the next step a handler adds after its own task: the
    commit that adds it need not wake the overlord's loop, whose pass would
    find nothing to run; the outcome of the running task hands it on, or
    wakes the loop, as for a task added with the change.
    """
    if trec.status is not Status.DO or w.records.halt_ids(trec):
        return False
    waits = w.records.wait_ids(trec)
    return bool(waits) and any(r.status is Status.DOING for r in w.records.trecs(list(waits)))


class Change:
    """Change groups the tasks that together perform one operation.

    Its status is computed from its tasks unless set explicitly. Obtain
    changes from State.new_change, State.change or State.changes.
    """

    __slots__ = ("_cid", "_w")

    def __init__(self, w: Work, cid: int) -> None:
        self._w = w
        self._cid = cid

    def __repr__(self) -> str:
        return f"<Change {self._cid}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and other._w is self._w and other._cid == self._cid

    def __hash__(self) -> int:
        return hash((id(self._w), "change", self._cid))

    def _rec(self) -> ChangeRec:
        self._w.check()
        return self._w.records.crec(self._cid)

    def _owned(self) -> ChangeRec:
        # What people set on a change is read under its row lock on a shared store (engine.shared).
        rec = self._rec()
        self._w.own_change(rec)
        return rec

    @property
    def state(self) -> State:
        """state is the State the change belongs to (no lock needed)."""
        state: State = self._w.state
        return state

    @property
    def id(self) -> str:
        """id is the change's id, a string of decimal digits."""
        self._w.check()
        return str(self._cid)

    @property
    def kind(self) -> str:
        """kind says what the change does, for managers to recognise it."""
        return self._rec().kind

    @property
    def summary(self) -> str:
        """summary describes the change for people."""
        return self._rec().summary

    @property
    def status(self) -> Status:
        """status is the explicit status, or the one computed from the tasks (snapd's rules)."""
        return self._w.change_status(self._rec())

    def set_status(self, status: Status) -> None:
        """set_status overrides the computed status; Status.DEFAULT restores it."""
        rec = self._rec()
        w = self._w
        if not isinstance(status, Status):
            raise TypeError(f"cannot set status of change {self._cid}: {status!r} is not a Status")
        w.own_change(rec)
        if w.change_hooks and rec.observed is None:
            rec.observed = w.change_status(rec)
        rec.explicit = None if status is Status.DEFAULT else status
        w.dirty_change(rec)
        w.touch(rec.id)
        if status.ready:
            mark_ready(w, rec)
        if w.change_hooks:
            notify_change(w, rec)
        else:
            rec.observed = None

    def get(self, key: str, default: Any = MISSING) -> Any:
        """get returns the JSON value stored under key (NoStateError if missing)."""
        rec = self._owned()
        return get_value(rec.data.items(f"change {self._cid}"), check_key(key, f"change {self._cid}"), default)

    def set(self, key: str, value: Any) -> None:
        """set stores a JSON-serialisable value under key; None deletes the key."""
        rec = self._owned()
        set_value(rec.data.mutable(f"change {self._cid}"), key, value, f"change {self._cid}")
        self._w.dirty_change(rec)

    def has(self, key: str) -> bool:
        """has returns whether a value is stored under key."""
        return check_key(key, f"change {self._cid}") in self._owned().data.items(f"change {self._cid}")

    def keys(self) -> list[str]:
        """keys returns the keys under which values are stored on the change, sorted."""
        return sorted(self._owned().data.items(f"change {self._cid}"))

    def add_task(self, task: Task) -> None:
        """add_task makes task part of this change."""
        rec = self._rec()
        w = self._w
        if work_of(task) is not w:
            raise EngineError(f"cannot add task {task_id_of(task)} to change {rec.id}: it belongs to another State")
        trec = record_of(task)
        if trec.change_id is not None:
            raise EngineError(
                f"cannot add task {trec.id} ({trec.kind}) to change {rec.id}: "
                f"it already belongs to change {trec.change_id}"
            )
        # (The change's counts and ids read directly once loaded: every task of a submit.)
        counts = rec.counts if rec.counts is not None else w.records.counts(rec)
        if rec.task_ids is not None:
            rec.task_ids.append(trec.id)
        else:
            w.records.add_task_id(rec, trec.id)
        counts[trec.status] = counts.get(trec.status, 0) + 1
        if not trec.clean:
            rec.unclean += 1
        trec.change_id = rec.id
        w.dirty_task(trec)
        w.changeset.touched.todo[rec.id] = None  # (touch, inline)
        # (A task known to wait for nothing, a new one most often, cannot come after a running one; once the unit
        # of work is noted as making tasks runnable, the tasks added after, a chain's, need no look.)
        waits = trec.wait_ids
        if not trec.status.ready and not w.changeset.runnable and (
                (waits is not None and not waits) or not _after_running(w, trec)):
            w.note_runnable()
        if trec.wait_ids or trec.halt_ids:
            w.note_waits((trec.id,))
        if trec.status is Status.WAIT:
            w.waiting_changes().add(rec.id)

    def add_all(self, taskset: TaskSet) -> None:
        """add_all adds every task of taskset to this change."""
        for task in taskset.tasks():
            self.add_task(task)

    def tasks(self) -> list[Task]:
        """tasks returns the tasks of the change."""
        w = self._w
        return [w.task_handle(t) for t in w.records.change_trecs(self._rec())]

    def lane_tasks(self, *lanes: int) -> list[Task]:
        """lane_tasks returns the tasks in any of lanes (lane 0: tasks in no lane)."""
        w = self._w
        recs = w.records.change_trecs(self._rec())
        w.records.load_graph(recs)
        wanted = set(lanes)
        return [w.task_handle(t) for t in recs if wanted.intersection(t.lanes or [0])]

    def abort(self) -> None:
        """abort asks for every task to stop and be undone, at the next ensure pass."""
        rec = self._rec()
        recs = self._w.records.change_trecs(rec)
        self._w.records.load_graph(recs)
        abort_tasks(self._w, rec, list(recs), set(), set())

    def abort_lanes(self, lanes: list[int]) -> None:
        """abort_lanes aborts the tasks of lanes and those waiting for them, except
        tasks also in a healthy lane."""
        rec = self._rec()
        abort_lanes(self._w, rec, list(lanes), set(), set())

    def abort_unready_lanes(self) -> None:
        """abort_unready_lanes aborts the lanes that still have unready tasks."""
        rec = self._rec()
        recs = self._w.records.change_trecs(rec)
        self._w.records.load_graph(recs)
        lanes: set[int] = set()
        for t in recs:
            if not t.status.ready:
                lanes.update(t.lanes or [0])
        abort_lanes(self._w, rec, sorted(lanes), set(), set())

    def err(self) -> ChangeError | None:
        """err returns the errors logged on the failed tasks, or None unless the change is in Error."""
        rec = self._rec()
        w = self._w
        if w.change_status(rec) is not Status.ERROR:
            return None
        errors = []
        for t in w.records.change_trecs(rec):
            if t.status is not Status.ERROR:
                continue
            errors += [(t.summary, msg) for _, level, msg in w.records.log_lines(t) if level == "ERROR"]
        if not errors:
            kind = json.dumps(rec.kind, ensure_ascii=False)  # quoted and escaped, like snapd's %q
            return ChangeError([], f"internal inconsistency: change {kind} in ErrorStatus with no task errors logged")
        return ChangeError(errors)

    def timings(self) -> list[TaskTiming]:
        """timings returns the runs of the change's tasks' do and undo handlers, oldest first (engine.timings)."""
        return list(self._w.timings.task_timings(self._rec().id))

    def is_ready(self) -> bool:
        """is_ready returns whether the change has become ready (it stays so)."""
        return self._rec().ready_time is not None

    def is_clean(self) -> bool:
        """is_clean returns whether every task of the change has been cleaned."""
        return self._rec().clean

    # -- repair (engine.repair) ------------------------------------------------------------

    def retry(self) -> list[str]:
        """retry runs a failed change again from where it failed; it returns the ids of the tasks retried.

        Its tasks in Error, Hold and Undone go back to Do (Done ones stay
        Done), each logging the new attempt; the change is unready again and
        counts one more attempt. EngineError for a change that is not ready
        or has no task in Error; ChangeConflictError when an unready change
        affects what it affects.
        """
        self._w.check()
        return retry_change(self._w, self)

    @property
    def attempt(self) -> int:
        """attempt is how many times the change was attempted: 1, plus one per retry()."""
        value = self.get(ATTEMPT_KEY, 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    # -- keys (engine.keys) ----------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """key is the idempotency key that names the change (new_change(key=...)), None once it expired."""
        self._w.check()
        return self._w.keys.key_of(self._rec().id)  # type: ignore[no-any-return]

    @property
    def is_new(self) -> bool:
        """is_new says whether new_change made the change in this unit of work (False for one a key found)."""
        self._w.check()
        made: bool = self._rec().id in self._w.keys.made
        return made

    def affects(self) -> list[str]:
        """affects lists the keys the change affects (new_change(affects=...), affect()), sorted."""
        self._w.check()
        return self._w.keys.affects_of(self._rec().id)  # type: ignore[no-any-return]

    def affect(self, *keys: str) -> None:
        """affect adds keys the change affects, without a conflict check (ask State.affecting first)."""
        self._w.check()
        self._w.keys.affect(self._rec().id, check_keys(keys, "affected key"))

    @property
    def spawn_time(self) -> datetime:
        """spawn_time is when the change was created."""
        return self._rec().spawn_time

    @property
    def ready_time(self) -> datetime | None:
        """ready_time is when the change became ready, or None."""
        return self._rec().ready_time

    def check_task_dependencies(self) -> None:
        """check_task_dependencies raises TaskDependencyCycleError if wait-for edges form a cycle."""
        w = self._w
        recs = w.records.change_trecs(self._rec())
        w.records.load_graph(recs)
        mine = {t.id: t for t in recs}
        preds = {t.id: sum(1 for w in (t.wait_ids or ()) if w in mine) for t in recs}
        queue = [tid for tid, n in preds.items() if n == 0]
        while queue:
            tid = queue.pop()
            for succ in mine[tid].halt_ids or ():
                if succ in preds:
                    preds[succ] -= 1
                    if preds[succ] == 0:
                        queue.append(succ)
        stuck = sorted(tid for tid, n in preds.items() if n > 0)
        if stuck:
            names = " ".join(f"{tid}:{mine[tid].kind}" for tid in stuck)
            raise TaskDependencyCycleError([str(t) for t in stuck], f"dependency cycle involving tasks [{names}]")

    def wait_ready(self, timeout: float | None = None) -> bool:
        """wait_ready blocks, WITHOUT the lock, until the change is ready; False on timeout."""
        w = self._w
        if w.held():
            raise RuntimeError("cannot wait for a change while holding the state lock")
        deadline = None if timeout is None else time.monotonic() + timeout
        event: threading.Event | None = None
        while True:
            try:
                with w.state:
                    if w.records.crec(self._cid).ready_time is not None:
                        return True
                    event = w.waiters.setdefault(self._cid, threading.Event())
            except DatabaseConflictError as e:  # a shared store's server restarting, say: look again later
                log.debug("waiting for change %s: %s", self._cid, e)
            if event is not None and not w.store.shared:
                return event.wait(timeout)
            # Another host may make it ready (or the server was away): look again now and then.
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if event is not None:
                if event.wait(_SHARED_POLL if left is None else min(_SHARED_POLL, left)):
                    return True
            else:
                time.sleep(_SHARED_POLL if left is None else min(_SHARED_POLL, left))


    async def wait_ready_async(self, timeout: float | None = None) -> bool:
        """wait_ready_async is wait_ready for asyncio: it awaits the commit that makes the change ready.

        No thread waits: the committing thread sets an asyncio.Event through
        the loop's call_soon_threadsafe. The lock is taken only for the
        short look at the change, never by blocking the event loop (when
        another thread holds it, the look runs in a worker thread); False
        on timeout.
        """
        w = self._w
        if w.held():
            raise RuntimeError("cannot wait for a change while holding the state lock")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        while True:
            event = asyncio.Event()

            def look(event: asyncio.Event = event) -> bool:
                if w.records.crec(self._cid).ready_time is not None:
                    return True
                w.async_waiters.setdefault(self._cid, []).append((loop, event))
                return False

            try:
                if await w.locked_async(look):
                    return True
            except DatabaseConflictError as e:
                log.debug("waiting for change %s: %s", self._cid, e)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            # On a shared store another host may make it ready: look again now and then.
            wait = _SHARED_POLL if w.store.shared else left
            if left is not None and wait is not None:
                wait = min(wait, left)
            try:
                await asyncio.wait_for(event.wait(), wait)
                if not w.store.shared:
                    return True
            except TimeoutError:
                if not w.store.shared:
                    return False
            finally:
                waiters = w.async_waiters.get(self._cid)
                if waiters is not None:
                    # (the committing thread may have taken the list meanwhile)
                    with contextlib.suppress(ValueError):
                        waiters.remove((loop, event))


def change_handle(w: Work, rec: ChangeRec) -> Change:
    """change_handle is the public Change of a record, typed (the unit of work makes and keeps it)."""
    chg: Change = w.change_handle(rec)
    return chg
