# SPDX-License-Identifier: GPL-3.0-or-later
"""Leases: how a runner holds the tasks it claimed when several hosts share one database.

On a shared store (PostgreSQL) a claim records the runner (a unique id per
process start) and a lease on the task; the runner's heartbeat extends the
leases of its running tasks every third of the lease; any runner's reaper
returns a running task whose lease ran out to Do (Undoing to Undo): the
task runs again elsewhere, so handlers must be idempotent (snapd's rule
after a crash). An outcome is recorded only while the runner still holds
the task's lease. docs/scale-out.md tells the whole protocol.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

from .errors import DatabaseCorruptError, EngineError, NotFoundError
from .status import Status

if TYPE_CHECKING:
    from .store import Store
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.taskrunner")

_HELD = (Status.DOING, Status.UNDOING, Status.ABORT)
_BACK = {Status.DOING: Status.DO, Status.UNDOING: Status.UNDO}

#: DEFAULT_LEASE is how long a claimed task stays this runner's without a heartbeat (seconds).
DEFAULT_LEASE = 30.0


def new_runner_id() -> str:
    """new_runner_id names this process start: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leases:
    """Leases are one runner's claims on a shared store: its id, its heartbeat and its reaper."""

    def __init__(self, store: Store, lease: float = DEFAULT_LEASE) -> None:
        if not lease > 0:
            raise ValueError(f"cannot use a lease of {lease!r} s: it must be positive")
        self.store = store
        self.runner_id = new_runner_id()
        self.lease = float(lease)
        store.runner_id = self.runner_id
        store.lease = self.lease
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None
        self._mu = threading.Lock()
        self._next_reap = 0.0
        # Lease holders read by prefetch, for the unit of work in progress (the recorder's).
        self._owners: dict[int, str | None] = {}

    def start_heartbeat(self) -> None:
        """start_heartbeat starts the thread that extends this runner's leases (once)."""
        with self._mu:
            if self._beating is None and not self._stop.is_set():
                self._beating = threading.Thread(target=self._beat, name="engine-heartbeat", daemon=True)
                self._beating.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.store.heartbeat(self.runner_id, self.lease)
            except EngineError as e:  # the server restarting, say: the next beat tries again
                log.warning("cannot extend the leases of runner %s: %s", self.runner_id, e)

    def stop(self) -> None:
        """stop ends the heartbeat: the leases of abandoned handlers run out, and other hosts run them again."""
        self._stop.set()

    def reap(self, w: UnitOfWork, running: set[int]) -> None:
        """reap returns to Do (Undo) the running tasks whose lease ran out, locking each task first.

        It looks at most every third of the lease (a lease cannot run out faster than that matters).
        """
        now = time.monotonic()
        if now < self._next_reap:
            return
        self._next_reap = now + self.lease / 3
        for tid in self.store.expired_leases():
            if tid in running:
                continue  # this runner's own: its heartbeat is late, the handler still runs here
            try:
                rec = w.records.trec(tid)  # locks the task's row, then reads it afresh
            except (NotFoundError, DatabaseCorruptError) as e:
                log.debug("not reaping task %s: %s", tid, e)
                continue
            if not self.store.lease_expired(tid):
                continue  # its runner's heartbeat came in between
            owner = self.store.runners_of([tid]).get(tid)
            if rec.status not in _HELD:  # a cleanup that its runner left: another one cleans it
                w.end_lease(tid)
                continue
            w.end_lease(tid)
            back = _BACK.get(rec.status)
            log.warning("task %s (%s) of change %s: the lease of runner %s ran out; it runs again (%s)",
                        tid, rec.kind, rec.change_id, owner or "unknown", (back or rec.status).value)
            w.add_log(rec, "INFO", f"the lease of runner {owner or 'unknown'} ran out: running it again")
            if back is not None:
                w.set_task_status(rec, back)  # an aborted one stays Abort: the pass undoes it

    def still_ours(self, tid: int) -> bool:
        """still_ours says, once the task's row is locked, whether this runner may record its outcome.

        It may only while the task's lease is still its own: the lease ends
        when the outcome is recorded, so a lease that is gone, or another
        runner's, means the reaper took the task away (it may have run, and
        finished, elsewhere since). A handler that finished its own task
        (Done, Undone) keeps the lease until its outcome is recorded.
        """
        owners = self._owners if tid in self._owners else self.store.runners_of([tid])
        return owners.get(tid) == self.runner_id

    def prefetch(self, ids: list[int]) -> None:
        """prefetch reads the lease holders of tasks at once, for still_ours in this unit of work."""
        self._owners = self.store.runners_of(ids)

    def forget(self) -> None:
        """forget drops what prefetch read: it held for one unit of work."""
        self._owners = {}
