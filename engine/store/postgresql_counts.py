# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgresCounts: what a change's status needs of its tasks, on PostgreSQL, without counting them all.

A change's status (engine.statusrules) needs to know which statuses its
tasks have, and whether any is unready; counting every task by status in
every unit of work cost about 0.35 ms a step on a chain of 1,000 and 3 to
18 ms a unit of work in W1, growing with the change. The unit of work
counts the tasks it holds by their records (engine.cache); of the others,
PROBE counts each unready status up to a few, through the index of the
change's own unready tasks by status (ix_tasks_change_unready, migration
0012), and counts them all only where no unready status is many (the
change may be ready). It is read ahead with the tasks a unit of work locks,
and asked on its own when that no longer says (docs/performance.md, "A
change's status without counting its tasks, on PostgreSQL").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .base import ChangeSetWrite, Row
from .postgresql_generic import id_array
from .postgresql_reads import PostgresReads
from .postgresql_sql import CAP, PROBE, SMALL

__all__ = ["BIG_KEPT", "PostgresCounts", "Probed", "probed"]

#: How many of the changes a probe found big a store remembers (the latest).
BIG_KEPT = 64


class PostgresCounts(PostgresReads):
    """PostgresCounts answers counts_besides, and remembers which tasks this transaction read or inserted."""

    #: A change with fewer tasks than this is counted whole by a probe (tests set 0: every change looked up).
    small = SMALL
    #: The changes that probes found to have small tasks or more, the latest BIG_KEPT (their tasks go with them only:
    #: a probe need not count their first tasks again to tell; one taken for big wrongly is only looked up).
    _big: dict[int, None] = {}

    def probe_args(self, **args: Any) -> dict[str, Any]:
        """probe_args are PROBE's parameters: args, the size of a small change and the changes known to be bigger."""
        return {**args, "small": self.small, "big": id_array(self._big)}

    def _learn(self, found: dict[int, Probed]) -> None:
        """_learn notes the changes a probe looked up (not small): their 'u' rows."""
        fresh = [cid for cid, p in found.items() if p.some and cid not in self._big]
        if fresh:
            big = self._big = {**self._big, **dict.fromkeys(fresh)}
            while len(big) > BIG_KEPT:
                del big[next(iter(big))]

    def _note(self, rows: Sequence[Row]) -> None:
        """_note remembers the tasks this transaction read, locked: their changes, statuses and clean flags."""
        mine, probes, loose = self._mine, self._probes, self._loose
        for r in rows:
            mine[r[0]] = (r[1], r[4], bool(r[6]))
            if r[1] not in probes:
                loose.setdefault(r[1], set()).add(r[0])

    def write(self, changes: ChangeSetWrite) -> None:
        """write writes a flush (SqlStore.write), remembering the tasks it inserts as this transaction's."""
        probes, loose = self._probes, self._loose
        for r in itertools.chain(changes.tasks, changes.new_tasks):
            self._mine[r[0]] = (r[1], None, False)  # (held by the unit of work that made them)
            if r[1] not in probes:
                loose.setdefault(r[1], set()).add(r[0])
        super().write(changes)

    def _unprobed(self, ids: Sequence[int]) -> list[int]:
        """_unprobed are ids and the tasks this transaction read of the changes it did not probe yet: what a probe
        read ahead leaves out (those of a change probed already do not matter: what it said is kept)."""
        return sorted(set(ids).union(*self._loose.values()))

    def _note_probe(self, rows: list[Row], cids: set[int], ex: Sequence[int], cap: int) -> None:
        """_note_probe keeps what a PROBE read ahead of cids, with the tasks of each that it left out."""
        found = probed(rows, cids, cap)
        self._learn(found)
        mine = self._mine
        left: dict[int, set[int]] = {cid: set() for cid in cids}
        for tid in ex:
            row = mine.get(tid)
            if row is not None and row[0] in left:
                left[row[0]].add(tid)
        for cid in cids:
            self._probes[cid] = (frozenset(left[cid]), found.get(cid, Probed(cap)))
            self._loose.pop(cid, None)

    def counts_besides(self, cid: int, held: Sequence[int]) -> tuple[dict[str, int], int]:
        """counts_besides is what a change's status needs of its tasks other than held (the unit of work's).

        While one of them is unready: each unready status they have, counted
        up to a few (their ready ones are not counted), and 1 if one of them
        is not cleaned; else their counts by status and of those not cleaned.
        engine.cache keeps a change's counts as held's own plus these.

        Answered from what was read ahead with the tasks a unit of work locked
        (task_rows: the tasks it left out; each unready status counted up to
        2 a task locked) or asked last (up to CAP), where that says it: the tasks left out then and
        not held now were read by this transaction and count by their rows (a
        claim's page is handed on one task at a time); a task held now that
        was not left out then (the next step of a chain, claimed) was one of
        the others: it leaves them, by its row. Else asked now (PROBE).
        """
        known = self._probes.get(cid)
        if known is not None:
            out = _besides(known[0], known[1], set(held), self._mine)
            if out is not None:
                return out
        # (Leaving out what this transaction read of the change too: the rest of a claim's page, handed on after.)
        mine = self._mine
        ex = sorted({*held, *(tid for tid, row in mine.items() if row[0] == cid and row[1] is not None)})
        found = probed(self.run(PROBE, self.probe_args(cids=id_array([cid]), ex=id_array(ex), cap=CAP)), [cid], CAP)
        self._learn(found)
        p = found.get(cid, Probed(CAP))
        left = frozenset(tid for tid in ex if tid in mine)
        self._probes[cid] = (left, p)
        out = _besides(left, p, set(held), mine)
        assert out is not None  # (left out: held, and what this transaction read, by its rows)
        return out


class Probed:
    """Probed is what PROBE said of one change: its unready statuses counted up to CAP (some), else the counts."""

    __slots__ = ("cap", "counts", "dirty", "some", "unclean")

    def __init__(self, cap: int) -> None:
        self.cap = cap  # (the most PROBE counted of each unready status)
        self.counts: dict[str, int] = {}
        self.some: dict[str, int] = {}
        self.unclean = 0  # (of the whole counts)
        self.dirty = 0  # (1: some task not cleaned, while some are unready)

    def result(self) -> tuple[dict[str, int], int]:
        """result is counts_besides' answer: the whole counts where they were read, else some."""
        if self.counts:
            return dict(self.counts), self.unclean
        return dict(self.some), self.dirty


def _besides(left: frozenset[int], p: Probed, held: set[int],
             mine: dict[int, Any]) -> tuple[dict[str, int], int] | None:
    """_besides is counts_besides from a probe that left out left, for held now (None: it cannot say)."""
    have = {tid for tid in held if tid in mine}
    counts, unclean = p.result()
    exact = bool(p.counts)
    for tid in have - left:  # one of the others then: no longer
        _cid, status, clean = mine[tid]
        if status is None:
            return None
        if not exact:
            if status in p.some:
                counts[status] -= 1
                if counts[status] <= 0:
                    if p.some[status] >= p.cap:
                        return None  # (more of that status, or not: ask)
                    del counts[status]
                    if not counts:
                        return None  # (no unready task left among the others: their whole counts are asked)
        else:
            counts[status] = counts.get(status, 0) - 1
            unclean -= not clean
            if counts[status] < 0:
                return None
    for tid in left - have:  # read by this transaction, not yet held: by their rows
        _cid, status, clean = mine[tid]
        if status is None:
            return None
        counts[status] = counts.get(status, 0) + 1
        unclean += not clean
    return counts, unclean


def probed(rows: Sequence[Row], cids: Any, cap: int) -> dict[int, Probed]:
    """probed reads PROBE's rows by change (cap: its %(cap)s)."""
    out: dict[int, Probed] = {}
    for what, cid, status, n, unclean in rows:
        p = out.get(cid)
        if p is None:
            p = out[cid] = Probed(cap)
        if what == "u":
            p.some[status] = int(n)
        elif what == "f":
            p.counts[status] = int(n)
            p.unclean += int(unclean or 0)
        else:
            p.dirty = 1
    return out
