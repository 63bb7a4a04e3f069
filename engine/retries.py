# SPDX-License-Identifier: GPL-3.0-or-later
"""Retries: what a failed handler's task is told when it is tried again (a busy database, a retry policy).

The recorder (engine.outcomes) asks these when a handler raised: a handler
failed only by a busy (or, on PostgreSQL, conflicting) database runs again
after a doubling delay; one with a tenacity policy runs again when the
policy says so. Either counts one more attempt of the series and says so
in the task's log.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import tenacity

from ._time import to_text
from .errors import DatabaseBusyError, DatabaseConflictError, Retry
from .usercode import error_message

if TYPE_CHECKING:
    from ._records import TaskRec
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.taskrunner")

#: How long a task whose handler failed on a busy database waits before its
#: first retry; each further busy failure doubles it, up to BUSY_RETRY_MAX.
BUSY_RETRY_FIRST = 1.0
BUSY_RETRY_MAX = 60.0
#: The first delay when the handler's unit of work conflicted with another host's (PostgreSQL).
CONFLICT_RETRY_FIRST = 0.05


def count_attempt(w: UnitOfWork, rec: TaskRec) -> None:
    """count_attempt counts one more attempt of a series of retries (a busy database, a retry policy)."""
    rec.attempts += 1
    rec.retry_attempts += 1
    if rec.retry_since is None:
        rec.retry_since = w.now()
    w.dirty_task(rec)


def busy_retry(w: UnitOfWork, rec: TaskRec, exc: BaseException) -> Retry:
    """busy_retry schedules a task whose handler failed only because the database was busy."""
    count_attempt(w, rec)
    first = CONFLICT_RETRY_FIRST if _conflict(exc) else BUSY_RETRY_FIRST
    delay = min(BUSY_RETRY_MAX, first * 2 ** min(rec.retry_attempts - 1, 16))
    message = error_message(exc)
    log.warning("task %s (%s) of change %s: the state database was busy (%s); retrying in %.3g s",
                rec.id, rec.kind, rec.change_id, message, delay)
    reason = f"the state database was busy; retrying in {delay:g} s ({message})"
    w.add_log(rec, "INFO", reason)
    return Retry(after=delay, reason=reason)


def policy_retry(w: UnitOfWork, policy: tenacity.BaseRetrying, rec: TaskRec, exc: Exception) -> BaseException:
    """policy_retry asks a tenacity policy what to do with exc: a Retry, or exc itself to fail."""
    now = w.now()
    count_attempt(w, rec)
    state = tenacity.RetryCallState(policy, None, (), {})
    state.attempt_number = rec.retry_attempts
    outcome = tenacity.Future(rec.retry_attempts)
    outcome.set_exception(exc)
    state.outcome = outcome
    since = rec.retry_since or now
    state.start_time = 0.0
    state.outcome_timestamp = max(0.0, (now - since).total_seconds())
    if not policy.retry(state):
        return exc
    if policy.stop(state):
        log.warning("task %s (%s): retry policy gave up after %d attempts", rec.id, rec.kind, rec.retry_attempts)
        return exc
    delay = max(0.0, float(policy.wait(state)))
    state.next_action = tenacity.RetryAction(delay)
    if policy.before_sleep is not None:
        policy.before_sleep(state)
    when = now + timedelta(seconds=delay)
    message = error_message(exc)
    w.add_log(rec, "INFO", f"retrying after attempt {rec.retry_attempts} failed ({message}); "
                           f"next attempt at {to_text(when)}")
    log.warning("task %s (%s) of change %s failed (%s), attempt %d; retrying in %.3g s",
                rec.id, rec.kind, rec.change_id, message, rec.retry_attempts, delay)
    return Retry(after=delay, reason=message)


def _conflict(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return False
        if isinstance(cause, DatabaseConflictError):
            return True
        cause = cause.__cause__
    return False


def is_busy(exc: BaseException) -> bool:
    """is_busy says whether a handler failed only because the state database was busy."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, DatabaseBusyError):
            return True
        cause, seen = cause.__cause__, seen + 1
    return False
