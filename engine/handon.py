# SPDX-License-Identifier: GPL-3.0-or-later
"""HandOn: how a TaskRunner under an Overlord's loop claims what outcomes made runnable, in their unit of work.

A part of engine.taskrunner.TaskRunner (it inherits these members), kept in
its own module: the hand-on (docs/runner.md, "Handing on"), and how the
runner takes it over from a handler that sets its own task Done in its
`with task.state:` block (that commit wakes nobody for the Done: the
handler's outcome hands on what it made runnable). The runner knows which
handler commits by a context variable set around each handler (a worker
thread's sync handlers, one after another; an async handler's asyncio task).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .cache import COUNT_LIMIT
from .runs import HandlerPair, Run, execute, execute_async
from .status import Status

if TYPE_CHECKING:
    from ._records import ChangeRec, TaskRec
    from .concurrency import Slots
    from .leases import Leases
    from .outcomes import OutcomeRecorder
    from .runs import Runs
    from .state import State
    from .task import Task
    from .unitofwork import UnitOfWork

_DONE_ONLY = {Status.DONE}
# (Status's members as names: Enum's class attribute lookup costs some 80 ns, several times a step.)
_DO, _DONE, _UNDONE = Status.DO, Status.DONE, Status.UNDONE

#: _HANDLING is the run whose handler runs in this context (None: no handler's, such as the recorder's).
_HANDLING: ContextVar[Run | None] = ContextVar("engine_handling", default=None)


def handle(run: Run, report: Callable[[Run], Run | None]) -> None:
    """handle runs a sync handler (and the next ones of a chain, engine.runs.execute), saying which run it is."""
    def reported(done: Run) -> Run | None:
        _HANDLING.set(None)  # the outcome may be recorded on this thread: not the handler's commit
        nxt = report(done)
        _HANDLING.set(nxt)
        return nxt

    _HANDLING.set(run)
    try:
        execute(run, reported)
    finally:
        _HANDLING.set(None)


async def handle_async(run: Run, report: Callable[[Run], Run | None]) -> None:
    """handle_async runs an async handler (engine.runs.execute_async) in its asyncio task, saying which run it is."""
    def reported(done: Run) -> Run | None:
        _HANDLING.set(None)
        return report(done)

    _HANDLING.set(run)  # (the task's own copy of the context)
    await execute_async(run, reported)


class HandOn:
    """HandOn is how a TaskRunner claims, in the unit of work of outcomes, the tasks they made runnable."""

    _st: State
    _w: UnitOfWork
    _r: Runs
    _recorder: OutcomeRecorder
    _slots: Slots
    _leases: Leases | None
    _size: int
    _generation: int
    _hand_on_enabled: bool
    _handing_on: bool
    _handlers: dict[str, HandlerPair]
    _blocked: list[Any]
    _quarantined: set[int]

    if TYPE_CHECKING:
        def _claim_from(self, candidates: Any, runs: dict[int, Run], started: list[Run], running: list[Task],
                        free: int, now: datetime, held: set[int]) -> tuple[int, datetime | None]: ...

        def _hooks_failed(self, failures: list[tuple[Any, Any, BaseException]], started: list[Run]) -> None: ...

        def _runnable_do(self) -> Callable[[int, int], list[tuple[Any, ...]]]: ...

        def _claim_one(self, rec: TaskRec, pair: HandlerPair, task: Task) -> Run: ...

        def _sound(self, rec: TaskRec) -> bool: ...

        def _clean_at_ready(self, crec: ChangeRec) -> bool: ...

    def set_hand_on(self, enabled: bool) -> None:
        """set_hand_on lets the recorder claim the tasks that outcomes make runnable, in the same transaction.

        The Overlord's loop turns it on: the next task of a chain is claimed
        in the unit of work that records the outcome of the one before (one
        synced commit per step, no intermediate status of the change) and
        started right after that commit, without an ensure pass in between.
        Off (the default, and under settle), a runner driven by hand with
        ensure() and wait() runs one step per pass, as snapd's does.
        """
        self._hand_on_enabled = enabled
        # A handler's commit that finishes its own task leaves the hand-on to its outcome (_own_done).
        self._w.done_hook = self._own_done if enabled else None
        self._w.touch_hook = self._own_running if enabled else None
        self._w.ready_hook = self._clean_at_ready if enabled else None  # (engine.runnerguards)

    def _hand_on(self, started: list[Run], own_done: Sequence[int] = ()) -> bool:
        """_hand_on claims, in the recorder's unit of work, the tasks that its outcomes made runnable.

        It returns whether nothing is left for an ensure pass to start: then
        the loop is not woken for the tasks that became Done or Undone. What
        it leaves (a task held back by a blocked predicate, a dropped cache,
        another host's work) is left to an ensure pass, as before. own_done:
        the outcomes' tasks that their handlers' own commits set Done.
        """
        w = self._w
        if not self._hand_on_enabled or self._generation != w.generation or w.blockers_suspect:
            return False
        with self._r.lock:
            if self._r.stopped:
                return False
            runs = dict(self._r.runs)
        store = w.store
        queries: list[tuple[Any, None]] = []  # (a query, or the rows themselves: _claim_from)
        successors = self._own_successors(own_done) if own_done else self._successors()
        if successors is not None and len(successors) == 1 and not runs:
            handed = self._hand_on_one(successors[0], started)
            if handed is not None:
                return handed
        if successors is not None:
            # What the Done tasks unblocked, known from the cache: claimed without a query, and written
            # with the outcomes in the commit's one flush (their blockers counts as values, UnitOfWork._rows).
            queries.append(([(tid,) for tid in successors], None))  # (rows as they are: _claim_from, no pages)
            if not w.begin_or_keep():
                return False  # a busy or full database: as below
        else:
            if _UNDONE in w.changeset.unblocked:
                queries.append((store.runnable_undo, None))
            if _DONE in w.changeset.unblocked:
                queries.append((self._runnable_do(), None))
            if not queries:
                return False  # nothing became Done or Undone: the outcomes' own requests for a pass stand
            if not w.flush_or_keep():  # the outcomes, and the recount of what waited for them
                return False  # the commit writes them (or keeps them) as ever; a pass hands on later
        now = w.now()
        self._r.some_blocked = False  # asked again below, for the tasks runnable now
        with self._recorder.hooks_guarded() as failures:
            running = [run.task for run in runs.values()]
            held = w.keys.held()  # a queued change waits in a hand-on as in a pass
            self._slots.begin_pass(set(runs))  # keys counted afresh (PostgreSQL: under their lock, in this unit)
            starved, self._r.starved = self._r.starved, False
            self._handing_on = True
            try:
                free, next_time = self._claim_from(queries, runs, started, running, self._size - len(runs), now, held)
            finally:
                self._handing_on = False
            left, self._r.starved = self._r.starved, starved or self._r.starved
            if self._leases is not None:
                # The leases taken on tasks not started (held back, not due) are given back, as by a pass;
                # what this hand-on left for want of workers is for other hosts: woken at the commit.
                store.release_claims(list(runs), others=left)
            if failures:
                self._hooks_failed(failures, started)
        if next_time is not None:
            self._st.ensure_before((next_time - now).total_seconds())
        if self._r.some_blocked:
            return False  # a task held back: a pass asks again, as after every outcome while some are
        if free > 0 and self._r.starved:
            # Workers are free and a pass found more work than workers before: what it left may be of
            # another kind (Doing tasks left from before a restart, cleanups): a pass looks.
            return False
        # (No worker left free: a pass could start nothing more; the next outcome hands on again.)
        w.handed_on()
        return True

    def _hand_on_one(self, tid: int, started: list[Run]) -> bool | None:
        """_hand_on_one claims a chain's next task, the only one the cache found, when no rule can hold it back.

        The direct way of the most common step (one task Done, one Do task
        it made runnable, no other run under way): every rule of
        _claim_from that could skip, hold back or ask user code about the
        task is known not to apply here, so it is moved to Doing at once,
        as _claim_from would have. None (nothing claimed; the write
        transaction may be begun): a rule may apply (a status hook, a
        blocked predicate, a concurrency key, a queued change, a handler
        found by an optional matcher, an at-time, a quarantined task, a
        damaged change); the general way decides.
        """
        w = self._w
        rec = w.records.tasks[tid]  # (_successors: cached, Do, in a change, its waits all Done)
        pair = self._handlers.get(rec.kind)
        if (pair is None or pair.do is None or rec.at_time is not None or self._blocked or w.task_hooks
                or w.change_hooks or self._slots.limited(rec.kind) is not None or tid in self._quarantined):
            return None
        if not w.begin_or_keep():
            return False  # a busy or full database: as the general way
        if w.keys.held() or not self._sound(rec):  # (read in the write transaction, as the general claim does)
            return None  # (the general way finds the transaction begun)
        self._slots.begin_pass(set())  # (as a hand-on's: the runs ended here are forgotten by the keys)
        run = self._claim_one(rec, pair, w.task_handle(rec))
        started.append(run)
        w.handed_on()
        return True

    def _own_successors(self, own: Sequence[int]) -> list[int] | None:
        """_own_successors are the Do tasks that the self-finishing handlers' Done made runnable, from the cache.

        As _successors, for tasks set Done by their handlers' own commits
        (_own_done) rather than by this unit (OutcomeRecorder._record notes
        their Done as unblocked): None unless this unit moved no task to or
        from Done itself and the cache is exact; then the query of every
        runnable task could only find these, or what a pass already asked
        for will claim.
        """
        cs = self._w.changeset
        if cs.unblocked != _DONE_ONLY or cs.done_flips.todo or cs.done_flips.done:
            return None  # this unit moved tasks to or from Done (or Undone) too: the query finds all
        return self._successors(own)

    def _successors(self, own: Sequence[int] = ()) -> list[int] | None:
        """_successors are the Do tasks that the tasks Done in this unit of work made runnable, from the cache.

        None unless the cache knows that they are all there is to claim: a
        single writer whose cache is exact (UnitOfWork.cache_exact), outcomes
        that only made tasks Done (nothing else may have become runnable in
        this unit: the commit would wake the loop for it anyway), and no task
        left by the last pass or hand-on (blocked, or for want of workers),
        which the query of every runnable task would find again. Then the
        general query could only find what a pass already asked for will
        claim: tasks whose commit woke the loop, or due later.
        """
        w = self._w
        cs = w.changeset
        if self._r.some_blocked or self._r.starved or cs.runnable or cs.unblocked != _DONE_ONLY \
                or cs.done_flips.done or w.store.shared or w.blockers_suspect or w.cache_stale:
            return None  # (the last three: not UnitOfWork.cache_exact(), inline)
        tasks = w.records.tasks
        found: list[int] = []
        for tid in own or cs.done_flips.todo:
            rec = tasks.get(tid)
            if rec is None or rec.status is not _DONE or rec.halt_ids is None:
                return None
            for hid in rec.halt_ids:
                halted = tasks.get(hid)
                if halted is None or halted.wait_ids is None or len(halted.wait_ids) > COUNT_LIMIT:
                    return None  # (as RecordCache.blockers_of_halted: a big fan-in is the query's)
                if halted.status is not _DO or halted.change_id is None:
                    continue  # (a task in no change never runs, as the runnable query says)
                for wid in halted.wait_ids:
                    wait = tasks.get(wid)
                    if wait is None:
                        return None
                    if wait.status is not _DONE:
                        break
                else:
                    found.append(hid)
        if len(found) > 1:
            return sorted(set(found))
        return found

    def _own_done(self) -> None:
        """_own_done, called at a commit (lock held) that moved tasks to Done, takes over the wake of a handler's own.

        When the only task the unit of work moved to Done is the running task
        of the handler committing it (docs/runner.md, "Handlers that finish
        their own task"), and nothing else in it may have made tasks
        runnable, the commit wakes nobody (neither this loop nor, on a shared
        store, the other hosts): the run notes it (own_done), and its outcome
        hands on what the Done made runnable, or wakes the loop for it, as if
        the runner had recorded the Done itself. Anything else wakes as before.
        """
        run = _HANDLING.get()
        if run is None or run.phase != "do" or not self._hand_on_enabled:
            return
        changeset = self._w.changeset
        if changeset.runnable or changeset.unblocked != {Status.DONE}:
            return
        flips, tasks = changeset.done_flips, self._w.records.tasks
        if run.tid not in flips:
            return
        for tid in itertools.chain(flips.todo, flips.done):
            rec = tasks.get(tid)
            if rec is None or (tid == run.tid) != (rec.status is Status.DONE):
                return  # another task became Done (or its own did not stay Done): the commit wakes as before
        with self._r.lock:
            if self._r.stopped or self._r.runs.get(run.tid) is not run:
                return
        run.own_done = True
        changeset.unblocked.clear()
        self._hold_own_status(run.tid)

    def _own_running(self) -> None:
        """_own_running, called at a commit (lock held) that touched changes, skips settling a running handler's own.

        A handler's block that adds tasks to its own change while its task
        is Doing (the peers' chain: the next step, waiting for it) cannot
        move the change's status: its outcome's unit, which touches the
        change anyway, stores it. On PostgreSQL that is a row lock and a
        count fewer a step.
        """
        run = _HANDLING.get()
        if run is None or run.phase != "do" or not self._hand_on_enabled:
            return
        rec = self._w.records.tasks.get(run.tid)
        if rec is not None and rec.status is Status.DOING:
            self._hold_own_status(run.tid, Status.DOING)

    def _hold_own_status(self, tid: int, status: Status | None = None) -> None:
        """_hold_own_status leaves the status of a self-finishing handler's change to its outcome's unit.

        The handler still runs, and its outcome claims what its Done made
        runnable: storing the change's status now would show it Do between
        two steps of a chain, with a change-update notice each way, where a
        Done the runner records never does. Held only while the change's
        computed status is not ready and it is stored Doing, and nothing else
        of any change is to be written: the next commit of this State that
        writes (the outcome's, most often) stores it; on PostgreSQL only when
        this unit added a Do task to the change, so that no host can find it
        ready meanwhile. status: held only if the change's computed status is that.
        """
        w = self._w
        cs = w.changeset
        rec = w.records.tasks.get(tid)
        if rec is None or rec.change_id is None or cs.touched.done or cs.dirty_changes \
                or cs.new_changes or list(cs.touched.todo) != [rec.change_id]:
            return
        cid = rec.change_id
        crec = w.records.changes.get(cid)
        if crec is None or crec.db_status is not Status.DOING:
            return
        computed = w.change_status(crec)
        if computed.ready or (status is not None and computed is not status):
            return
        if w.store.shared:
            # Other hosts' tasks are not all in this cache: held only when this unit added a Do task to the
            # change, which keeps it from being ready whatever they commit until one claims it (and settles it).
            tasks = w.records.tasks
            if not any((t := tasks.get(new)) is not None and t.change_id == cid and t.status is Status.DO
                       for new in cs.new_tasks.todo):
                return
        w.statuses_held = True
