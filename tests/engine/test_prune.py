# SPDX-License-Identifier: GPL-3.0-or-later
"""st.prune: snapd's rules (state_test.go TestPrune*), one test per rule, on a real file."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine import Change, State, Status, Task
from engine.testing import FakeClock

PRUNE_WAIT = timedelta(hours=1)
ABORT_WAIT = timedelta(hours=3)
SECOND = timedelta(seconds=1)


def db_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def ids(path: Path, table: str) -> set[int]:
    return {r[0] for r in db_rows(path, f"SELECT id FROM {table}")}


def long_ago(clock: FakeClock) -> datetime:
    return clock() - timedelta(days=365)


def change_with_task(st: State, kind: str, status: Status | None = None) -> tuple[Change, Task]:
    chg = st.new_change(kind, "...")
    t = st.new_task("foo", "...")
    chg.add_task(t)
    if status is not None:
        t.set_status(status)
    return chg, t


def test_prune(file_st: State, db_path: Path, clock: FakeClock) -> None:
    """snapd's TestPrune: every rule at once."""
    st = file_st
    now = clock()
    with st:
        clock.set(now - ABORT_WAIT - SECOND)
        chg1, t1 = change_with_task(st, "abort")
        clock.set(now - PRUNE_WAIT - SECOND)
        chg2, t2 = change_with_task(st, "prune", Status.DONE)
        chg3, t3 = change_with_task(st, "ready-but-recent")
        t5 = st.new_task("unlinked", "...")
        st.add_warning("hello", expire_after=SECOND)
        clock.set(now - PRUNE_WAIT / 2)
        t3.set_status(Status.DONE)
        chg4, t4 = change_with_task(st, "old-but-not-ready")
        clock.set(now)
        st.add_warning("hello again")
        ids_ = {name: x.id for name, x in
                {"chg1": chg1, "chg2": chg2, "chg3": chg3, "chg4": chg4,
                 "t1": t1, "t2": t2, "t3": t3, "t4": t4, "t5": t5}.items()}
    assert db_rows(db_path, "SELECT count(*) FROM warnings") == [(2,)]

    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)

        assert st.change(ids_["chg1"]) == chg1
        assert st.change(ids_["chg2"]) is None
        assert st.change(ids_["chg3"]) == chg3
        assert st.change(ids_["chg4"]) == chg4

        assert st.task(ids_["t1"]) == t1
        assert st.task(ids_["t2"]) is None
        assert st.task(ids_["t3"]) == t3
        assert st.task(ids_["t4"]) == t4

        assert chg1.status is Status.HOLD  # aborted: spawned before abort_wait
        assert t1.status is Status.HOLD
        assert chg3.status is Status.DONE
        assert chg4.status is Status.DO
        assert t4.status is Status.DO

        assert st.task_count() == 3
        assert [str(w) for w in st.all_warnings()] == ["hello again"]

    assert ids(db_path, "changes") == {int(ids_["chg1"]), int(ids_["chg3"]), int(ids_["chg4"])}
    assert ids(db_path, "tasks") == {int(ids_["t1"]), int(ids_["t3"]), int(ids_["t4"])}
    assert db_rows(db_path, "SELECT message FROM warnings") == [("hello again",)]
    assert db_rows(db_path, "SELECT status FROM changes WHERE id = ?", (int(ids_["chg1"]),)) == [("Hold",)]


def test_ready_changes_older_than_prune_wait_go_with_their_tasks(file_st: State, db_path: Path,
                                                                  clock: FakeClock) -> None:
    st = file_st
    now = clock()
    with st:
        clock.set(now - PRUNE_WAIT - SECOND)
        old, t1 = change_with_task(st, "old")
        t2 = st.new_task("bar", "...")
        old.add_task(t2)
        t2.wait_for(t1)
        lane = st.new_lane()
        t1.join_lane(lane)
        t1.logf("a log line")
        t2.errorf("an error line")
        t1.set_status(Status.DONE)
        t2.set_status(Status.ERROR)
        clock.set(now - PRUNE_WAIT + SECOND)
        recent, t3 = change_with_task(st, "recent", Status.DONE)
        t3.logf("kept")
        clock.set(now)
        old_id, t1_id, t2_id = old.id, t1.id, t2.id
        recent_id, t3_id = int(recent.id), int(t3.id)
    assert db_rows(db_path, "SELECT count(*) FROM task_log") == [(3,)]
    assert db_rows(db_path, "SELECT count(*) FROM task_lanes") == [(1,)]
    assert db_rows(db_path, "SELECT count(*) FROM task_dependencies") == [(1,)]

    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.change(old_id) is None
        assert st.task(t1_id) is None and st.task(t2_id) is None
        assert st.changes() == [recent]
        assert st.tasks() == [t3]

    assert ids(db_path, "changes") == {recent_id}
    assert ids(db_path, "tasks") == {t3_id}
    assert db_rows(db_path, "SELECT task_id, message FROM task_log") == [(t3_id, "kept")]
    assert db_rows(db_path, "SELECT count(*) FROM task_lanes") == [(0,)]
    assert db_rows(db_path, "SELECT count(*) FROM task_dependencies") == [(0,)]


def test_prune_waits_are_seconds_or_timedelta(st: State, clock: FakeClock) -> None:
    now = clock()
    with st:
        clock.set(now - timedelta(seconds=120))
        chg, _ = change_with_task(st, "old", Status.DONE)
        clock.set(now)
        st.prune(long_ago(clock), 200, 500, 100)
        assert st.changes() == [chg]
        st.prune(long_ago(clock), 100.0, 500.0, 100)
        assert st.changes() == []


def test_max_ready_changes_prunes_the_oldest_ready_first(file_st: State, db_path: Path,
                                                         clock: FakeClock) -> None:
    """snapd's TestPruneMaxChangesHappy."""
    st = file_st
    now = clock()
    with st:
        # chg0 is the freshest, chg9 the oldest; none old enough for prune_wait.
        for i in range(9, -1, -1):
            clock.set(now - timedelta(seconds=i))
            change_with_task(st, f"chg{i}", Status.DONE)
        clock.set(now)
        for i in range(10, 15):
            change_with_task(st, f"chg{i}")  # not ready
        assert len(st.changes()) == 15

    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert len(st.changes()) == 15
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 5)
        assert sorted(c.kind for c in st.changes()) == sorted(
            ["chg0", "chg1", "chg2", "chg3", "chg4", "chg10", "chg11", "chg12", "chg13", "chg14"])
    assert sorted(r[0] for r in db_rows(db_path, "SELECT kind FROM changes")) == sorted(
        ["chg0", "chg1", "chg2", "chg3", "chg4", "chg10", "chg11", "chg12", "chg13", "chg14"])
    assert db_rows(db_path, "SELECT count(*) FROM tasks") == [(10,)]


def test_max_ready_changes_orders_by_ready_time_not_id(st: State, clock: FakeClock) -> None:
    with st:
        c1, t1 = change_with_task(st, "c1")
        c2, t2 = change_with_task(st, "c2")
        _c3, t3 = change_with_task(st, "c3")
        clock.advance(1)
        t3.set_status(Status.DONE)  # oldest ready
        clock.advance(1)
        t1.set_status(Status.DONE)
        clock.advance(1)
        t2.set_status(Status.DONE)  # freshest
        clock.advance(1)
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 2)
        assert st.changes() == [c1, c2]
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 1)
        assert st.changes() == [c2]
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 0)
        assert st.changes() == []


def test_max_ready_changes_ignores_unready_ones(st: State, clock: FakeClock) -> None:
    """snapd's TestPruneMaxChangesSomeNotReady and TestPruneMaxChangesHonored."""
    with st:
        for i in range(10):
            change_with_task(st, f"chg{i}")
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 5)
        assert len(st.changes()) == 10
        clock.advance(1)
        change_with_task(st, "chg99", Status.DONE)
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 10)
        assert len(st.changes()) == 11
        assert all(c.status is Status.DO for c in st.changes() if c.kind != "chg99")


def test_unready_empty_change_spawned_before_prune_wait_goes(file_st: State, db_path: Path,
                                                             clock: FakeClock) -> None:
    """snapd's TestPruneEmptyChange: a new change is Hold but not ready; old and empty, it goes."""
    st = file_st
    now = clock()
    with st:
        clock.set(now - PRUNE_WAIT - SECOND)
        old = st.new_change("abort", "...")
        clock.set(now - PRUNE_WAIT + SECOND)
        recent = st.new_change("recent", "...")
        clock.set(now)
        assert not old.is_ready()
        old_id, recent_id = old.id, int(recent.id)
    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.change(old_id) is None
        assert st.changes() == [recent]
    assert ids(db_path, "changes") == {recent_id}


def test_unready_changes_older_than_abort_wait_get_abort_unready_lanes(st: State, clock: FakeClock) -> None:
    now = clock()
    with st:
        clock.set(now - ABORT_WAIT - SECOND)
        chg = st.new_change("stale", "...")
        lane1, lane2 = st.new_lane(), st.new_lane()
        done1 = st.new_task("foo", "lane 1 done")
        done1.join_lane(lane1)
        done2 = st.new_task("foo", "lane 2 done")
        done2.join_lane(lane2)
        doing2 = st.new_task("foo", "lane 2 doing")
        doing2.join_lane(lane2)
        do2 = st.new_task("foo", "lane 2 do")
        do2.join_lane(lane2)
        for t in (done1, done2, doing2, do2):
            chg.add_task(t)
        done1.set_status(Status.DONE)
        done2.set_status(Status.DONE)
        doing2.set_status(Status.DOING)
        clock.set(now - ABORT_WAIT + SECOND)
        young, young_task = change_with_task(st, "young", Status.DOING)
        clock.set(now)

        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        # Lane 1 is all ready: left alone. Lane 2 still had work: aborted.
        assert done1.status is Status.DONE
        assert done2.status is Status.UNDO
        assert doing2.status is Status.ABORT
        assert do2.status is Status.HOLD
        assert st.change(chg.id) == chg  # aborted, not deleted
        assert chg.status is Status.ABORT
        assert young_task.status is Status.DOING
        assert young.status is Status.DOING
    with st:
        assert (done1.status, done2.status, doing2.status, do2.status) == (
            Status.DONE, Status.UNDO, Status.ABORT, Status.HOLD)


def test_start_of_operation_clamps_spawn_times(st: State, clock: FakeClock) -> None:
    """snapd's TestPruneHonorsStartOperationTime."""
    now = clock()
    with st:
        clock.set(now - timedelta(hours=10))
        chg, t = change_with_task(st, "change")
        empty = st.new_change("empty", "...")
        clock.set(now)

        # Started 30 min ago: both count as 30 min old, even the empty change stays.
        st.prune(now - timedelta(minutes=30), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.changes() == [chg, empty]
        assert chg.status is Status.DO

        # Started 2h ago: the empty change is older than prune_wait and goes;
        # the other is younger than abort_wait and is left alone.
        st.prune(now - timedelta(hours=2), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.changes() == [chg]
        assert chg.status is Status.DO

        # Started 9h ago: the change is older than abort_wait and is aborted.
        st.prune(now - timedelta(hours=9), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.changes() == [chg]
        assert chg.status is Status.HOLD
        assert t.status is Status.HOLD


def test_orphan_tasks_spawned_before_prune_wait_go(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    now = clock()
    with st:
        clock.set(now - PRUNE_WAIT - SECOND)
        old_orphan = st.new_task("orphan", "old")
        old_orphan.logf("goes too")
        _, linked = change_with_task(st, "unready")
        clock.set(now - PRUNE_WAIT + SECOND)
        young_orphan = st.new_task("orphan", "young")
        clock.set(now)
        old_id, young_id, linked_id = old_orphan.id, young_orphan.id, linked.id
    assert ids(db_path, "tasks") == {int(old_id), int(young_id), int(linked_id)}
    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.task_count() == 2
        assert st.task(linked_id) == linked
    assert ids(db_path, "tasks") == {int(young_id), int(linked_id)}
    assert db_rows(db_path, "SELECT count(*) FROM task_log") == [(0,)]
    with st:
        # The young orphan can still join a change.
        chg = st.new_change("later", "...")
        chg.add_task(young_orphan)
        assert st.task(young_id) == young_orphan


def test_expired_warnings_go(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    with st:
        st.add_warning("short", expire_after=60)
        st.add_warning("long")
    assert db_rows(db_path, "SELECT count(*) FROM warnings") == [(2,)]
    clock.advance(61)
    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert [str(w) for w in st.all_warnings()] == ["long"]
    assert db_rows(db_path, "SELECT message FROM warnings") == [("long",)]


def test_ids_never_reused_after_prune(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    with st:
        chg, t = change_with_task(st, "last", Status.DONE)
        orphan = st.new_task("orphan", "...")
        chg_id, t_id, orphan_id = int(chg.id), int(t.id), int(orphan.id)
    clock.advance(days=1)
    with st:
        st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
        assert st.changes() == [] and st.task_count() == 0
        assert int(st.new_change("next", "...").id) > chg_id
        assert int(st.new_task("next", "...").id) > max(t_id, orphan_id)
    st.close()
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert int(st2.new_change("after-reopen", "...").id) == chg_id + 2
            assert int(st2.new_task("after-reopen", "...").id) == max(t_id, orphan_id) + 2
    finally:
        st2.close()


def test_prune_rolls_back_with_its_unit(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    with st:
        change_with_task(st, "old", Status.DONE)
    clock.advance(days=1)
    try:
        with st:
            st.prune(long_ago(clock), PRUNE_WAIT, ABORT_WAIT, 100)
            assert st.changes() == []
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert ids(db_path, "changes") == {1}
    with st:
        assert [c.kind for c in st.changes()] == ["old"]
        assert st.task_count() == 1
