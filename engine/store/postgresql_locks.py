# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresChangeLocks: the change rows a unit of work locks, in one order for every host, so that none deadlocks.

A unit of work locks change rows (engine.shared, docs/scale-out.md, "Locking"):
FOR SHARE those whose status its commit keeps, FOR NO KEY UPDATE those it
settles or whose data people set (own_change), and a Do claim share-locks
the change of its tasks early, in its own round trip. With 2 hosts on the
snap-install shape (bench/installs.py: many changes of 4 lanes) the server
found 3 to 8 deadlocks a run between two commits, each a second of both hosts
stalled: each held share locks (its claim's, or keep_changes') and waited for
the exclusive lock of a row the other shared, or both shared one row and
both wanted it exclusively (an upgrade).

The order, for every change row lock of a transaction (the task rows it
locks come before, at the step that reads them):

- a transaction waits for a change row's lock only when every change row it
  already holds has a smaller id, and never to make its own share lock
  exclusive: the rows of a commit are locked in one pass, in ascending id,
  each in the mode it needs (FOR SHARE or FOR NO KEY UPDATE: one statement
  for each run of ids of one mode, all in one round trip);
- a lock that would break that order (an id below one held, or a share lock
  made exclusive: a kept change whose check failed, a second round of the
  status hooks, a change owned after others were locked) is taken NOWAIT:
  if another transaction holds it, lock_not_available is a
  DatabaseConflictError, and the unit of work is run again (the recorder's
  20 ms, an ensure pass's 10 ms) instead of a deadlock's second;
- a claim share-locks its change early (CLAIMED_ALONE) only when that change
  is the one this transaction claimed or locked tasks of (a chain's step, W1's
  units), so that its commit, which keeps that change, asks nothing more;
  a unit of work on several changes takes all its change locks at commit.

Two transactions that each wait only for a greater id than any they hold
cannot wait for each other in a circle: so no deadlock between the engine's
own units of work on change rows, whatever the hosts do.
tests/reliability/test_pg_deadlocks.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import Row
from .postgresql_counts import probed
from .postgresql_generic import id_array
from .postgresql_sql import CHANGE_UPDATE, CHANGES_LOCKED, CHANGES_SHARED, CHANGES_WAITING, CLAIMED_SHARED, PROBE
from .postgresql_writes import PostgresWrites
from .statements import NOTICE_COLUMNS

#: CLAIMED_SHARED when the change is the only one of the tasks this transaction claimed, and of those it locked
#: before (%s: its runner; %s: the changes read ahead with its task locks; %s: its runner again).
CLAIMED_ALONE = CLAIMED_SHARED.replace(
    " ORDER BY id FOR SHARE",
    " AND id = ALL (%s::bigint[]) AND NOT EXISTS (SELECT 1 FROM tasks WHERE lease_until IS NOT NULL "
    "AND runner = %s AND status = 'Do' AND change_id <> changes.id) ORDER BY id FOR SHARE", 1)
assert CLAIMED_ALONE != CLAIMED_SHARED
_NOWAIT = " NOWAIT"


class PostgresChangeLocks(PostgresWrites):
    """PostgresChangeLocks takes a transaction's change row locks in ascending id, NOWAIT where that order breaks."""

    def _lock_pass(self, share: Sequence[int], excl: Sequence[int],
                   more: dict[str, tuple[str, Any]]) -> tuple[dict[int, Row], dict[int, Row], dict[str, Any]]:
        """_lock_pass locks change rows (share: FOR SHARE, excl: FOR NO KEY UPDATE) in the order (module doc).

        The statements of more run after the locks in the same round trip.
        It returns the rows locked shared (id, status, explicit_status,
        ready_time) and exclusively (CHANGE_LIST), by id, and more's rows.
        """
        assert share or excl
        held = self._held
        top = max(held, default=0)
        modes = {i: False for i in share}
        modes.update((i, True) for i in excl)
        statements: list[tuple[bool, str, Sequence[Any]]] = []
        late: dict[bool, list[int]] = {False: [], True: []}
        run: list[int] = []
        mode = False
        for i in sorted(modes):
            ex = modes[i]
            if i in held and (held[i] or not ex):
                late[ex].append(i)  # (held already: read again, locked again without waiting)
                continue
            if i in held or i < top:
                late[ex].append(i)  # (out of order: NOWAIT)
                continue
            if run and ex != mode:
                statements.append((mode, CHANGES_LOCKED if mode else CHANGES_SHARED, (run,)))
                run = []
            run.append(i)
            mode = ex
        if run:
            statements.append((mode, CHANGES_LOCKED if mode else CHANGES_SHARED, (run,)))
        # The NOWAIT ones first: they never wait, so where they come changes nothing.
        for ex in (False, True):
            if late[ex]:
                sql = CHANGES_LOCKED if ex else CHANGES_SHARED
                statements.insert(0, (ex, sql + _NOWAIT, (late[ex],)))
        first, *rest = statements
        extra: dict[str, tuple[str, Any]] = {f"lock{n}": (s, a) for n, (_, s, a) in enumerate(rest)}
        extra.update(more)
        rows, got = self._read_ahead((first[1], first[2]), extra)
        shared: dict[int, Row] = {}
        locked: dict[int, Row] = {}
        for (ex, _, _), found in zip(statements, [rows, *(got.pop(f"lock{n}") for n in range(len(rest)))],
                                     strict=True):
            for r in found:
                (locked if ex else shared)[r[0]] = r
        for i, ex in modes.items():
            held[i] = held.get(i, False) or ex
        return shared, locked, got

    def locked_change_rows(self, ids: Sequence[int]) -> list[Row]:
        """locked_change_rows locks change rows (in the order: module doc) and reads them as committed now."""
        if self._read_only:
            return super().change_rows(ids)
        todo = sorted({i for i in ids if i is not None})
        if not todo:
            return []
        ready = self._ahead.pop("locked_rows", None)
        if ready is not None and ready[0].issuperset(todo):  # (locked with keep_changes' pass, read ahead)
            return [ready[1][i] for i in todo if i in ready[1]]
        # What settle_changes asks next, in the same round trip: what their status needs of their tasks, read
        # again under the locks (PROBE: the unready statuses there, counted only where none is), and their
        # change-update notices (a status that moved repeats one).
        _, locked, more = self._lock_pass((), todo, self._settle_ahead(todo))
        self._settled_ahead(todo, more)
        return [locked[i] for i in todo if i in locked]

    def _settle_ahead(self, todo: list[int]) -> dict[str, tuple[str, Any]]:
        """_settle_ahead are the statements read with the locks of changes to settle (locked_change_rows)."""
        return {
            "counts": (PROBE, self.probe_args(cids=id_array(todo), ex="{}", cap=1)),
            "notices": (f"SELECT {', '.join(NOTICE_COLUMNS)} FROM notices WHERE type = %s AND key = ANY (%s)",
                        (CHANGE_UPDATE, [str(i) for i in todo])),
        }

    def _settled_ahead(self, todo: list[int], more: dict[str, Any]) -> None:
        """_settled_ahead keeps what _settle_ahead read, for the questions settle_changes asks next."""
        found = probed(more["counts"], todo, 1)
        self._learn(found)
        self._ahead["counts_of"] = (set(todo), found)
        keys = [str(i) for i in todo]
        self._ahead["notices"] = (set(keys), {r[2]: r for r in more["notices"]})

    def keep_changes(self, statuses: Mapping[int, str], settle: Sequence[int] = ()) -> set[int]:
        """keep_changes share-locks change rows and returns those that keep their status at this commit.

        A change is kept if its row, as committed once locked, still has the
        status of statuses, no explicit status and no ready time, and no task
        of it is in Wait (engine.shared tells why that is enough). settle are
        the changes the commit settles: their rows are locked exclusively in
        the same pass (and read ahead for locked_change_rows); a change of
        statuses not kept is settled too, its share lock made exclusive NOWAIT.
        """
        todo = sorted(statuses)
        if self._read_only or not todo:
            return set()
        shared = self._shared
        if shared is not None and shared[0].issuperset(todo):
            # Share-locked and checked with the claim (runnable_do), and held since: nothing to ask again.
            rows, waiting = [r for r in shared[1] if r[0] in statuses], shared[2]
        else:
            excl = sorted({i for i in settle if i is not None} - set(todo))
            more: dict[str, tuple[str, Any]] = self._settle_ahead(excl) if excl else {}
            more["waiting"] = (CHANGES_WAITING, (todo,))
            share_rows, locked, got = self._lock_pass(todo, excl, more)
            rows, waiting = list(share_rows.values()), {r[0] for r in got["waiting"]}
            if excl:
                self._settled_ahead(excl, got)
                self._ahead["locked_rows"] = (set(excl), locked)
        return {cid for cid, status, explicit, ready in rows
                if status == statuses[cid] and explicit is None and ready is None and cid not in waiting}

    def _note_shared(self, rows: list[Row], waiting: set[int]) -> None:
        """_note_shared keeps what keep_changes asks of change rows share-locked early (held until the commit)."""
        known = self._shared
        if known is not None:  # (a second claim in the transaction: what both locked; a row's lock holds)
            fresh = {r[0] for r in rows}
            rows = [*rows, *(r for r in known[1] if r[0] not in fresh)]
            waiting = waiting | (known[2] - fresh)
        self._shared = ({r[0] for r in rows}, rows, waiting)
        for r in rows:
            self._held.setdefault(r[0], False)

    def _claimed_alone(self, rows: list[Row], known: list[int]) -> None:
        """_claimed_alone counts the change of a claim's tasks as share-locked where CLAIMED_ALONE may have locked it.

        (Also when it was not returned: a row whose status moved while the
        claim waited for it stays locked, unseen. Counted held, a later lock
        of it is taken NOWAIT: never a wait that could close a circle.)
        """
        cids = {r[1] for r in rows if r[1] is not None}
        if len(cids) == 1 and cids.issuperset(known):
            self._held.setdefault(next(iter(cids)), False)
