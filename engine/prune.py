# SPDX-License-Identifier: GPL-3.0-or-later
"""Prune: forgetting old changes, orphan tasks and expired warnings (snapd's rules)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import _time
from .errors import DatabaseCorruptError, NotFoundError

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("engine.prune")


def prune(st: State, start_of_operation: datetime, prune_wait: float, abort_wait: float,
          max_ready_changes: int) -> None:
    """prune applies snapd's prune rules to the state; the caller holds the lock.

    Ready changes that became ready before now - prune_wait go with their
    tasks, and the oldest ready ones beyond max_ready_changes; an unready
    change with no tasks spawned before now - prune_wait goes; other unready
    changes spawned before now - abort_wait get abort_unready_lanes(); spawn
    times before start_of_operation count as start_of_operation; tasks in no
    change spawned before now - prune_wait go; expired warnings go.
    """
    now = st._now()
    prune_limit = now - timedelta(seconds=prune_wait)
    abort_limit = now - timedelta(seconds=abort_wait)
    st._flush()
    store = st._store
    st._warnings.prune(now)

    doomed = [r[0] for r in store.query(
        "SELECT id FROM changes WHERE ready_time IS NOT NULL AND ready_time < ? ORDER BY id",
        (_time.to_text(prune_limit),),
    )]
    ready_left = int(store.query("SELECT count(*) FROM changes WHERE ready_time IS NOT NULL")[0][0]) - len(doomed)
    if ready_left > max_ready_changes:
        doomed += [r[0] for r in store.query(
            "SELECT id FROM changes WHERE ready_time IS NOT NULL AND ready_time >= ? "
            "ORDER BY ready_time, id LIMIT ?",
            (_time.to_text(prune_limit), ready_left - max(max_ready_changes, 0)),
        )]

    to_abort = []
    for cid, spawn_text, ntasks in store.query(
        "SELECT c.id, c.spawn_time, (SELECT count(*) FROM tasks t WHERE t.change_id = c.id) "
        "FROM changes c WHERE c.ready_time IS NULL ORDER BY c.id"
    ):
        try:
            spawn = max(_time.from_text(spawn_text), start_of_operation)
        except (TypeError, ValueError):
            log.error("cannot prune change %s: its spawn_time %r cannot be read", cid, spawn_text)
            continue
        if spawn < prune_limit and ntasks == 0:
            doomed.append(cid)
        elif spawn < abort_limit:
            to_abort.append(cid)
    for cid in to_abort:
        try:
            chg = st._change_handle(st._crec(cid))
            log.info("aborting unready lanes of change %s, spawned before %s", cid, _time.to_text(abort_limit))
            chg.abort_unready_lanes()
        except (DatabaseCorruptError, NotFoundError) as e:
            log.error("cannot abort the unready lanes of change %s: %s", cid, e)

    if doomed:
        st._flush()
        store.begin_write()
        store.execute_in("DELETE FROM changes WHERE id IN ({})", doomed)
        gone = set(doomed)
        for tid in [tid for tid, rec in st._tasks.items() if rec.change_id in gone]:
            del st._tasks[tid]
        for cid in doomed:
            st._changes.pop(cid, None)
        log.debug("pruned %d changes", len(doomed))

    orphans = [r[0] for r in store.query(
        "SELECT id FROM tasks WHERE change_id IS NULL AND spawn_time < ?", (_time.to_text(prune_limit),)
    )]
    if orphans:
        store.begin_write()
        store.execute_in("DELETE FROM tasks WHERE id IN ({})", orphans)
        for tid in orphans:
            st._tasks.pop(tid, None)
