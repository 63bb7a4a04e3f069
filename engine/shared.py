# SPDX-License-Identifier: GPL-3.0-or-later
"""settle_changes: the changes a unit of work touched, settled under their row locks at commit (shared stores).

On a single writer's store (SQLite) the counts a unit of work keeps of a
change's tasks are exact, and so is everything derived from them. On a
shared store (PostgreSQL) other hosts write other tasks of the same change
at the same moment: each unit of work locks the rows of the tasks it reads
(engine.store.postgresql), and at commit it locks the rows of the changes
it touched, in id order, reads each one and its task counts again (they
then hold what other hosts committed and what this unit wrote), and stores
what follows from them: the status, the ready time (a change becomes ready
once, whichever host finishes its last task) and the clean flag.

What people set on a change (its data, an explicit status) is written only
by a unit of work that locked the change row before reading it
(UnitOfWork.own_change); the others keep what the row holds. The lock on a
change is so held only from this step to the commit: hosts working on the
tasks of one change run side by side, and serialise only there. The rows
of a commit (those kept, share-locked, and those settled) are locked in one
pass, in ascending id: engine.store.postgresql_locks tells the order that
keeps two hosts from deadlocking. docs/scale-out.md tells the whole protocol.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from ._records import ChangeRec
from .errors import DatabaseCorruptError
from .status import Status
from .statusrules import STATUS_ORDER, tell_stored

if TYPE_CHECKING:
    from ._work import Work

log = logging.getLogger("engine.state")

_READY = (Status.DONE, Status.UNDONE, Status.HOLD, Status.ERROR)
_ORDER = {s: i for i, s in enumerate(STATUS_ORDER)}
#: The statuses a change keeps without being settled: unready, and not Wait (whose rule follows edges).
_KEEPABLE = frozenset(s for s in STATUS_ORDER[:STATUS_ORDER.index(Status.WAIT)])


def _kept_statuses(w: Work, ids: list[int], owned: set[int]) -> dict[int, str]:
    """_kept_statuses are the changes of ids whose status s this commit keeps whatever other hosts commit.

    The change's row says s (unready, not Wait, no explicit status, no
    ready time), every task of it that this unit wrote has a status that
    comes no earlier than s in STATUS_ORDER and is not Wait, and one of
    them has s itself: that task stays s until this unit commits (its row
    is locked by the write), and a unit of work that moves it later locks
    it after this commit and sees what this unit wrote. The store checks
    the row again under its share lock (keep_changes), and that the change
    has no task in Wait. So no status earlier than s can be there without
    a commit that settled it, and s is there: the change's status stays s.
    (A unit of work that settles takes the row's exclusive lock, so it
    waits for every unit holding the share lock, and counts what they
    wrote.) docs/scale-out.md, "Locking".
    """
    cs, changes = w.changeset, w.records.changes
    candidates: dict[int, Status] = {}
    for cid in ids:
        rec = changes.get(cid)
        s = rec.db_status if rec is not None else None
        if (rec is not None and s in _KEEPABLE and rec.explicit is None and rec.ready_time is None
                and cid not in owned and cid not in cs.new_changes.done and cid not in cs.dirty_changes.done):
            candidates[cid] = s  # (not a change of this unit, nor one it wrote: those are settled, as ever)
    if not candidates:
        return {}
    pinned: set[int] = set()
    tasks = w.records.tasks
    for tid in itertools.chain(cs.dirty_tasks.done, cs.new_tasks.done):
        t = tasks.get(tid)
        s = candidates.get(t.change_id) if t is not None and t.change_id is not None else None
        if s is None:
            continue
        assert t is not None and t.change_id is not None
        if t.status is s:
            pinned.add(t.change_id)
        elif t.status is Status.WAIT or _ORDER.get(t.status, -1) < _ORDER[s]:
            del candidates[t.change_id]
    return {cid: s.value for cid, s in candidates.items() if cid in pinned}


def settle_changes(w: Work, ids: list[int], owned: set[int], rounds: int = 3) -> list[int]:
    """settle_changes locks, reads again and writes the changes of ids; it returns those that became ready.

    owned are the changes whose row this unit of work locked before
    changing what people set on them: their data and explicit status are
    this unit's; the others' are the row's.

    The change status hooks are told the status stored when they were not
    told it in this unit of work (statusrules.tell_stored); what they write
    then is written and settled by this commit (rounds: how many times).

    A change whose status this unit cannot move, whatever the other hosts
    commit beside it, is only share-locked (_kept_statuses, Store.keep_changes):
    its row is neither counted again nor written, and the hosts committing
    such units of work on one change do not wait for each other.
    """
    keep = _kept_statuses(w, ids, owned)
    if keep:
        # (The rows to settle are locked in the same pass, all in one order: engine.store.postgresql_locks.)
        kept = w.store.keep_changes(keep, [cid for cid in ids if cid not in keep])
        ids = [cid for cid in ids if cid not in kept]
        if not ids:
            return []
    became: list[int] = []
    rows = []
    locked: list[tuple[ChangeRec, ChangeRec, tuple[Any, ...]]] = []
    told = False
    for row in w.store.locked_change_rows(ids):
        cid = row[0]
        try:
            fresh = ChangeRec.from_row(row)
        except DatabaseCorruptError as e:  # the runner reports it
            log.error("cannot store the status of change %s: %s", cid, e)
            continue
        rec = w.records.changes.get(cid)
        if rec is None:
            rec = w.records.changes[cid] = fresh
        elif cid not in owned:
            rec.data, rec.explicit = fresh.data, fresh.explicit
        locked.append((rec, fresh, tuple(row)))
    w.records.count_again([rec for rec, _, _ in locked])  # under the locks, all in one query
    for rec, fresh, row in locked:
        try:
            counts = w.records.counts(rec)
            status = w.change_status(rec)
        except DatabaseCorruptError as e:  # a task edited by hand: the runner reports it
            log.error("cannot store the status of change %s: %s", rec.id, e)
            continue
        if fresh.ready_time is not None:
            rec.ready_time = fresh.ready_time  # another host (or an earlier commit) made it ready
        elif (rec.explicit is not None and rec.explicit.ready) or (
                any(counts.values()) and sum(n for s, n in counts.items() if s not in _READY) == 0):
            rec.ready_time = rec.ready_time or w.now()
            became.append(rec.id)
        else:
            rec.ready_time = None  # what this unit counted alone said ready; other hosts' tasks say not
        rec.clean = fresh.clean or (rec.ready_time is not None and rec.unclean <= 0)
        if w.change_hooks:  # (the hooks' bookkeeping: statusrules)
            told = tell_stored(w, rec, fresh.db_status, status) or told
        rec.db_status = status
        if row[3] != status.value:
            w.change_updated(rec)
        new = rec.row(status)
        if new != row:
            rows.append(new)
    if rows:
        w.store.update_changes([r[1:] + r[:1] for r in rows])
    if told and rounds > 1:
        # What the hooks told here wrote is written and settled by this commit too (a few rounds at most).
        w.flush()
        more = sorted({*w.changeset.touched.take(), *w.changeset.dirty_changes.take()})
        if more:
            became += settle_changes(w, more, owned, rounds - 1)
    return became
