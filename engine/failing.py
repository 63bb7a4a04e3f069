# SPDX-License-Identifier: GPL-3.0-or-later
"""Failing a task: Error recorded, its lanes aborted, the runner's error callback told.

The outcome recorder fails a task whose handler raised; the runner's guards
fail one whose status hook raised or whose row cannot be recorded. Both come
here, so a failure is said, aborted and called back the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .usercode import callable_name, error_message, exception_text

if TYPE_CHECKING:
    from ._records import TaskRec
    from .ledger import Ledger, Ran
    from .runs import Runs

log = logging.getLogger("engine.taskrunner")


def fail_task(ledger: Ledger, runs: Runs, rec: TaskRec, exc: BaseException, chg: str, ran: Ran | None = None) -> None:
    """fail_task puts a task in Error, logs why, and aborts its lanes (snapd's rules); ran: the run that failed.

    The runs of the aborted tasks that are running are killed (their tombs);
    the runner's on_error callback is called with the exception, and what it
    raises is logged: the task stays in Error.
    """
    message = error_message(exc)
    aborted = ledger.fail(rec, message, ran)
    if aborted:
        with runs.lock:
            running = [runs.runs.get(tid) for tid in aborted]
        for run in running:
            if run is not None:
                run.tomb.kill()
    log.warning("%s task %s (%s) %r failed: %s", chg, rec.id, rec.kind, rec.summary, message)
    callback = runs.on_error
    if callback is not None:
        try:
            callback(exc)
        except BaseException as e:  # user code: said once, and the task stays in Error
            log.error("%s task %s (%s): the on_task_error callback %s raised %s", chg, rec.id, rec.kind,
                      callable_name(callback), exception_text(e))


def change_of(rec: TaskRec) -> str:
    """change_of names a task's change in a log line ("change 12", or "no change")."""
    return f"change {rec.change_id}" if rec.change_id is not None else "no change"
