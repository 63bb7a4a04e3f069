# SPDX-License-Identifier: GPL-3.0-or-later
"""Prune: forgetting old changes, orphan tasks and expired warnings (snapd's rules)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import _time
from .errors import DatabaseCorruptError, NotFoundError

if TYPE_CHECKING:
    from ._work import Work

log = logging.getLogger("engine.prune")


def prune(w: Work, start_of_operation: datetime, prune_wait: float, abort_wait: float,
          max_ready_changes: int) -> None:
    """prune applies snapd's prune rules to the state; the caller holds the lock.

    Ready changes that became ready before now - prune_wait go with their
    tasks, and the oldest ready ones beyond max_ready_changes; an unready
    change with no tasks spawned before now - prune_wait goes; other unready
    changes spawned before now - abort_wait get abort_unready_lanes(); spawn
    times before start_of_operation count as start_of_operation; tasks in no
    change spawned before now - prune_wait go; expired warnings go.
    """
    now = w.now()
    prune_limit = now - timedelta(seconds=prune_wait)
    abort_limit = now - timedelta(seconds=abort_wait)
    w.flush()
    store = w.store
    w.warnings.prune(now)
    w.notices.prune(now)
    w.keys.prune(_time.to_text(now))

    limit_text = _time.to_text(prune_limit)
    doomed = store.ready_changes_before(limit_text)
    ready_left = store.ready_change_count() - len(doomed)
    if ready_left > max_ready_changes:
        doomed += store.oldest_ready_changes(limit_text, ready_left - max(max_ready_changes, 0))

    to_abort = []
    for cid, spawn_text, ntasks in store.unready_changes():
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
            chg = w.change_handle(w.records.crec(cid))
            log.info("aborting unready lanes of change %s, spawned before %s", cid, _time.to_text(abort_limit))
            chg.abort_unready_lanes()
        except (DatabaseCorruptError, NotFoundError) as e:
            log.error("cannot abort the unready lanes of change %s: %s", cid, e)

    if doomed:  # deleted now, in the write transaction, with what was flushed before
        w.flush()
        store.begin_write()
        store.delete_changes(doomed)
        w.records.drop_changes(doomed)
        log.debug("pruned %d changes", len(doomed))

    orphans = store.orphan_tasks_before(limit_text)
    if orphans:
        store.begin_write()
        store.delete_tasks(orphans)
        w.records.drop_tasks(orphans)
