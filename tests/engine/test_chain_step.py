# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain's step on SQLite: the unit of work that records an outcome opens its write transaction with the lock.

The check for another connection's commit (PRAGMA data_version) is then
made inside that transaction, with no read transaction of its own before it
(docs/performance.md, "A chain's step: the outcome's unit begun with its
lock"); what another connection wrote is still seen, and the cache is read
afresh for it, before the outcome is recorded.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import DatabaseError, Overlord, State, Status, Task
from engine.session import session_of
from engine.tomb import Tomb
from tests.support.helpers import chain_change, without_timing_rows

TIMEOUT = 30.0


def test_a_step_checks_for_outside_writes_inside_its_write_transaction(overlord: Overlord) -> None:
    """Between two steps: BEGIN, then data_version, the two UPDATEs, COMMIT: no read transaction before BEGIN."""
    o = overlord
    seen: list[str] = []
    session_of(o.state).uow.store.raw.set_trace_callback(seen.append)
    marks: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        marks.append(len(seen))

    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 12)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    for a, b in itertools.pairwise(marks[1:-1]):  # the middle steps, handler to handler
        statements = [" ".join(s.split()[:2]) for s in without_timing_rows(seen[a:b])]  # (a slow pass's may ride)
        assert [s.split()[0] for s in statements] == ["BEGIN", "PRAGMA", "UPDATE", "UPDATE", "COMMIT"], seen[a:b]
        assert statements[1] == "PRAGMA data_version", seen[a:b]


def _held_first_step(ran: list[str], started: threading.Event, go: threading.Event) -> Callable[[Task, Tomb], None]:
    """_held_first_step is a chain's handler noting each step's summary in ran; the first one sets started, then
    waits for go."""

    def step(task: Task, tomb: Tomb) -> None:
        with task.state:
            summary = task.summary
        ran.append(summary)
        if summary == "step 1":
            started.set()
            assert go.wait(TIMEOUT)

    return step


def test_an_outside_write_while_a_step_runs_is_read_before_its_outcome(overlord: Overlord, tmp_path: Path) -> None:
    """A task put on Hold by another connection while its handler runs stays on Hold: the next one is not run."""
    o = overlord
    started, go = threading.Event(), threading.Event()
    ran: list[str] = []
    o.task_runner.add_handler("step", _held_first_step(ran, started, go))
    chg = chain_change(o.state, 3)
    with o.state:
        first = chg.tasks()[0]
        first_id = int(first.id)
    o.loop()
    assert started.wait(TIMEOUT)
    shell = sqlite3.connect(tmp_path / "state.db")
    with shell:
        shell.execute("UPDATE tasks SET status = 'Hold' WHERE id = ?", (first_id,))
    shell.close()
    go.set()
    o.task_runner.wait()
    with o.state:
        assert first.status is Status.HOLD  # as the other connection left it: not Done over it
        assert [t.status for t in chg.tasks()[1:]] == [Status.DO, Status.DO]
    assert ran == ["step 1"]


class _Refused(logging.Handler):
    """_Refused sets its event when the recorder says a commit of outcomes was refused and is retried."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("cannot commit task outcomes, retrying"):
            self.seen.set()


def test_a_step_meeting_a_write_lock_held_past_its_budget_is_recorded_once_it_is_free(tmp_path: Path) -> None:
    """The outcome's BEGIN, refused after the whole busy budget, is retried: nothing lost, no handler run twice."""
    db = tmp_path / "state.db"
    o = Overlord(db, busy_timeout=0.05, busy_budget=0.2)
    started, go = threading.Event(), threading.Event()
    ran: list[str] = []
    refused = _Refused()
    logging.getLogger("engine.taskrunner").addHandler(refused)
    shell = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        o.task_runner.add_handler("step", _held_first_step(ran, started, go))
        chg = chain_change(o.state, 3)
        o.loop()
        assert started.wait(TIMEOUT)
        shell.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        go.set()
        assert refused.seen.wait(TIMEOUT)  # the step's outcome met it past its budget: retried later
        shell.execute("ROLLBACK")
        assert chg.wait_ready(TIMEOUT)
        with o.state:
            assert [t.status for t in chg.tasks()] == [Status.DONE] * 3
    finally:
        logging.getLogger("engine.taskrunner").removeHandler(refused)
        shell.close()
        o.stop()
    assert ran == ["step 1", "step 2", "step 3"]


def test_a_failed_look_for_outside_writes_leaves_no_write_transaction_behind(tmp_path: Path) -> None:
    """When data_version cannot be read after the unit's BEGIN, the lock is let go without the write lock."""
    db = tmp_path / "state.db"
    st = State.open(db)
    store = session_of(st).uow.store

    def broken() -> bool:
        raise DatabaseError(f"cannot read state database {db}: disk I/O error (a test)")

    try:
        store.refresh = broken  # type: ignore[method-assign]
        with pytest.raises(DatabaseError, match="disk I/O error"):
            st.lock(begin=True)
        del store.refresh
        assert not store.in_write
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer is not kept waiting by a transaction left open
        other.execute("ROLLBACK")
        other.close()
        with st:
            st.set("after", 1)
        with st:
            assert st.get("after") == 1
    finally:
        st.close()
