# SPDX-License-Identifier: GPL-3.0-or-later
"""How the outcome recorder (engine.outcomes) retries a commit refused by a busy or full database, or a conflict."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tenacity

from .errors import DatabaseConflictError, keeps_work

log = logging.getLogger("engine.taskrunner")


def retry_while_kept(fn: Callable[[], None], abandoned: Callable[[], bool]) -> None:
    """retry_while_kept runs fn until it is not refused by a busy or full database, or abandoned() says to stop."""
    def retryable(e: BaseException) -> bool:
        return keeps_work(e) or isinstance(e, DatabaseConflictError)

    # The first attempt runs without the policy (building it costs more than a commit's Python);
    # a refused one is handed to the policy as its first attempt, not run again.
    try:
        fn()
        return
    except BaseException as e:
        if not retryable(e):
            raise
        first: BaseException | None = e

    def attempt() -> None:
        nonlocal first
        if first is not None:
            refused, first = first, None
            raise refused
        fn()

    def wait(rs: tenacity.RetryCallState) -> float:
        # A conflict with another host clears in milliseconds; a busy or full database takes longer.
        conflict = rs.outcome is not None and isinstance(rs.outcome.exception(), DatabaseConflictError)
        return float(min(30.0, (0.01 if conflict else 0.5) * 2 ** min(rs.attempt_number, 12)))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        wait=wait,
        stop=lambda rs: abandoned(),
        before_sleep=lambda rs: log.error("cannot commit task outcomes, retrying: %s",
                                          rs.outcome.exception() if rs.outcome else "?"),
        reraise=True,
    )
    retrying(attempt)
