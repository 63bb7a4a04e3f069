# SPDX-License-Identifier: GPL-3.0-or-later
"""The status rules: a task's move and what it does to its change, a change's status, lanes, cycles.

snapd's rules, over records (engine._records) through the unit of work
(engine._work): move_task is every move of a task's status (the counts of
its change, its readiness, the hooks, what the commit wakes);
computed_status is what Change.status shows when nobody set it; abort_lanes
is what a failed task does to its lanes; dependency_cycles finds the tasks
that can never run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from ._time import to_text
from .errors import DatabaseCorruptError, NotFoundError
from .status import Status
from .usercode import callable_name, exception_text

if TYPE_CHECKING:
    from ._records import ChangeRec, TaskRec
    from ._work import Work

log = logging.getLogger("engine.change")

_LIVE = (Status.DO, Status.DOING, Status.DONE)
_FINAL = (Status.DONE, Status.UNDONE, Status.ERROR, Status.HOLD)

#: STATUS_ORDER is the order in which task statuses decide the status of their change (snapd's).
STATUS_ORDER = (
    Status.ABORT, Status.UNDOING, Status.UNDO, Status.DOING, Status.DO, Status.WAIT,
    Status.ERROR, Status.UNDONE, Status.DONE, Status.HOLD,
)


def computed_status(w: Work, crec: ChangeRec) -> Status:
    """computed_status is a change's status computed from its tasks (snapd's rules).

    No tasks: Hold. Every pending task blocked by tasks in Wait: Wait.
    Otherwise the first status in STATUS_ORDER that a task has.
    """
    counts = crec.counts if crec.counts is not None else w.records.counts(crec)
    get = counts.get
    if get(_WAIT, 0) > 0 and is_change_waiting(w, crec):
        return Status.WAIT
    for status in STATUS_ORDER:
        if get(status, 0) > 0:
            return status
    if not any(counts.values()):
        return Status.HOLD  # (no tasks: asked last, as no count in STATUS_ORDER is above 0 then)
    raise RuntimeError(f"internal error: cannot compute the status of change {crec.id} from {counts}")


def effective_status(t: TaskRec) -> Status:
    """effective_status reads a waiting task as the status it waits for."""
    return t.waited_status if t.status is Status.WAIT else t.status


# What a claim moves tasks to: such a move makes nothing else runnable.
_CLAIMED = (Status.DOING, Status.UNDOING, Status.WAIT)
# (Status's members as names for move_task: Enum's class attribute lookup costs some 80 ns each.)
_DONE, _UNDONE, _WAIT, _HOLD, _ERROR = Status.DONE, Status.UNDONE, Status.WAIT, Status.HOLD, Status.ERROR
_DO, _UNDO = Status.DO, Status.UNDO
#: REVIVED_MAX bounds the tasks revive keeps for the runner's next pass (a State with no runner takes none):
#: past it, the next pass searches every change with waiting tasks instead.
REVIVED_MAX = 4096


def move_task(w: Work, rec: TaskRec, new: Status) -> None:
    """move_task moves a task to new, keeping the aggregates of the changes it affects and telling the hooks.

    The change's counts by status, its ready time, what the commit wakes
    (engine.changeset) and the changes whose status is stored again: the
    task's, and those with tasks in Wait (the Wait rule follows edges
    across changes, so they may move when any task moves).
    """
    old = rec.status
    if old is new:
        return
    records = w.records
    changeset = w.changeset
    cid = rec.change_id
    crec = None if cid is None else records.changes.get(cid) or records.crec(cid)
    waiting = w.waiting_known if w.waiting_known is not None else w.waiting_changes()  # (loaded once per cache)
    affected = [crec] if crec is not None else []
    if waiting and (crec is None or len(waiting) > 1 or crec.id not in waiting):  # (most often none, or its own)
        affected += _loadable(w, (cid for cid in waiting if crec is None or cid != crec.id))
    hooks = w.change_hooks
    if hooks:
        for c in affected:
            if c.observed is None:
                c.observed = w.change_status(c)
    if crec is not None:
        # (A shared store counts again at commit, under the change's lock: engine.shared.)
        counts = crec.counts if crec.counts is not None else records.counts(crec)
        counts[old] = counts.get(old, 0) - 1
        counts[new] = counts.get(new, 0) + 1
    rec.status = new
    if (old is _DONE) != (new is _DONE):
        changeset.done_flips.todo[rec.id] = None  # (Pending.add, inline: a move is hot)
    if new is _DONE or new is _UNDONE:
        changeset.unblocked.add(new)  # what waits for it may run now (unless a runner hands it on: handed_on)
    elif new not in _CLAIMED:
        changeset.runnable = True  # something may run now: the overlord's loop wakes after the commit
        if new is _DO or new is _UNDO:
            revive(w, rec)
    became_ready = new.ready and not old.ready
    if became_ready:
        rec.ready_time = w.now()
        rec.ready_text = to_text(rec.ready_time)
    if rec.id not in changeset.new_tasks.todo:  # (UnitOfWork.dirty_task, inline: twice a step of a chain)
        changeset.dirty_tasks.todo[rec.id] = None
    if log.isEnabledFor(logging.DEBUG):  # (twice a step of a chain: its arguments only when logged)
        log.debug("task %s (%s) of change %s: %s -> %s", rec.id, rec.kind, rec.change_id, old.value, new.value)
    if crec is not None:
        if new is _WAIT:
            waiting.add(crec.id)
        if became_ready and crec.ready_time is None and _unready(w, crec) == 0:
            mark_ready(w, crec)
    for c in affected:
        changeset.touched.todo[c.id] = None
        if hooks:
            notify_change(w, c)
        else:
            c.observed = None
    if w.task_hooks:
        _fire(w, w.task_hooks, w.task_handle(rec), old, new)


def revive(w: Work, rec: TaskRec) -> None:
    """revive notes a task moved into Do or Undo for the runner's cycle check (runnerguards._fail_cycles).

    A circle of tasks waits for ever once all its tasks are Do (or all
    Undo); edges are noted as they are added (note_waits), and a status
    change alone can close it too: a Done or Hold task set back to Do, Done
    tasks an abort moves to Undo (which reverses what they wait for), a
    task woken from Wait. The circle then holds the task that moved, so a
    search from that task finds it. Never called on the moves of a step
    (Do -> Doing -> Done): move_task calls it only for moves into Do or Undo.
    """
    if w.new_waits is None:
        return  # the next pass searches every change with waiting tasks anyway
    revived = w.revived
    if len(revived) >= REVIVED_MAX:
        w.new_waits = None
        revived.clear()
        return
    revived.add(rec.id)


def _loadable(w: Work, ids: Iterable[int]) -> list[ChangeRec]:
    """_loadable loads the changes of ids that can be loaded (the runner reports the others)."""
    recs = []
    for cid in ids:
        try:
            recs.append(w.records.crec(cid))
        except (DatabaseCorruptError, NotFoundError) as e:
            log.debug("skipping change %s: %s", cid, e)
    return recs


def _unready(w: Work, crec: ChangeRec) -> int:
    counts = crec.counts if crec.counts is not None else w.records.counts(crec)
    get = counts.get  # (the four _READY statuses, without a generator: once per task that becomes ready)
    return sum(counts.values()) - get(_DONE, 0) - get(_UNDONE, 0) - get(_HOLD, 0) \
        - get(_ERROR, 0)


def mark_ready(w: Work, crec: ChangeRec) -> None:
    """mark_ready makes a change ready: its ready time, its waiters woken and its cleanups run after the commit."""
    if crec.ready_time is None:
        changeset = w.changeset
        changeset.runnable = True  # its cleanups may run now: an ensure pass claims them
        crec.ready_time = w.now()
        w.dirty_change(crec)
        changeset.became_ready.append(crec.id)
        w.records.counts(crec)  # loads the unclean count too
        if crec.unclean > 0 and w.ready_hook is not None:
            w.ready_hook(crec)  # (a runner that hands on marks them clean now when a pass would only do that)
        if crec.unclean <= 0 and not crec.clean:
            crec.clean = True  # nothing to clean (no tasks, as snapd's IsClean: every task is clean)


def notify_change(w: Work, crec: ChangeRec) -> None:
    """notify_change tells the change status hooks of a change's new status (once per move)."""
    new = w.change_status(crec)
    old = crec.observed
    if new is not old:
        crec.observed = new
        if old is not None:
            _fire(w, w.change_hooks, w.change_handle(crec), old, new)


def tell_stored(w: Work, crec: ChangeRec, row_status: Status | None, stored: Status) -> bool:
    """tell_stored tells the change status hooks the status a shared store's commit stores, if they were not told.

    On a shared store (PostgreSQL, several hosts) each move is told as it
    is made, from the counts the unit of work read, which miss what other
    hosts committed since; the commit counts again under the change's row
    lock (engine.shared.settle_changes) and stores what follows. When that
    is not what the hooks were last told in this unit of work, they are
    told the move now (old: the status they were last told, or the row's
    when they were told nothing): the host whose commit stores a status has
    told it, at that moment, with the lock held. Nothing is told for a
    change whose hooks were told nothing in this unit and whose row already
    says stored (another host's commit stored it, and told it there), nor
    for a change this unit made and moved no task of. A hook that raises
    here is logged and the commit goes on. It returns whether a hook was called.
    """
    hooks = w.change_hooks
    told = crec.observed
    if not hooks or told is None or told is Status.DEFAULT:
        return False
    if told is crec.db_status:  # (the status this unit read: it told nothing, or came back to it)
        if row_status is None:
            return False
        told = row_status
    if told is stored:
        return False
    crec.observed = stored
    obj = w.change_handle(crec)
    for hid, fn in list(hooks.items()):
        try:
            if fn(obj, told, stored) is True:
                hooks.pop(hid, None)
        except BaseException as e:  # user code, inside a commit: said, and the commit goes on
            if isinstance(e, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C: not the hook's failure (the commit is rolled back)
            log.error("change %s: its status hook %s raised %s when told %s -> %s at commit; the commit goes on",
                      crec.id, callable_name(fn), exception_text(e), told.value, stored.value)
    return True


def _fire(w: Work, hooks: dict[int, Any], obj: Any, old: Status, new: Status) -> None:
    failures = w.hook_failures
    for hid, fn in list(hooks.items()):
        if failures is None:
            done = fn(obj, old, new)
        else:
            try:
                done = fn(obj, old, new)
            except BaseException as e:  # user code: the runner fails the task it was recording
                failures.append((fn, obj, e))
                continue
        if done is True:
            hooks.pop(hid, None)


def abort_lanes(w: Work, crec: ChangeRec, lanes: list[int], aborted: set[int], seen: set[int]) -> None:
    """abort_lanes aborts the tasks of lanes and what waits for them, sparing tasks also in a healthy lane."""
    recs = w.records.change_trecs(crec)
    w.records.load_graph(recs)
    wanted = set(lanes)
    has_live: set[int] = set()
    has_dead: set[int] = set()
    lane_tasks = []
    for t in recs:
        tlanes = t.lanes or [0]
        if wanted.intersection(tlanes):
            lane_tasks.append(t)
            continue
        # Opinion about lanes not being killed: a lane that is entirely
        # live keeps its tasks alive, even those also in a killed lane.
        (has_live if effective_status(t) in _LIVE else has_dead).update(tlanes)
    doomed = [t for t in lane_tasks
              if not any(lane in has_live and lane not in has_dead for lane in t.lanes or [0])]
    aborted.update(lanes)
    if doomed:
        abort_tasks(w, crec, doomed, aborted, seen)


def abort_tasks(w: Work, crec: ChangeRec, tasks: list[TaskRec], aborted: set[int], seen: set[int]) -> None:
    """abort_tasks aborts tasks and what waits for them, and the lanes they are in (Change.abort, abort_lanes)."""
    more_lanes: list[int] = []
    i = 0
    while i < len(tasks):
        t = tasks[i]
        i += 1
        if t.id in seen:
            continue
        seen.add(t.id)
        status = effective_status(t)
        if status is Status.DO:
            w.set_task_status(t, Status.HOLD)  # still pending: never start
        elif status is Status.DOING:
            w.set_task_status(t, Status.ABORT)  # running: stop, then undo
        elif status is Status.DONE:
            w.set_task_status(t, Status.UNDO)  # done: undo it
        tlanes = w.records.lanes(t) or [0]
        for lane in tlanes:
            if lane not in aborted:
                more_lanes += tlanes
        halted = [h for h in w.records.halt_ids(t) if h not in seen]
        tasks += w.records.trecs(halted)
    if more_lanes:
        abort_lanes(w, crec, more_lanes, aborted, seen)


_COMPUTING, _WAITING, _NOT_WAITING = 1, 2, 3


def is_change_waiting(w: Work, crec: ChangeRec) -> bool:
    """is_change_waiting applies snapd's Wait rule: every pending task is blocked by a waiting one."""
    recs = w.records.change_trecs(crec)
    w.records.load_graph(recs)
    visited: dict[int, int] = {}
    for t in recs:
        if t.status in _FINAL or t.status is Status.WAIT:
            continue
        if t.status not in (Status.DO, Status.UNDO) or not _task_waiting(w, t, visited):
            return False
    return True


def _deps(w: Work, t: TaskRec) -> list[TaskRec]:
    ids = w.records.wait_ids(t) if t.status is Status.DO else w.records.halt_ids(t)
    return w.records.trecs(ids)


def _frame(w: Work, t: TaskRec) -> Generator[TaskRec, bool, bool]:
    waiting = False
    for dep in _deps(w, t):
        if dep.status is Status.WAIT:
            waiting = True
        elif dep.status in _FINAL:
            continue
        elif dep.status in (Status.DO, Status.UNDO):
            waiting = yield dep
            if not waiting:
                break  # something runnable: not waiting
        else:
            return False
    return waiting


def _task_waiting(w: Work, root: TaskRec, visited: dict[int, int]) -> bool:
    # An explicit stack instead of recursion: chains may be thousands long.
    known = visited.get(root.id)
    if known is not None:
        return known == _WAITING
    visited[root.id] = _COMPUTING
    stack = [(root, _frame(w, root))]
    result: bool | None = None
    while stack:
        t, gen = stack[-1]
        try:
            child = gen.send(result) if result is not None else next(gen)
        except StopIteration as stop:
            stack.pop()
            result = bool(stop.value)
            visited[t.id] = _WAITING if result else _NOT_WAITING
            continue
        result = None
        state = visited.get(child.id)
        if state == _COMPUTING:
            log.warning("detected cyclic dependencies for task %s in change %s", child.id, child.change_id)
            result = False
        elif state is not None:
            result = state == _WAITING
        else:
            visited[child.id] = _COMPUTING
            stack.append((child, _frame(w, child)))
    return bool(result)


def dependency_cycles(w: Work, starts: list[TaskRec]) -> list[list[TaskRec]]:
    """dependency_cycles finds the cycles that keep tasks from ever running.

    A Do task runs once all it waits for is Done, an Undo task once all that
    waits for it is ready: Do tasks waiting for each other in a circle (or
    Undo tasks, through the reverse edges) wait forever. Starting from
    starts, it follows those edges, across changes too, and returns each
    strongly connected set of two or more such tasks (or one waiting for
    itself), by id.

    Only the starts from which a cycle may be reached are searched from
    (_cycle_roots): a chain whose tasks each wait for an older one costs
    a look at each task's edges, not a search.
    """
    def succ(t: TaskRec) -> list[TaskRec]:
        if t.status is Status.DO:
            return [x for x in w.records.trecs(w.records.wait_ids(t)) if x.status is Status.DO]
        return [h for h in w.records.trecs(w.records.halt_ids(t)) if h.status is Status.UNDO]

    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[TaskRec] = []
    cycles: list[list[TaskRec]] = []
    for root in _cycle_roots(w, starts):
        if root.id in index:
            continue
        # Tarjan's algorithm, iteratively: chains may be thousands of tasks long.
        work: list[tuple[TaskRec, list[TaskRec], int]] = [(root, succ(root), 0)]
        index[root.id] = low[root.id] = len(index)
        stack.append(root)
        on_stack.add(root.id)
        while work:
            node, nexts, i = work[-1]
            if i < len(nexts):
                work[-1] = (node, nexts, i + 1)
                nxt = nexts[i]
                if nxt.id not in index:
                    index[nxt.id] = low[nxt.id] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt.id)
                    work.append((nxt, succ(nxt), 0))
                elif nxt.id in on_stack:
                    low[node.id] = min(low[node.id], index[nxt.id])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent.id] = min(low[parent.id], low[node.id])
            if low[node.id] == index[node.id]:
                members = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m.id)
                    members.append(m)
                    if m is node:
                        break
                if len(members) > 1 or node in nexts:
                    cycles.append(sorted(members, key=lambda r: r.id))
    return cycles


def _cycle_roots(w: Work, starts: list[TaskRec]) -> list[TaskRec]:
    """_cycle_roots are the starts (in Do or Undo) with an edge to a task of a greater or equal id, or outside starts.

    A search from them finds every cycle reachable from starts. Ids grow
    along no cycle: its task of the smallest id has an edge (followed as
    dependency_cycles follows it: a Do task's waits, an Undo task's halts)
    to a task of a greater id, or to itself. A cycle reachable from starts
    either lies within starts, and the search starts at that task, or has a
    task outside starts, and every path from starts to it leaves starts by
    an edge whose task is a root. (Whatever the order edges were added in:
    the rule is over ids, not over when an edge came.)
    """
    ids = {t.id for t in starts}
    roots = []
    records = w.records
    for t in starts:
        status = t.status
        if status is Status.DO:
            nexts = records.wait_ids(t)
        elif status is Status.UNDO:
            nexts = records.halt_ids(t)
        else:
            continue
        tid = t.id
        for x in nexts:
            if x >= tid or x not in ids:
                roots.append(t)
                break
    return roots
