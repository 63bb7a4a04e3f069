# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresStore: the Store on PostgreSQL (psycopg 3), shared by several runner hosts.

One connection per State. Each unit of work is one real transaction (READ
COMMITTED), begun by its first statement and ended by the State's unlock.
What only PostgreSQL does, in one place:

- the forms of the statements: INSERT ... ON CONFLICT, an IN list as one
  array parameter (= ANY), no index hints;
- row locks: a task row is loaded FOR NO KEY UPDATE, so that a unit of work never
  writes back a stale copy of a task; a change row is locked when a unit
  of work writes what people set on it (its data, an explicit status) and,
  at every commit, for the status, ready time and clean flag that the unit
  derives from its tasks (engine.shared); candidates for a claim lock their
  own rows with SKIP LOCKED, so a host passes over the tasks another host
  is writing;
- the claim: one UPDATE ... WHERE id IN (SELECT ... FOR NO KEY UPDATE OF t
  SKIP LOCKED) RETURNING, recording this runner and its lease; leases extended
  by a heartbeat, and expired ones found by any host's reaper;
- ids in blocks from the sequences table, on a side connection in
  autocommit mode, so that no unit of work holds the sequence rows;
- NOTIFY at the commit of a unit of work that made tasks runnable;
- error codes: deadlocks, serialization failures and lost connections are
  DatabaseConflictError (rolled back, run it again).

docs/scale-out.md tells the design, the locking and the failure cases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from .._time import POLL_INTERVAL
from .base import Row
from .postgresql_generic import (
    CHANGES_AND_FLAGS,
    CLAIM_AHEAD,
    END_LEASES,
    LOCK_AHEAD_ONE,
    RECOUNT_HALTED_BY_ONE,
    TASKS_LOCKED_PLANNED,
    id_array,
    split_claim_ahead,
    split_lock_ahead,
)
from .postgresql_locks import CLAIMED_ALONE, PostgresChangeLocks
from .postgresql_sql import (
    CAP,
    CHANGE_UPDATE,
    CHANNEL,
    CLAIM_DO,
    CLAIM_STARTED,
    CLAIM_UNDO,
    GRAPH_OF,
    HELD,
    ID_BLOCK,
    LOCKED_IN_STATUS,
    NOTICE_CHANNEL,
    NOW,
    PROBE_OF,
    RECOUNT_HALTED,
)

__all__ = ["CHANNEL", "NOTICE_CHANNEL", "PostgresStore"]

#: The blocked changes (blocked_changes) with an Undo task, or a Do task waiting for a task of a greater or equal id or
#: of another change: those a cycle of waiting tasks can go through (cycle_suspects).
CYCLE_SUSPECTS = (
    "SELECT DISTINCT t.change_id FROM tasks t WHERE t.status IN ('Do','Undo') AND t.change_id IS NOT NULL "
    "AND t.change_id IN (SELECT change_id FROM tasks WHERE status IN ('Do','Undo') "
    "AND ((status = 'Do' AND blockers > 0) OR status = 'Undo')) "
    "AND (t.status = 'Undo' OR EXISTS (SELECT 1 FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id "
    "WHERE d.task_id = t.id AND (d.wait_task_id >= d.task_id OR w.change_id IS DISTINCT FROM t.change_id)))")

log = logging.getLogger("engine.store")

#: How often, at most, a host's hand-ons that left work for want of workers wake the other hosts (seconds):
#: as often as the hosts poll anyway. (Woken at every batch, W1 with 2 hosts ran at 0.6 to 0.9 times one host's
#: rate, every NOTIFY costing the other host a pass; at most every 0.1 s, 0.7 to 1.3 times; never, 1.6 to 1.7.)
OTHERS_INTERVAL = POLL_INTERVAL


class PostgresStore(PostgresChangeLocks):
    """PostgresStore is the Store on PostgreSQL: row locks, reads ahead, claims under leases, wake-ups and ids."""

    _others_next = 0.0  # when release_claims may next wake the other hosts for work left

    # -- row locks: a task row as it is read, a change row as it is written ------------------

    def notice_row(self, type: str, key: str) -> Row | None:
        """notice_row loads the notice of a type and key (a change's change-update notice is read ahead)."""
        known = self._ahead.get("notices")
        if type == CHANGE_UPDATE and known is not None and key in known[0]:
            row: Row | None = known[1].get(key)
            return row
        return super().notice_row(type, key)

    def task_rows(self, ids: Sequence[int]) -> list[Row]:
        """task_rows locks and loads tasks (what a unit of work read of a task stays true until it commits).

        What a unit of work asks next about the tasks it locked (their edges,
        lanes and lease holders, their changes, the counts of those changes'
        tasks, the changes with waiting tasks) is read in the same round trip
        (_read_ahead).
        """
        if self._read_only or not ids:
            return super().task_rows(ids)
        todo = sorted(set(ids))
        ex = self._unprobed(todo)
        # (Planned once per connection but GRAPH_OF, the ids as array literals: postgresql_generic.)
        arr = id_array(todo)
        # (Up to 2 a task: a chain's step claims one task after its outcome, W1's recorder a page of them.)
        probing = self.probe_args(ids=arr, ex=id_array(ex), cap=min(CAP, 2 * len(todo) + 1))
        ahead: dict[str, tuple[str, Any]] = {"all": (LOCK_AHEAD_ONE, {**probing, "one": str(todo[0])})} \
            if len(todo) == 1 else {  # (one statement for one task, a chain's step: postgresql_generic)
                # (Each statement in a pipeline costs the client ~0.1 ms.)
                "graph": (GRAPH_OF, (arr, arr, arr)),
                "changes": (CHANGES_AND_FLAGS, (arr,)),  # (and the flags: the changes with tasks in Wait, or queued)
                "probe": (PROBE_OF, probing)}
        held, more = self._read_ahead((TASKS_LOCKED_PLANNED, (arr,)), ahead)
        if "all" in more:
            more["graph"], more["changes"], more["probe"] = split_lock_ahead(more.pop("all"))
        rows: list[Row] = [r[:-1] for r in held]
        self._note(rows)
        probe = more.pop("probe")
        more["runners"] = [(r[0], r[-1]) for r in held]
        graph, tagged = more.pop("graph"), more.pop("changes")
        more["changes"] = [r[1:] for r in tagged if r[0] == "c"]
        flags = [r[:2] for r in tagged if r[0] != "c"]
        more["edges"] = [(a, b) for what, a, b in graph if what == "e"]
        more["lanes"] = [(a, b) for what, a, b in graph if what == "l"]
        more["waiting"] = [(cid,) for what, cid in flags if what == "w"]
        self._queued = [cid for what, cid in flags if what == "q"]
        more["ids"] = set(todo)
        more["change_ids"] = {r[0] for r in more["changes"]}
        self._counted.update(more["change_ids"])
        self._ahead = more
        # (A change probed before in this transaction keeps what that said: counts_besides takes the tasks read
        # since into account. Probed again, it would leave out every task read since, of every change: the first
        # pass over 1,000 changes of 12 tasks sent 3,600 ids at each of its 300 reads.)
        fresh = {r[1] for r in rows if r[1] is not None and r[1] not in self._probes}
        self._note_probe(probe, fresh, ex, min(CAP, 2 * len(todo) + 1))
        return rows

    def status_counts_of(self, ids: Sequence[int]) -> dict[int, tuple[dict[str, int], int]]:
        """status_counts_of is status_counts for several changes (read ahead when their rows were locked).

        What was read ahead is what a change's status needs (PROBE): an
        unready status there counts 1, and so do the unclean tasks while one
        is unready; the whole counts only where no task is unready.
        """
        known = self._ahead.get("counts_of")
        if known is None or not known[0].issuperset(ids):
            return super().status_counts_of(ids)
        want = set(ids)
        return {cid: p.result() for cid, p in known[1].items() if cid in want}

    def _covered(self, ids: Sequence[int]) -> bool:
        """_covered says whether what was read ahead covers the tasks of ids."""
        known = self._ahead.get("ids")
        return known is not None and bool(ids) and known.issuperset(ids)

    def edges_touching(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """edges_touching returns every (task, wait task) edge with an end in ids (read ahead if it was)."""
        if not self._covered(ids):
            return super().edges_touching(ids)
        want = set(ids)
        return sorted({(r[0], r[1]) for r in self._ahead["edges"]
                       if r[0] in want or r[1] in want})

    def lanes(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """lanes returns the (task, lane) rows of the given tasks (read ahead if they were)."""
        if not self._covered(ids):
            return super().lanes(ids)
        want = set(ids)
        return [(r[0], r[1]) for r in self._ahead["lanes"] if r[0] in want]

    def change_row(self, cid: int) -> Row | None:
        """change_row loads one change (read ahead with the tasks of it that were locked)."""
        if cid in self._ahead.get("change_ids", ()):
            row: Row = next(r for r in self._ahead["changes"] if r[0] == cid)
            return row
        return super().change_row(cid)

    def changes_with_waiting_tasks(self) -> list[int]:
        """changes_with_waiting_tasks lists the changes that have tasks in Wait (read ahead if it was)."""
        if "waiting" in self._ahead:
            return [r[0] for r in self._ahead["waiting"]]
        return super().changes_with_waiting_tasks()

    def queued_changes(self) -> list[int]:
        """queued_changes lists the changes still marked queued (read ahead with the tasks this transaction locked).

        What was read ahead holds until this transaction writes to
        change_affects; a change another host queued since is not among
        them, and the claim passes over its tasks (CLAIM_DO).
        """
        if self._queued is not None:
            return list(self._queued)
        return super().queued_changes()

    def recount_blockers(self, ids: Sequence[int], halted_by: Sequence[int] = ()) -> None:
        """recount_blockers (a step of write too) recomputes blockers counts in one pipelined statement.

        The tasks waiting for halted_by are found by the statement itself, as
        the edges are when it runs.
        """
        if len(halted_by) == 1:  # (a chain's step: planned once, postgresql_generic)
            self.send(RECOUNT_HALTED_BY_ONE, (id_array(ids), halted_by[0]))
        elif halted_by:
            self.send(RECOUNT_HALTED, (id_array(ids), id_array(halted_by)))
        elif ids:
            super().recount_blockers(ids)

    def cycle_suspects(self) -> list[int]:
        """cycle_suspects are the blocked changes that a cycle could go through (CYCLE_SUSPECTS), read without a lock.

        The first pass of a runner searches them for cycles, each loading
        (so locking) every task of the change: a change none of whose Do
        tasks waits for a task of a greater or equal id or of another change,
        and with no Undo task, has no cycle (statusrules._cycle_roots: a
        search from it starts nowhere), and is not loaded. The first pass of
        a host over 1,000 new changes of 4 lanes of chains (bench/installs.py)
        held the rows of their 12,000 tasks for 8 to 15 s, and the other
        host's units waited for them (log_lock_waits) before their first task.
        """
        if self._read_only:
            return super().cycle_suspects()
        return [r[0] for r in self.run(CYCLE_SUSPECTS)]

    def tasks_of_change(self, cid: int) -> list[Row]:
        """tasks_of_change locks and loads the tasks of a change."""
        if self._read_only:
            return super().tasks_of_change(cid)
        rows = self.run(self.sql["tasks_of_change"].sql + " FOR NO KEY UPDATE", (cid,))
        self._note(rows)
        return rows

    def unclean_tasks(self, cid: int) -> list[Row]:
        """unclean_tasks locks and loads the unclean tasks of a change."""
        if self._read_only:
            return super().unclean_tasks(cid)
        rows = self.run(self.sql["unclean_tasks"].sql + " FOR NO KEY UPDATE", (cid,))
        self._note(rows)
        return rows

    # -- claims, leases and the reaper --------------------------------------------------------

    def _claimed(self, rows: list[Row]) -> list[Row]:
        # In id order, as the claim chose them: UPDATE ... RETURNING gives its rows in the order of the heap,
        # which a row's later versions change (a pass's paging and the order tasks start in follow this list).
        rows.sort(key=itemgetter(0))
        self._claims.update(r[0] for r in rows)
        self._note(rows)
        return rows

    def release_claims(self, kept: Sequence[int], *, others: bool = False) -> None:
        """release_claims gives back the leases this pass took on tasks it did not start (held back, not due).

        others: tasks were left runnable that this host has no worker for; the commit wakes the other hosts,
        at most once per OTHERS_INTERVAL (a host that stays busy leaves work at every batch, and each
        NOTIFY costs every other host an ensure pass; one missed is found by their poll).
        """
        unused = sorted(self._claims.difference(kept))
        self._claims.clear()
        if others:
            now = time.monotonic()
            if now >= self._others_next:
                self._others_next = now + OTHERS_INTERVAL
                self.notify = True
        if unused:
            self.send("UPDATE tasks SET runner = NULL, lease_until = NULL WHERE id = ANY (%s) AND runner = %s",
                       (unused, self.runner_id))

    def runnable_do(self, after_id: int, limit: int) -> list[Row]:
        """runnable_do claims Do tasks whose wait tasks are all Done: runner and lease recorded, rows locked."""
        if self.runner_id is None or self._read_only:
            return super().runnable_do(after_id, limit)
        # What the pass asks next about the changes of the tasks it claimed comes in the same round trip:
        # the rows of the changes this transaction did not read ahead already (CLAIM_AHEAD), and (CLAIMED_SHARED)
        # the share locks keep_changes asks for at commit.
        known = sorted(self._counted)
        # What their statuses need of their other tasks, for the changes not probed yet in this transaction
        # (counts_besides): counted whole (PROBE_CLAIMED), the claimed tasks among them, which leave them as they
        # are held.
        cap = limit + 2
        ex = self._unprobed(())
        probe = {"runner": self.runner_id, "known": id_array(sorted(self._probes)), "ex": id_array(ex)}
        rows, more = self._read_ahead((CLAIM_DO, (self.runner_id, self.lease, after_id, limit)), {
            # What keep_changes asks at commit, of the changes in Doing this claim took tasks of (CLAIMED_SHARED);
            # the changes with tasks in Wait are read after it, so as committed once the rows are share-locked.
            # (Only where that change is the one of this transaction: postgresql_locks, the order of change locks.)
            "shared": (CLAIMED_ALONE, (self.runner_id, id_array(known), self.runner_id)),
            "after": (CLAIM_AHEAD, {**probe, "counted": id_array(known)}),  # (the rest, in one: postgresql_generic)
        }, "write")
        more["changes"], more["probe"], more["waiting"] = split_claim_ahead(more.pop("after"))
        shared = more.pop("shared")
        if shared:
            self._note_shared(shared, {r[0] for r in more["waiting"]})
        self._claimed_alone(rows, known)
        self._note(rows)
        fresh = {r[1] for r in rows if r[1] is not None and r[1] not in self._probes}
        self._note_probe(more.pop("probe"), fresh, ex, cap)
        more["change_ids"] = {r[0] for r in more["changes"]}
        self._counted.update(more["change_ids"])
        self._ahead = more
        return self._claimed(rows)

    def runnable_undo(self, after_id: int, limit: int) -> list[Row]:
        """runnable_undo claims Undo tasks whose halt tasks are all ready, as runnable_do claims."""
        if self.runner_id is None or self._read_only:
            return super().runnable_undo(after_id, limit)
        return self._claimed(self.run(CLAIM_UNDO, (self.runner_id, self.lease, after_id, limit), "write"))

    def tasks_in_status(self, status: str, after_id: int, limit: int) -> list[Row]:
        """tasks_in_status pages through unready tasks with a status that this transaction could lock."""
        if self._read_only:
            return super().tasks_in_status(status, after_id, limit)
        locked = self.run(LOCKED_IN_STATUS, (status, self.runner_id or "", after_id, limit))
        # Read again once locked: a row that changed since the statement began reads as it was then.
        fresh = {r[0]: r for r in super().task_rows([r[0] for r in locked])} if locked else {}
        # (A page that comes back shorter ends this pass's paging early; the next pass sees the rest.)
        self._note(list(fresh.values()))
        return [fresh[r[0]] for r in locked if r[0] in fresh and fresh[r[0]][4] == status]

    def claim_cleanup(self, tid: int) -> bool:
        """claim_cleanup takes a lease on an unclean task of a ready change, for its cleanup handler."""
        return bool(self.run(f"UPDATE tasks SET runner = %s, lease_until = {NOW} + %s WHERE id = %s "
                             "AND lease_until IS NULL AND NOT clean RETURNING id",
                             (self.runner_id, self.lease, tid), "write"))

    def started_tasks(self, after_id: int, limit: int) -> list[Row]:
        """started_tasks claims Doing and Undoing tasks that no runner holds (a retry is due, say)."""
        if self.runner_id is None or self._read_only:
            return super().started_tasks(after_id, limit)
        return self._claimed(self.run(CLAIM_STARTED, (self.runner_id, self.lease, after_id, limit), "write"))

    def end_leases(self, ids: Sequence[int]) -> None:
        """end_leases (a step of write) clears the leases of tasks whose outcome is recorded (or the reaper took)."""
        if ids:
            self.send(END_LEASES, (id_array(ids),))

    def runners_of(self, ids: Sequence[int]) -> dict[int, str | None]:
        """runners_of says which runner holds the lease of each task (read ahead if it was)."""
        if self._covered(ids):
            want = set(ids)
            return {r[0]: r[1] for r in self._ahead["runners"] if r[0] in want}
        return {r[0]: r[1] for r in self.run("SELECT id, runner FROM tasks WHERE id = ANY (%s)", (list(ids),))}

    def expired_leases(self) -> list[int]:
        """expired_leases lists running tasks whose lease ran out (or that have none), by the server's clock."""
        return [r[0] for r in self.run(
            f"SELECT id FROM tasks WHERE lease_until < {NOW} AND (status IN {HELD} OR NOT clean) "
            "AND change_id IS NOT NULL ORDER BY id LIMIT 256")]

    def lease_expired(self, tid: int) -> bool:
        """lease_expired says, once the task is locked, whether its lease is still out."""
        rows = self.run(f"SELECT lease_until < {NOW} FROM tasks WHERE id = %s", (tid,))
        return bool(rows and rows[0][0])

    def heartbeat(self, runner: str, lease: float) -> int:
        """heartbeat extends the leases of runner's running tasks (on the side connection); returns how many.

        It passes over the tasks a unit of work holds locked (SKIP LOCKED):
        waiting for them, it deadlocked with this host's own recorder, which
        locks tasks in id order while the heartbeat's UPDATE met them in the
        table's order (a deadlock costs a second and a unit of work run
        again; W1 with 10,000 tasks met it about once a run). A task passed
        over is extended by the next beat, a third of a lease later, unless
        its outcome ended the lease meanwhile.
        """
        cur = self._side_execute(
            f"UPDATE tasks SET lease_until = {NOW} + %s WHERE id = ANY (ARRAY(SELECT id FROM tasks WHERE runner = %s "
            f"AND (status IN {HELD} OR NOT clean) FOR NO KEY UPDATE SKIP LOCKED))", (lease, runner))
        return int(cur.rowcount)

    # -- wake-ups ----------------------------------------------------------------------------

    def listen(self, wake: Any, stop: threading.Event, channel: str = CHANNEL,
               listening: threading.Event | None = None) -> None:
        """listen calls wake() whenever another host's commit made tasks runnable, until stop is set.

        Its own connection LISTENs on channel (CHANNEL; NOTICE_CHANNEL for
        notices); a lost connection is opened again (the waiters' polling
        covers what was missed meanwhile). listening is set once LISTEN ran.
        The notifications of this store's own commits are passed over: the
        State wakes its own loop and notice waiters after such a commit, and
        a second wake-up cost a chain an empty ensure pass per task.
        """
        while not stop.is_set():
            try:
                raw = self._engine.raw_connection()
                try:
                    conn = raw.driver_connection
                    conn.autocommit = True
                    conn.execute(f"LISTEN {channel}")
                    if listening is not None:
                        listening.set()
                    while not stop.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=1):
                            if n.pid != self._own_backend():
                                wake()
                finally:
                    raw.close()
            except Exception as e:  # the server restarting, say
                log.info("listening for work on %s: %s; trying again", self.target, e)
                stop.wait(1.0)

    def _own_backend(self) -> int | None:
        """_own_backend is the server process of this store's connection (None while there is none)."""
        conn = self._conn
        try:
            return None if conn is None or conn.closed else int(conn.info.backend_pid)
        except Exception:  # a connection being replaced: wake, to be safe
            return None

    # -- ids ---------------------------------------------------------------------------------

    def next_id(self, name: str) -> int:
        """next_id hands out the next id of a sequence, from a block taken on the side connection."""
        nxt, last = self._blocks.get(name, (1, 0))
        if nxt > last and self._read_only:
            # Nothing of a read-only State is ever written: ids for its refused work, from what is there.
            top = int(self.sequences().get(name, 0))
            nxt, last = top + 1, top + 2**31
        elif nxt > last:
            row = self._side_execute(
                "INSERT INTO sequences (name, last_id) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                "SET last_id = GREATEST(sequences.last_id, (SELECT coalesce(max(id), 0) FROM tasks WHERE "
                "%s = 'task'), (SELECT coalesce(max(id), 0) FROM changes WHERE %s = 'change')) + %s "
                "RETURNING last_id", (name, ID_BLOCK, name, name, ID_BLOCK)).fetchone()
            last = int(row[0])
            nxt = last - ID_BLOCK + 1
        self._blocks[name] = (nxt + 1, last)
        return nxt

    def save_sequences(self, values: Mapping[str, int]) -> None:
        """save_sequences (a step of write) does nothing: ids are taken from the database as they are handed out."""

