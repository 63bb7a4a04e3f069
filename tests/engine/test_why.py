# SPDX-License-Identifier: GPL-3.0-or-later
"""Why a task is not running: each reason, on SQLite and PostgreSQL (engine.why)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from engine import (
    Retry,
    State,
    Status,
    Task,
    TaskRunner,
    WhyNot,
    add_why_not_rule,
    remove_why_not_rule,
    why_not,
    why_not_tasks,
)
from engine.testing import FakeClock
from engine.tomb import Tomb
from tests.support import pgcluster
from tests.support.helpers import task_of

TIMEOUT = 30.0


@pytest.fixture
def runner(st: State) -> Iterator[TaskRunner]:
    r = TaskRunner(st)
    yield r
    r.stop()


def noop(task: Task, tomb: Tomb) -> None:
    return None


def change_of(st: State, *specs: str) -> list[str]:
    """change_of makes one change of tasks named by kind; returns their ids in order."""
    with st:
        chg = st.new_change("test", "a change")
        ids = []
        for kind in specs:
            t = st.new_task(kind, f"{kind} task")
            chg.add_task(t)
            ids.append(t.id)
        return ids


def why(st: State, tid: str, runner: TaskRunner | None = None) -> WhyNot | None:
    with st:
        return why_not(task_of(st, tid), runner)


def test_a_done_task_has_no_reason(st: State, runner: TaskRunner) -> None:
    (tid,) = change_of(st, "k")
    runner.add_handler("k", noop)
    runner.ensure()
    runner.wait()
    assert why(st, tid, runner) is None
    assert why(st, tid) is None


def test_a_running_task_has_no_reason(st: State, runner: TaskRunner) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(task: Task, tomb: Tomb) -> None:
        started.set()
        release.wait(TIMEOUT)

    (tid,) = change_of(st, "slow")
    runner.add_handler("slow", slow)
    runner.ensure()
    assert started.wait(TIMEOUT)
    try:
        assert why(st, tid, runner) is None
        assert why(st, tid) is None  # without a runner, Doing counts as running
    finally:
        release.set()
        runner.wait()


def test_waiting_for_tasks_names_them_with_their_status(st: State, runner: TaskRunner) -> None:
    first, second, third = change_of(st, "k", "k", "k")
    with st:
        task_of(st, third).wait_for(task_of(st, first))
        task_of(st, third).wait_for(task_of(st, second))
        task_of(st, first).set_status(Status.DONE)
    runner.add_handler("k", noop)
    got = why(st, third, runner)
    assert got is not None and got.reason == "waiting-for-tasks"
    assert [(t.id, t.kind, t.status, t.change) for t in got.tasks] == [(second, "k", Status.DO, "1")]
    assert got.message == f"it waits for task {second} (k, Do)"
    assert got.to_json() == {"reason": "waiting-for-tasks", "message": got.message,
                             "tasks": [{"id": second, "kind": "k", "status": "Do", "change": "1"}]}
    with st:
        task_of(st, second).set_status(Status.DONE)
    got = why(st, third, runner)
    assert got is not None and got.reason == "runnable"


def test_an_undo_task_waits_for_the_tasks_waiting_for_it(st: State, runner: TaskRunner) -> None:
    first, second = change_of(st, "k", "k")
    with st:
        task_of(st, second).wait_for(task_of(st, first))
        for tid in (first, second):
            task_of(st, tid).set_status(Status.UNDO)
    runner.add_handler("k", noop, noop)
    got = why(st, first, runner)
    assert got is not None and got.reason == "waiting-for-tasks"
    assert got.message == f"it is undone after task {second} (k, Undo)"
    got = why(st, second, runner)
    assert got is not None and got.reason == "runnable" and "undone" in got.message


def test_scheduled_at_a_time_and_for_a_retry(st: State, clock: FakeClock, runner: TaskRunner) -> None:
    later, retried = change_of(st, "k", "again")
    with st:
        task_of(st, later).at(clock() + timedelta(minutes=5))
    got = why(st, later)
    assert got is not None and got.reason == "scheduled"
    assert got.extra == {"at": f"{clock() + timedelta(minutes=5):%Y-%m-%dT%H:%M:%S.%f}Z", "retry": False}

    def again(task: Task, tomb: Tomb) -> None:
        raise Retry(after=60)

    runner.add_handler("k", noop)
    runner.add_handler("again", again)
    runner.ensure()
    runner.wait()
    got = why(st, retried, runner)
    assert got is not None and got.reason == "scheduled" and got.extra["retry"] is True
    assert got.message.startswith("it is retried at ")
    clock.advance(61)
    got = why(st, retried, runner)  # Doing, due, and no handler runs: the next pass runs it again
    assert got is not None and got.reason == "interrupted"


def blocks_slow(task: Task, running: list[Task]) -> bool:
    return task.kind == "slow"


def test_blocked_names_the_predicate(st: State, runner: TaskRunner) -> None:
    slow, fast = change_of(st, "slow", "k")
    runner.add_handler("slow", noop)
    runner.add_handler("k", noop)
    runner.add_blocked(blocks_slow)
    got = why(st, slow, runner)
    assert got is not None and got.reason == "blocked"
    assert got.extra == {"predicates": ["tests.engine.test_why.blocks_slow"]}
    assert "blocks_slow" in got.message
    got = why(st, fast, runner)
    assert got is not None and got.reason == "runnable"
    got = why(st, slow)  # without the runner, its predicates are unknown
    assert got is not None and got.reason == "runnable"


def test_held_after_a_failure_names_the_failed_task(st: State, runner: TaskRunner) -> None:
    bad, held, other = change_of(st, "bad", "k", "k")
    with st:
        lane = st.new_lane()
        for tid in (bad, held):
            task_of(st, tid).join_lane(lane)
        task_of(st, held).wait_for(task_of(st, bad))
        task_of(st, other).wait_for(task_of(st, bad))

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("disk on fire")

    runner.add_handler("bad", fail)
    runner.add_handler("k", noop)
    runner.ensure()
    runner.wait()
    got = why(st, held, runner)
    assert got is not None and got.reason == "held"
    assert [t.id for t in got.tasks] == [bad]
    assert got.message.startswith(f"task {bad} (bad, Error) failed")
    got = why(st, bad, runner)
    assert got is not None and got.reason == "failed" and got.message == "disk on fire"


def test_change_aborted(st: State, runner: TaskRunner) -> None:
    first, second = change_of(st, "k", "k")
    with st:
        chg = st.change("1")
        assert chg is not None
        chg.abort()
    runner.add_handler("k", noop)
    for tid in (first, second):
        got = why(st, tid, runner)
        assert got is not None and got.reason == "change-aborted", got
        assert got.tasks == ()


def test_no_handler_for_its_kind(st: State, runner: TaskRunner) -> None:
    (tid,) = change_of(st, "unknown")
    runner.add_handler("k", noop)
    got = why(st, tid, runner)
    assert got is not None and got.reason == "no-handler" and "'unknown'" in got.message
    got = why(st, tid)  # a reader cannot tell
    assert got is not None and got.reason == "runnable"


def test_waiting_for_a_worker(st: State) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(task: Task, tomb: Tomb) -> None:
        started.set()
        release.wait(TIMEOUT)

    running, waiting = change_of(st, "slow", "slow")
    runner = TaskRunner(st, workers=1)
    runner.add_handler("slow", slow)
    try:
        runner.ensure()
        assert started.wait(TIMEOUT)
        assert why(st, running, runner) is None
        got = why(st, waiting, runner)
        assert got is not None and got.reason == "waiting-for-worker" and "1 workers" in got.message
    finally:
        release.set()
        runner.stop()


def test_interrupted_wait_undone_and_no_change(st: State, runner: TaskRunner) -> None:
    doing, waiting, undone = change_of(st, "k", "k", "k")
    with st:
        task_of(st, doing).set_status(Status.DOING)
        task_of(st, waiting).set_to_wait(Status.UNDO)
        task_of(st, undone).set_status(Status.UNDONE)
        loose = st.new_task("k", "in no change").id
    runner.add_handler("k", noop)
    got = why(st, doing, runner)
    assert got is not None and got.reason == "interrupted"
    got = why(st, waiting, runner)
    assert got is not None and got.reason == "waiting" and got.extra == {"waited-status": "Undo"}
    got = why(st, undone, runner)
    assert got is not None and got.reason == "undone"
    with st:
        loose = st.new_task("k", "in no change")
        got = why_not(loose, runner)
    assert got is not None and got.reason == "no-change"


def test_many_tasks_at_once(st: State, runner: TaskRunner) -> None:
    ids = change_of(st, "k", "k", "k")
    with st:
        for tid in ids[1:]:
            task_of(st, tid).wait_for(task_of(st, ids[0]))
        got = why_not_tasks([task_of(st, tid) for tid in ids], runner)
    assert [w.reason if w else None for w in got] == ["no-handler"] * 3
    runner.add_handler("k", noop)
    with st:
        got = why_not_tasks([task_of(st, tid) for tid in ids], runner)
    assert [w.reason if w else None for w in got] == ["runnable", "waiting-for-tasks", "waiting-for-tasks"]


def test_a_rule_may_give_another_reason(st: State, runner: TaskRunner) -> None:
    slot, other = change_of(st, "limited", "k")
    runner.add_handler("limited", noop)
    runner.add_handler("k", noop)
    seen: list[str] = []

    def slots(task: Task, r: TaskRunner | None, why: WhyNot) -> WhyNot | None:
        seen.append(why.reason)
        if task.kind == "limited" and why.reason == "runnable":
            return WhyNot("waiting-for-slot", "the slot 'db' is taken", extra={"key": "db"})
        return None

    def broken(task: Task, r: TaskRunner | None, why: WhyNot) -> WhyNot | None:
        raise ValueError("a bug")

    add_why_not_rule(broken)
    add_why_not_rule(slots)
    try:
        got = why(st, slot, runner)
        assert got is not None and got.to_json() == {"reason": "waiting-for-slot", "message": "the slot 'db' is taken",
                                                     "tasks": [], "key": "db"}
        got = why(st, other, runner)
        assert got is not None and got.reason == "runnable"
        assert seen == ["runnable", "runnable"]
    finally:
        remove_why_not_rule(broken)
        remove_why_not_rule(slots)
    got = why(st, slot, runner)
    assert got is not None and got.reason == "runnable"


# -- damaged rows, edited by hand on either backend --------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def hand_edited(request: pytest.FixtureRequest, tmp_path: Path,
                clock: FakeClock) -> Iterator[tuple[State, Callable[[str], None]]]:
    """hand_edited is a State on a database of either backend, and a function running SQL beside the engine."""
    edit: Callable[[str], Any]
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        st = State.open(path, clock=clock)

        def edit(sql: str) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute(sql)
            finally:
                conn.close()
    else:
        url = request.getfixturevalue("pg_url")
        cluster: pgcluster.Cluster = request.getfixturevalue("pg_cluster")
        st = State.open(url=url, clock=clock)
        database = make_url(url).database
        assert database is not None

        def edit(sql: str) -> None:
            cluster.sql(sql, database=database)
    yield st, edit
    st.close()


def test_damaged_change_is_left_alone_and_says_so(hand_edited: tuple[State, Callable[[str], None]]) -> None:
    st, edit = hand_edited
    good, bad = change_of(st, "k", "k")
    with st:
        handle = task_of(st, bad)
    edit(f"UPDATE tasks SET at_time = 'yesterday' WHERE id = {bad}")
    runner = TaskRunner(st)
    runner.add_handler("k", noop)
    try:
        runner.ensure()  # meets the damage: the change is left alone
        runner.wait()
        got = why(st, good, runner)
        assert got is not None and got.reason == "damaged", got
        assert "change 1" in got.message
        with st:  # the damaged task itself: its row cannot be loaded, and the answer says what is wrong
            got = why_not(handle, runner)
        assert got is not None and got.reason == "damaged" and "at_time 'yesterday'" in got.message, got
    finally:
        runner.stop()
