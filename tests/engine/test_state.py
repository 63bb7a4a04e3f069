# SPDX-License-Identifier: GPL-3.0-or-later
"""State: the lock and its unit of work, ids, the key/value data, the cache, hooks."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Change, EngineError, NoStateError, State, Status, Task
from engine.testing import FakeClock
from tests.support.ensure import EnsureRecorder

WAIT = 30  # seconds; generous, only reached when something is broken
SOME_TIME = datetime(2030, 1, 1, tzinfo=UTC)


def db_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """db_rows reads the database through its own connection, as a sqlite3 shell would."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# -- locking ---------------------------------------------------------------------

STATE_CALLS: dict[str, Callable[[State], Any]] = {
    "get": lambda st: st.get("k"),
    "get-default": lambda st: st.get("k", 1),
    "set": lambda st: st.set("k", 1),
    "has": lambda st: st.has("k"),
    "cache": lambda st: st.cache("k", 1),
    "cached": lambda st: st.cached("k"),
    "new_change": lambda st: st.new_change("install", "..."),
    "changes": lambda st: st.changes(),
    "change": lambda st: st.change("1"),
    "new_task": lambda st: st.new_task("download", "..."),
    "tasks": lambda st: st.tasks(),
    "task": lambda st: st.task("1"),
    "task_count": lambda st: st.task_count(),
    "new_lane": lambda st: st.new_lane(),
    "ensure_before": lambda st: st.ensure_before(1),
    "prune": lambda st: st.prune(SOME_TIME, 3600, 3600, 100),
    "add_warning": lambda st: st.add_warning("hello"),
    "warnings": lambda st: st.warnings(),
    "all_warnings": lambda st: st.all_warnings(),
    "okay_warnings": lambda st: st.okay_warnings(SOME_TIME),
    "add_task_status_changed_handler": lambda st: st.add_task_status_changed_handler(lambda t, o, n: None),
    "add_change_status_changed_handler": lambda st: st.add_change_status_changed_handler(lambda c, o, n: None),
    "remove_task_status_changed_handler": lambda st: st.remove_task_status_changed_handler(1),
    "remove_change_status_changed_handler": lambda st: st.remove_change_status_changed_handler(1),
}



@pytest.mark.parametrize("call", list(STATE_CALLS.values()), ids=list(STATE_CALLS))
def test_state_methods_need_the_lock(st: State, call: Callable[[State], Any]) -> None:
    with pytest.raises(RuntimeError):
        call(st)
    # Nothing was written by the refused call.
    with st:
        assert st.changes() == []
        assert st.task_count() == 0
        assert not st.has("k")
        assert st.all_warnings() == []


def test_lock_held_by_another_thread_does_not_count(st: State) -> None:
    errors: list[BaseException] = []
    with st:
        def other() -> None:
            try:
                st.get("k", None)
            except BaseException as e:  # recorded for the assertion
                errors.append(e)

        th = threading.Thread(target=other)
        th.start()
        th.join(WAIT)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_no_lock_needed_for_state_properties_and_close(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
    assert chg.state is st
    assert t.state is st
    st.close()


def test_lock_and_unlock_by_hand(file_st: State, db_path: Path) -> None:
    file_st.lock()
    file_st.set("a", 1)
    file_st.unlock()
    assert db_rows(db_path, "SELECT value FROM state_data WHERE key = 'a'") == [("1",)]
    with pytest.raises(RuntimeError):
        file_st.get("a")
    with pytest.raises(RuntimeError):
        file_st.unlock()


def test_lock_is_reentrant_and_commits_once_at_the_outermost_exit(file_st: State, db_path: Path) -> None:
    with file_st:
        file_st.set("outer", 1)
        with file_st:
            file_st.set("inner", 2)
            with file_st:
                chg = file_st.new_change("install", "...")
        # Leaving inner levels wrote nothing yet.
        assert db_rows(db_path, "SELECT count(*) FROM state_data") == [(0,)]
        assert db_rows(db_path, "SELECT count(*) FROM changes") == [(0,)]
        assert file_st.get("inner") == 2
        chg_id = chg.id
    assert sorted(db_rows(db_path, "SELECT key, value FROM state_data")) == [("inner", "2"), ("outer", "1")]
    assert db_rows(db_path, "SELECT id, kind FROM changes") == [(int(chg_id), "install")]


def test_lock_by_hand_is_reentrant(file_st: State, db_path: Path) -> None:
    file_st.lock()
    file_st.lock()
    file_st.set("a", 1)
    file_st.unlock()
    assert db_rows(db_path, "SELECT count(*) FROM state_data") == [(0,)]
    assert file_st.get("a") == 1  # still held
    file_st.unlock()
    assert db_rows(db_path, "SELECT value FROM state_data") == [("1",)]


class Boom(Exception):
    pass


def test_exception_rolls_back_the_unit_and_objects_reload(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        chg.set("kept", "yes")
        st.set("key", "old")
    with pytest.raises(Boom), st:
        chg.set("kept", "changed")
        chg.set("new", 1)
        t.set_status(Status.DOING)
        t.logf("hello")
        t.join_lane(st.new_lane())
        st.set("key", "new")
        st.set("other", 1)
        lost = st.new_change("lost", "...")
        lost_id = lost.id
        raise Boom()
    with st:
        assert chg.get("kept") == "yes"
        assert not chg.has("new")
        assert t.status is Status.DO
        assert t.log() == []
        assert t.lanes() == [0]
        assert st.get("key") == "old"
        assert not st.has("other")
        assert st.change(lost_id) is None
        assert [c.id for c in st.changes()] == [chg.id]
    assert db_rows(db_path, "SELECT count(*) FROM changes") == [(1,)]
    assert db_rows(db_path, "SELECT status FROM tasks") == [("Do",)]


def test_exception_in_an_inner_level_rolls_back_the_whole_unit(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "...")
    with st:
        chg.set("outer", 1)
        with st:
            chg.set("inner-done", 1)
        try:
            with st:
                chg.set("inner", 2)
                raise Boom()
        except Boom:
            pass
        # The whole unit is gone, including what the outer level did before.
        assert not chg.has("outer")
        assert not chg.has("inner-done")
        assert not chg.has("inner")
        chg.set("after", 3)
    with st:
        assert not chg.has("outer")
        assert chg.get("after") == 3
    assert db_rows(db_path, "SELECT json_extract(data, '$.after'), json_extract(data, '$.outer') FROM changes") == [
        (3, None)
    ]


def test_lock_is_usable_after_a_rollback(st: State) -> None:
    with pytest.raises(Boom), st:
        st.set("a", 1)
        raise Boom()
    with st:
        st.set("b", 2)
    with st:
        assert st.get("b") == 2
    # And no thread is left holding it.
    done = threading.Event()

    def other() -> None:
        with st:
            done.set()

    th = threading.Thread(target=other)
    th.start()
    assert done.wait(WAIT)
    th.join(WAIT)


def test_threads_share_one_state(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        st.set("counter", 0)
        chg = st.new_change("install", "...")
    n, rounds = 4, 50
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(rounds):
                with st:
                    st.set("counter", st.get("counter") + 1)
                    t = st.new_task("work", f"{i}-{j}")
                    chg.add_task(t)
        except BaseException as e:  # recorded for the assertion
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT)
    assert errors == []
    with st:
        assert st.get("counter") == n * rounds
        ids = [t.id for t in chg.tasks()]
    assert len(set(ids)) == n * rounds
    assert db_rows(db_path, "SELECT count(*) FROM tasks WHERE change_id IS NOT NULL") == [(n * rounds,)]


def test_lock_excludes_other_threads(st: State) -> None:
    entered = threading.Event()

    def other() -> None:
        with st:
            entered.set()

    with st:
        th = threading.Thread(target=other)
        th.start()
        # Negative check: it may only pass spuriously, never fail spuriously.
        assert not entered.wait(0.2)
    assert entered.wait(WAIT)
    th.join(WAIT)


# -- ids -------------------------------------------------------------------------


def test_ids_are_decimal_strings_with_separate_sequences(st: State) -> None:
    with st:
        c1 = st.new_change("install", "...")
        t1 = st.new_task("download", "...")
        t2 = st.new_task("download", "...")
        c2 = st.new_change("remove", "...")
        lane1 = st.new_lane()
        t3 = st.new_task("download", "...")
        lane2 = st.new_lane()
        for x in (c1, c2, t1, t2, t3):
            assert isinstance(x.id, str) and x.id.isdigit()
        assert (c1.id, c2.id) == ("1", "2")
        assert (t1.id, t2.id, t3.id) == ("1", "2", "3")
        assert (lane1, lane2) == (1, 2)
        assert type(lane1) is int


def test_ids_survive_reopen(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        st.new_change("install", "...")
        st.new_task("download", "...")
        st.new_task("download", "...")
        assert st.new_lane() == 1
    st.close()
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert st2.new_task("download", "...").id == "3"
            assert st2.new_change("install", "...").id == "2"
            assert st2.new_lane() == 2
    finally:
        st2.close()


def test_ids_not_reused_after_rollback(st: State) -> None:
    with pytest.raises(Boom), st:
        assert st.new_change("install", "...").id == "1"
        assert st.new_task("download", "...").id == "1"
        assert st.new_lane() == 1
        raise Boom()
    with st:
        assert st.new_change("install", "...").id == "2"
        assert st.new_task("download", "...").id == "2"
        assert st.new_lane() == 2


def test_ids_not_reused_after_prune_and_reopen(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        for _ in range(2):
            chg = st.new_change("install", "...")
            t = st.new_task("download", "...")
            chg.add_task(t)
            t.set_status(Status.DONE)
        st.new_task("orphan", "...")
    clock.advance(days=2)
    with st:
        st.prune(clock(), timedelta(hours=1), timedelta(hours=3), 100)
        assert st.changes() == []
        assert st.task_count() == 0
        assert st.new_change("install", "...").id == "3"
        assert st.new_task("download", "...").id == "4"
    st.close()
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert st2.new_change("install", "...").id == "4"
            assert st2.new_task("download", "...").id == "5"
    finally:
        st2.close()


def test_change_and_task_lookups_with_bad_ids(st: State) -> None:
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        for bad in ("0", "-1", "abc", "", "99", " 1", "1.0"):
            assert st.change(bad) is None, bad
            assert st.task(bad) is None, bad
        assert st.change("1") == chg
        assert st.task("1") == t


# -- opening -----------------------------------------------------------------------


def test_open_creates_the_file_and_persists(db_path: Path, clock: FakeClock) -> None:
    assert not db_path.exists()
    st = State.open(db_path, clock=clock)
    assert db_path.exists()
    with st:
        st.set("a", {"b": [1, 2]})
    st.close()
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert st2.get("a") == {"b": [1, 2]}
    finally:
        st2.close()


def test_open_with_an_sqlalchemy_url(db_path: Path, clock: FakeClock) -> None:
    st = State.open(url=f"sqlite:///{db_path}", clock=clock)
    try:
        with st:
            st.new_change("install", "...")
    finally:
        st.close()
    assert db_rows(db_path, "SELECT kind FROM changes") == [("install",)]


def test_in_memory_states_are_private(clock: FakeClock) -> None:
    a = State.open(clock=clock)
    b = State.open(clock=clock)
    try:
        with a:
            a.set("k", 1)
        with b:
            assert not b.has("k")
    finally:
        a.close()
        b.close()


# -- key/value data ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [1, -5, 2.5, "text", "ünïcode ✓", True, False, [1, "a", None], {"a": {"b": [1, 2, {"c": None}]}}, [], {}, 0, ""],
    ids=repr,
)
def test_get_returns_what_set_stored(st: State, value: Any) -> None:
    with st:
        st.set("k", value)
        assert st.has("k")
        got = st.get("k")
        assert got == value
        assert type(got) is type(value)
    with st:
        assert st.get("k") == value


def test_get_missing_raises_no_state_error(st: State) -> None:
    with st:
        with pytest.raises(NoStateError) as info:
            st.get("missing")
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, EngineError)
        assert "missing" in str(info.value)
        with pytest.raises(KeyError):
            st.get("missing")
        assert st.get("missing", "dflt") == "dflt"
        assert st.get("missing", None) is None
        assert not st.has("missing")


def test_set_none_deletes(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        st.set("a", {"a": 1})
    assert db_rows(db_path, "SELECT count(*) FROM state_data WHERE key = 'a'") == [(1,)]
    with st:
        st.set("a", None)
        assert not st.has("a")
        with pytest.raises(NoStateError):
            st.get("a")
    assert db_rows(db_path, "SELECT count(*) FROM state_data WHERE key = 'a'") == [(0,)]
    with st:
        st.set("never-set", None)  # deleting a missing key is fine
        assert not st.has("never-set")


def test_values_are_copies(st: State) -> None:
    with st:
        value = {"a": [1]}
        st.set("k", value)
        value["a"].append(2)
        assert st.get("k") == {"a": [1]}
        got = st.get("k")
        got["b"] = 1
        assert st.get("k") == {"a": [1]}


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), {1, 2}, b"bytes", math.nan, math.inf, -math.inf, {"nested": [Opaque()]}, {"x": math.nan}],
    ids=["object", "set", "bytes", "nan", "inf", "-inf", "nested-object", "nested-nan"],
)
def test_set_refuses_non_json_values_naming_the_key(st: State, value: Any) -> None:
    with st:
        st.set("my-special-key", "before")
        with pytest.raises(TypeError) as info:
            st.set("my-special-key", value)
        assert "my-special-key" in str(info.value)
        assert st.get("my-special-key") == "before"
    with st:
        assert st.get("my-special-key") == "before"


def test_cache_is_process_local_and_not_persisted(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    marker = Opaque()  # not JSON: the cache keeps objects as they are
    key = ("any", "hashable")
    with st:
        assert st.cached(key) is None
        st.cache(key, marker)
        st.cache("other", "value")
        assert st.cached(key) is marker
        assert st.cached("other") == "value"
        st.cache("other", None)
        assert st.cached("other") is None
    with st:
        assert st.cached(key) is marker
    st.close()
    assert db_rows(db_path, "SELECT count(*) FROM state_data") == [(0,)]
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert st2.cached(key) is None
    finally:
        st2.close()


# -- changes and tasks ---------------------------------------------------------------


def test_new_change_changes_change(st: State) -> None:
    with st:
        assert st.changes() == []
        c1 = st.new_change("install", "Install foo")
        c2 = st.new_change("remove", "Remove bar")
        assert isinstance(c1, Change)
        assert (c1.kind, c1.summary) == ("install", "Install foo")
        assert (c2.kind, c2.summary) == ("remove", "Remove bar")
        assert st.changes() == [c1, c2]
        assert st.change(c1.id) == c1
        assert st.change(c2.id) == c2
    with st:
        assert [c.kind for c in st.changes()] == ["install", "remove"]


def test_tasks_and_task_count(st: State) -> None:
    with st:
        chg1 = st.new_change("install", "...")
        t11 = st.new_task("check", "...")
        t12 = st.new_task("inst", "...")
        chg1.add_task(t11)
        chg1.add_task(t12)
        chg2 = st.new_change("remove", "...")
        t21 = st.new_task("check", "...")
        t22 = st.new_task("rm", "...")
        chg2.add_task(t21)
        chg2.add_task(t22)
        stray = st.new_task("stray", "...")
        assert isinstance(t11, Task)
        assert (t11.kind, t11.summary) == ("check", "...")
        assert sorted(st.tasks(), key=lambda t: int(t.id)) == [t11, t12, t21, t22]
        # A task in no change is hidden from tasks() and task(), but counted.
        assert stray not in st.tasks()
        assert st.task(stray.id) is None
        assert st.task_count() == 5
        for t in (t11, t12, t21, t22):
            assert st.task(t.id) == t
    with st:
        assert st.task_count() == 5
        assert len(st.tasks()) == 4
        assert st.task(stray.id) is None


def test_task_hidden_until_linked(st: State) -> None:
    with st:
        t = st.new_task("check", "...")
        assert st.tasks() == []
        assert st.task(t.id) is None
        chg = st.new_change("install", "...")
        chg.add_task(t)
        assert st.tasks() == [t]
        assert st.task(t.id) == t


def test_no_task(st: State) -> None:
    with st:
        assert st.task("1") is None
        assert st.change("1") is None
        assert st.task_count() == 0


def test_new_lane_starts_at_one(st: State) -> None:
    with st:
        assert [st.new_lane() for _ in range(3)] == [1, 2, 3]


# -- ensure_before ---------------------------------------------------------------------


def test_ensure_before_seconds_and_timedelta(st: State, ensures: EnsureRecorder) -> None:
    with st:
        st.ensure_before(10)
        assert ensures.requests == [10.0]
        st.ensure_before(timedelta(minutes=1, milliseconds=500))
        assert ensures.requests == [10.0, 60.5]
        st.ensure_before(0.25)
    assert ensures.requests == [10.0, 60.5, 0.25]
    assert ensures.earliest == 0.25
    assert ensures.event.is_set()


# -- hooks -------------------------------------------------------------------------------


def test_task_status_changed_handler(st: State) -> None:
    seen: list[tuple[Task, Status, Status]] = []
    with st:
        hid = st.add_task_status_changed_handler(lambda t, old, new: seen.append((t, old, new)))
        t1 = st.new_task("foo", "...")
        t1.set_status(Status.DOING)
        t1.set_status(Status.DOING)  # same status: no event
        t1.set_status(Status.DONE)
        st.remove_task_status_changed_handler(hid)
        t1.set_status(Status.DOING)  # must not show
    assert len(seen) == 2
    (ta, old_a, new_a), (tb, old_b, new_b) = seen
    assert ta == t1 and tb == t1
    # snapd reports a new task's first old status as Default; Default reads as Do.
    assert old_a in (Status.DEFAULT, Status.DO)
    assert new_a is Status.DOING
    assert (old_b, new_b) == (Status.DOING, Status.DONE)


def test_task_handler_sees_the_change_with_the_lock_held(st: State) -> None:
    seen: list[tuple[Status, Status | None, int, Any]] = []
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("foo", "...")
        chg.add_task(t)
        t2 = st.new_task("bar", "...")
        chg.add_task(t2)

        def hook(task: Task, old: Status, new: Status) -> None:
            # With the lock held by this very thread: reads and writes work.
            seen.append((task.status, task.change().status if task.change() else None,  # type: ignore[union-attr]
                         threading.get_ident(), st.get("k", None)))
            st.set("seen", True)

        st.add_task_status_changed_handler(hook)
        st.set("k", "v")
        t.set_status(Status.DOING)
        assert len(seen) == 1  # called before set_status returned
        assert st.get("seen") is True
    assert seen == [(Status.DOING, Status.DOING, threading.get_ident(), "v")]


def test_task_handler_returning_true_removes_itself(st: State) -> None:
    once: list[Status] = []
    always: list[Status] = []
    with st:
        st.add_task_status_changed_handler(lambda t, old, new: once.append(new) or True)
        st.add_task_status_changed_handler(lambda t, old, new: always.append(new))
        t = st.new_task("foo", "...")
        t.set_status(Status.DOING)
        t.set_status(Status.DONE)
        t.set_status(Status.UNDO)
    assert once == [Status.DOING]
    assert always == [Status.DOING, Status.DONE, Status.UNDO]


def test_change_status_changed_handler(st: State) -> None:
    seen: list[tuple[Change, Status, Status]] = []
    with st:
        hid = st.add_change_status_changed_handler(lambda c, old, new: seen.append((c, old, new)))
        chg = st.new_change("test-chg", "...")
        t1 = st.new_task("foo", "...")
        chg.add_task(t1)
        t1.set_status(Status.DOING)
        t1.set_status(Status.DOING)  # no change status change: no event
        t1.set_to_wait(Status.DONE)
        st.remove_change_status_changed_handler(hid)
        t1.set_status(Status.DONE)  # must not show
    assert [c for c, _, _ in seen] == [chg, chg]
    # snapd reports the first old status of a new change as Default.
    assert seen[0][1] in (Status.DEFAULT, Status.DO)
    assert seen[0][2] is Status.DOING
    assert seen[1][1:] == (Status.DOING, Status.WAIT)


def test_change_handler_added_later_reports_the_real_old_status(st: State) -> None:
    """old is the status the change had, even if it moved before the handler was added (snapd
    records the last observed status on every move)."""
    seen: list[tuple[Status, Status]] = []
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("foo", "...")
        chg.add_task(t)
        t.set_status(Status.DOING)
    with st:
        st.add_change_status_changed_handler(lambda c, old, new: seen.append((old, new)))
        assert chg.status is Status.DOING
        t.set_status(Status.DONE)
    assert seen == [(Status.DOING, Status.DONE)]


def test_change_handler_follows_tasks_of_other_changes(st: State) -> None:
    """The Wait rule looks at tasks of other changes: when one moves, the change it blocks moves
    too, and its handler is told at that moment."""
    seen: list[tuple[str, Status, Status]] = []
    with st:
        a = st.new_change("a", "...")
        b = st.new_change("b", "...")
        a1, a2, b1 = st.new_task("x", "a1"), st.new_task("x", "a2"), st.new_task("x", "b1")
        a.add_task(a1)
        a.add_task(a2)
        b.add_task(b1)
        a2.wait_for(b1)
        a1.set_to_wait(Status.DONE)
        assert a.status is Status.DO
        st.add_change_status_changed_handler(lambda c, old, new: seen.append((c.kind, old, new)))
        b1.set_to_wait(Status.DONE)  # a2 now waits behind a waiting task: a is Wait
        assert a.status is Status.WAIT
        b1.set_status(Status.DOING)  # no longer: a is Do again
        assert a.status is Status.DO
    assert [(old, new) for kind, old, new in seen if kind == "a"] == [
        (Status.DO, Status.WAIT), (Status.WAIT, Status.DO)]
    b_events = [(old, new) for kind, old, new in seen if kind == "b"]
    # b was never observed before: snapd reports its first old status as Default.
    assert b_events[0][0] in (Status.DEFAULT, Status.DO)
    assert b_events == [(b_events[0][0], Status.WAIT), (Status.WAIT, Status.DOING)]


def test_change_set_status_fires_the_change_handler(st: State) -> None:
    seen: list[tuple[Status, Status]] = []
    with st:
        chg = st.new_change("test-chg", "...")
        t1 = st.new_task("foo", "...")
        chg.add_task(t1)
        st.add_change_status_changed_handler(lambda c, old, new: seen.append((old, new)))
        t1.set_status(Status.DOING)
        chg.set_status(Status.WAIT)
        chg.set_status(Status.ERROR)
        chg.set_status(Status.DEFAULT)  # back to the computed status: Doing
    assert seen[0][1] is Status.DOING
    assert seen[1:] == [(Status.DOING, Status.WAIT), (Status.WAIT, Status.ERROR), (Status.ERROR, Status.DOING)]


def test_change_handler_is_called_at_the_moment_with_the_lock_held(st: State) -> None:
    seen: list[tuple[Status, bool, int]] = []
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("foo", "...")
        chg.add_task(t)

        def hook(c: Change, old: Status, new: Status) -> None:
            seen.append((c.status, c.is_ready(), threading.get_ident()))

        st.add_change_status_changed_handler(hook)
        t.set_status(Status.DONE)
        assert seen == [(Status.DONE, True, threading.get_ident())]


def test_change_handler_returning_true_removes_itself(st: State) -> None:
    once: list[Status] = []
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("foo", "...")
        chg.add_task(t)
        st.add_change_status_changed_handler(lambda c, old, new: once.append(new) or True)
        t.set_status(Status.DOING)
        t.set_status(Status.DONE)
    assert once == [Status.DOING]


def test_removing_an_unknown_handler_is_harmless(st: State) -> None:
    with st:
        st.remove_task_status_changed_handler(12345)
        st.remove_change_status_changed_handler(12345)


def test_handler_ids_are_distinct(st: State) -> None:
    with st:
        ids = [st.add_task_status_changed_handler(lambda t, o, n: None) for _ in range(3)]
        ids += [st.add_change_status_changed_handler(lambda c, o, n: None) for _ in range(3)]
    assert len(set(ids)) == 6
