# SPDX-License-Identifier: GPL-3.0-or-later
"""RunnerGuards: what keeps a TaskRunner from running what it must not, and says why once.

A part of engine.taskrunner.TaskRunner (it inherits these members), kept in
its own module: blocked predicates and concurrency slots that hold tasks
back (a predicate that raises holds back its task only), status hooks that
raise during a pass (their task fails), dependency cycles (their tasks
fail), and rows that cannot be read (reported once, as a log line and a
state warning, and left alone until the database changes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import DatabaseCorruptError, NotFoundError, TaskDependencyCycleError
from .runs import Run
from .status import Status
from .statusrules import dependency_cycles
from .task import Task
from .usercode import callable_name, exception_text

if TYPE_CHECKING:
    from ._records import ChangeRec, TaskRec
    from .concurrency import Slots
    from .leases import Leases
    from .outcomes import OutcomeRecorder
    from .runs import Blocked, Handler, HandlerPair, Runs
    from .state import State
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.taskrunner")

#: CLEAN_AT_READY: a change of at most this many tasks, all of kinds without a cleanup handler, is marked clean
#: by the unit of work that makes it ready (_clean_at_ready); a bigger one by the next pass, in its relaxed commit.
CLEAN_AT_READY = 64


class RunnerGuards:
    """RunnerGuards is how a TaskRunner holds tasks back, claims cleanups and leaves damaged rows alone."""

    _st: State
    _w: UnitOfWork
    _r: Runs
    _recorder: OutcomeRecorder
    _slots: Slots
    _blocked: list[Blocked]
    _failed_predicates: set[tuple[int, str]]
    _damaged_tasks: set[int]
    _damaged_changes: set[int]
    _reasons: set[str]
    _checked: dict[int, bool]
    _quarantined: set[int]
    _cleanups: dict[str, Handler]
    _handlers: dict[str, HandlerPair]
    _leases: Leases | None
    _handing_on: bool

    if TYPE_CHECKING:
        def _pair(self, rec: TaskRec) -> HandlerPair: ...

    def _held_back(self, rec: TaskRec, task: Task, running: list[Task]) -> bool:
        """_held_back asks the blocked predicates about task; one that raises holds back that task only."""
        for pred in self._blocked:
            try:
                if pred(task, running):
                    return True
            except BaseException as e:
                self._user_failed(rec, "blocked predicate", pred, e)
                return True
        return False

    def _user_failed(self, rec: TaskRec, what: str, fn: object, exc: BaseException) -> None:
        """_user_failed says, once per task and function, that a predicate raised; the task counts as blocked."""
        if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
            raise exc  # Ctrl-C while a pass runs in the main thread (settle): not the predicate's failure
        self._r.some_blocked = True  # asked again at the next pass
        name = callable_name(fn)
        if (rec.id, name) in self._failed_predicates:
            return
        self._failed_predicates.add((rec.id, name))
        log.warning("task %s (%s) of change %s is held back: its %s %s raised %s", rec.id, rec.kind,
                    rec.change_id, what, name, exception_text(exc))

    def _no_slot(self, rec: TaskRec, task: Task) -> bool:
        """_no_slot says whether the task's concurrency key holds it back (h26b; engine.concurrency)."""
        if self._handing_on and self._leases is not None:
            # Several hosts: a task of a limited kind is left to the passes, which every host races for (a
            # hand-on would take the slot its outcome frees in the same commit, and no other host ever would).
            self._r.some_blocked = True
            return True
        wait = self._slots.admit(self._w, rec, task)
        if wait is None:
            return False
        self._r.some_blocked = True  # a recorded outcome may free a slot: the pass after it looks again
        if wait > 0:
            self._st.ensure_before(wait)  # the rate's interval moves on
        return True

    def _hooks_failed(self, failures: list[tuple[Any, Any, BaseException]], started: list[Run]) -> None:
        """_hooks_failed deals with status hooks that raised during the pass: only their task is concerned.

        A task the pass claimed is put in Error instead of started (the log
        says which hook raised what); any other raise is logged once.
        """
        w = self._w
        claimed = {run.tid: run for run in started}
        said: set[int] = set()
        for fn, obj, exc in list(failures):
            tid = int(obj.id) if isinstance(obj, Task) else None
            name = callable_name(fn)
            if tid in claimed and tid not in said:
                said.add(tid)
                run = claimed[tid]
                started.remove(run)
                with self._r.lock:
                    if self._r.runs.get(tid) is run:
                        del self._r.runs[tid]
                rec = w.records.trec(tid)
                chg = f"change {rec.change_id}" if rec.change_id is not None else "no change"
                self._recorder.failed(rec, RuntimeError(f"its status hook {name} raised {exception_text(exc)}"), chg)
            elif tid not in said:
                what = f"task {tid}" if tid is not None else f"change {getattr(obj, 'id', '?')}"
                log.warning("%s: status hook %s raised %s", what, name, exception_text(exc))
        failures.clear()  # (what the hooks raise again while their task fails is said above)

    def _claim_cleanups(self, runs: dict[int, Run], started: list[Run], free: int) -> int:
        w = self._w
        for cid in w.store.unclean_changes():
            for row in w.store.unclean_tasks(cid):
                rec = self._load(row)
                if rec is None or rec.clean or rec.id in runs or self._pair(rec).do is None:
                    continue
                if not self._sound(rec):
                    break
                task = w.task_handle(rec)
                fn = self._cleanups.get(rec.kind)
                if fn is None:
                    task.set_clean()
                    continue
                if free <= 0:
                    self._r.starved = True
                    return 0
                if self._leases is not None and not w.store.claim_cleanup(rec.id):
                    continue  # another runner cleans it
                run = Run(rec.id, rec.kind, "cleanup", fn, task, self._pair(rec))
                with self._r.lock:
                    self._r.runs[rec.id] = run
                runs[rec.id] = run
                started.append(run)
                free -= 1
        return free

    def _clean_at_ready(self, crec: ChangeRec) -> bool:
        """_clean_at_ready marks a change's tasks clean in the unit of work that makes it ready, when a pass would
        only mark them so; it returns whether it did (the ready_hook of a runner that hands on).

        A pass cleans a ready change's tasks (_claim_cleanups): it runs the
        cleanup handler of a task that has one, and marks the others clean,
        in a commit (and a pass) of its own after the one that made the
        change ready. When every unclean task of a small change is of a kind
        with a handler and no cleanup handler, cached, and the cache is
        exact (a single writer, no outside write), that unit marks them
        clean itself: the task rows and the change row it writes anyway
        carry it. Anything else (a cleanup handler, a kind matched by an
        optional handler or not known, a task not cached, a damaged or
        quarantined one, a task whose handler still runs, a shared store)
        is left to the pass, as before.
        """
        w = self._w
        ids = crec.task_ids
        if ids is None or len(ids) > CLEAN_AT_READY or not w.cache_exact() or self._checked.get(crec.id) is False:
            return False
        tasks, handlers, cleanups, quarantined = w.records.tasks, self._handlers, self._cleanups, self._quarantined
        unclean = []
        for tid in ids:
            rec = tasks.get(tid)
            if rec is None or rec.change_id != crec.id or tid in quarantined:
                return False
            if not rec.clean:
                kind = rec.kind
                if kind not in handlers or kind in cleanups or not rec.status.ready:
                    return False
                unclean.append(rec)
        if len(unclean) != crec.unclean:
            return False  # (the counts say otherwise: the pass looks)
        with self._r.lock:  # (a handler still running, not one whose outcome this unit records: as the pass)
            runs = self._r.runs
            if runs and any((run := runs.get(rec.id)) is not None and run.ran is None for rec in unclean):
                return False
        for rec in unclean:
            rec.clean = True
            w.dirty_task(rec)
        crec.unclean = 0
        return True

    def _fail_cycles(self) -> None:
        """_fail_cycles puts tasks that wait for each other in a cycle in Error, naming the cycle.

        Building a cycle is allowed (snapd checks with check_task_dependencies);
        running one is not: its tasks would wait forever and the change never
        end. A cycle comes alive with its last edge or with the last of its
        tasks to move into Do (or Undo): the changes whose tasks got new edges
        are searched, and the cycles through the tasks moved into Do or Undo
        since the last pass (statusrules.revive); every change with waiting
        tasks after opening or a write from outside.
        """
        w = self._w
        cids = w.take_new_waits()
        revived, w.revived = w.revived, set()
        if cids is None:
            cids = set(w.store.cycle_suspects())
        searched = set()
        for cid in sorted(cids):
            try:
                crec = w.records.crec(cid)
                if crec.ready_time is not None:
                    continue
                cycles = dependency_cycles(w, w.records.change_trecs(crec))
                searched.add(cid)
            except (DatabaseCorruptError, NotFoundError) as e:
                log.debug("not looking for cycles in change %s: %s", cid, e)
                continue
            self._fail_cycle_tasks(cycles)
        if revived:
            starts = []
            for tid in sorted(revived):
                try:
                    rec = w.records.trec(tid)
                    if rec.change_id in searched:
                        continue  # searched whole above
                    starts.append(rec)
                except (DatabaseCorruptError, NotFoundError) as e:  # pruned since, say
                    log.debug("not looking for cycles through task %s: %s", tid, e)
            try:
                cycles = dependency_cycles(w, starts)
            except (DatabaseCorruptError, NotFoundError) as e:
                log.debug("not looking for cycles through tasks %s: %s", [t.id for t in starts], e)
                return
            self._fail_cycle_tasks(cycles)

    def _fail_cycle_tasks(self, cycles: list[list[TaskRec]]) -> None:
        for members in cycles:
            names = " ".join(f"{t.id}:{t.kind}" for t in members)
            error = TaskDependencyCycleError([str(t.id) for t in members],
                                             f"dependency cycle involving tasks [{names}]")
            where = sorted({f"change {t.change_id}" if t.change_id is not None else "no change" for t in members})
            log.error("%s: tasks wait for each other in a cycle and can never run: [%s]", ", ".join(where), names)
            for t in members:
                if not t.status.ready or t.status is Status.HOLD:
                    chg = f"change {t.change_id}" if t.change_id is not None else "no change"
                    self._recorder.failed(t, error, chg)

    def _scan_unknown_statuses(self) -> None:
        """_scan_unknown_statuses reports the tasks with a status the engine does not know.

        No pass would ever select them, nor the tasks waiting for them: their
        change would sit unready without a word. Done once per generation of
        the cache (at the first pass, after a write from outside).
        """
        for row in self._w.store.unknown_status_tasks():
            tid, cid = row[0], row[1]
            if not self._change_sound(cid, tid):
                continue  # reported, with its change: the change is what cannot go on
            self._load(row)  # (the change read whole: report the task itself)

    def _runnable_do(self) -> Callable[[int, int], list[tuple[Any, ...]]]:
        """_runnable_do is the query of runnable Do tasks: a single writer reads the ids, and the rows it lacks."""
        store, records = self._w.store, self._w.records
        if store.shared:
            return store.runnable_do
        return lambda after, limit: records.rows_of(store.runnable_do_ids(after, limit))

    def _load(self, row: tuple[Any, ...]) -> TaskRec | None:
        """_load reads a candidate row; a damaged one is reported once and skipped."""
        if row[0] in self._quarantined:
            return None
        try:
            return self._w.records.merge_task_rows([row])[0]
        except DatabaseCorruptError as e:
            self._damaged("task", row[0], str(e), self._damaged_tasks)
            return None

    def _sound(self, rec: TaskRec) -> bool:
        """_sound checks that the task's change and all its tasks can be read.

        A change that cannot be (a missing or hand-edited row, a task of it
        that cannot be read) is reported once and its tasks are left alone;
        the other changes go on. What is learnt holds until the cache is
        dropped (a rollback, a write by another connection).
        """
        cid = rec.change_id
        if cid is None:
            return True
        return self._change_sound(cid, rec.id)

    def _change_sound(self, cid: int, tid: int) -> bool:
        """_change_sound is _sound for change cid, met through its task tid."""
        w = self._w
        known = self._checked.get(cid)
        if known is not None:
            return known
        try:
            crec = w.records.crec(cid)
            w.records.counts(crec)
            w.records.check_task_rows(crec)
            sound = True
        except NotFoundError:
            self._damaged("change", cid, f"task {tid} belongs to change {cid}, which is not in the database",
                          self._damaged_changes)
            sound = False
        except DatabaseCorruptError as e:
            self._damaged("change", cid, str(e), self._damaged_changes)
            sound = False
        self._checked[cid] = sound
        return sound

    def _damaged(self, what: str, rid: int, reason: str, reported: set[int]) -> None:
        """_damaged reports, once, a row the runner leaves alone: in the log and as a state warning."""
        if rid in reported or reason in self._reasons:
            return  # the same damage may be met through a task and through its change
        reported.add(rid)
        self._reasons.add(reason)
        log.error("leaving %s %s alone: %s", what, rid, reason)
        try:
            self._st.add_warning(f"{what} {rid} cannot be run and is left alone until repaired: {reason}")
        except Exception as e:  # the warnings themselves may be damaged: the log has it
            log.error("cannot add a warning about %s %s: %s", what, rid, e)

    def _quarantine(self, tid: int) -> None:
        """_quarantine keeps the runner from claiming a task until the database changes."""
        self._quarantined.add(tid)


def fail_task(runner: RunnerGuards, rec: TaskRec, exc: BaseException, chg: str) -> None:
    """fail_task puts a task in Error as runner fails one whose handler raised (an event wait that timed out)."""
    runner._recorder.failed(rec, exc, chg)
