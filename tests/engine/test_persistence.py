# SPDX-License-Identifier: GPL-3.0-or-later
"""Persistence on a real file: every field survives a reopen, and the rows read well in sqlite3."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from engine import Retry, State, Status, Task, TaskRunner
from engine.testing import FakeClock, drive
from engine.tomb import Tomb

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)$")
STORED_STATUSES = {s.value for s in Status if s is not Status.DEFAULT}


def db_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def parse_time(text: str) -> datetime:
    assert ISO_UTC.match(text), text
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert when.utcoffset() == timedelta(0)
    return when


@pytest.fixture
def reopen(db_path: Path, clock: FakeClock) -> Iterator[Any]:
    """reopen closes a State and opens the same file again."""
    opened: list[State] = []

    def _reopen(st: State) -> State:
        st.close()
        st2 = State.open(db_path, clock=clock)
        opened.append(st2)
        return st2

    yield _reopen
    for st in opened:
        st.close()


def check_change_statuses(st: State, path: Path) -> dict[str, str]:
    """check_change_statuses asserts that changes.status holds what chg.status says."""
    stored = {str(cid): status for cid, status in db_rows(path, "SELECT id, status FROM changes")}
    with st:
        computed = {c.id: c.status.value for c in st.changes()}
    assert stored == computed
    return stored


# -- every field survives a reopen ----------------------------------------------------------


def test_change_fields_survive_reopen(file_st: State, clock: FakeClock, reopen: Any) -> None:
    st = file_st
    clock.set(datetime(2030, 3, 4, 5, 6, 7, 891011, tzinfo=UTC))
    with st:
        chg = st.new_change("install", "Install \"foo\" ✓")
        chg.set("nested", {"a": [1, 2.5, None, True, "x"], "b": {}})
        chg.set("n", 3)
        t = st.new_task("download", "Download foo")
        chg.add_task(t)
        explicit = st.new_change("explicit", "...")
        explicit.add_task(st.new_task("x", "..."))
        explicit.set_status(Status.ERROR)
        empty = st.new_change("empty", "...")
        chg_id, explicit_id, empty_id = chg.id, explicit.id, empty.id
        spawn = clock()
    clock.advance(seconds=90, microseconds=5)
    with st:
        t.set_status(Status.DONE)
        t.set_clean()
        ready = clock()
    st = reopen(st)
    with st:
        chg2 = st.change(chg_id)
        assert chg2 is not None
        assert chg2.kind == "install"
        assert chg2.summary == "Install \"foo\" ✓"
        assert chg2.get("nested") == {"a": [1, 2.5, None, True, "x"], "b": {}}
        assert chg2.get("n") == 3
        assert chg2.status is Status.DONE
        assert chg2.spawn_time == spawn
        assert chg2.ready_time == ready
        assert chg2.is_ready()
        assert chg2.is_clean()
        assert [x.summary for x in chg2.tasks()] == ["Download foo"]

        ex = st.change(explicit_id)
        assert ex is not None
        assert ex.status is Status.ERROR
        assert ex.is_ready()
        ex.set_status(Status.DEFAULT)  # the explicit status was kept apart from the computed one
        assert ex.status is Status.DO

        em = st.change(empty_id)
        assert em is not None
        assert em.status is Status.HOLD
        assert not em.is_ready()
        assert em.ready_time is None
        assert not em.is_clean()


def test_task_fields_survive_reopen(file_st: State, clock: FakeClock, reopen: Any) -> None:
    st = file_st
    clock.set(datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC))
    with st:
        chg = st.new_change("install", "...")
        t1 = st.new_task("download", "Download foo")
        t2 = st.new_task("install", "Install foo")
        t3 = st.new_task("reboot", "Reboot")
        for t in (t1, t2, t3):
            chg.add_task(t)
        t2.wait_for(t1)
        t3.wait_for(t1)
        t3.wait_for(t2)
        lane1, lane2, lane3 = st.new_lane(), st.new_lane(), st.new_lane()
        t1.join_lane(lane3)
        t1.join_lane(lane1)
        t2.join_lane(lane2)
        t1.set("data", {"url": "https://example.com/foo", "size": 12})
        t1.set_progress("downloading", 3, 7)
        t1.logf("starting %s", "download")
        spawn = clock()
        clock.advance(2)
        t1.errorf("retrying: %d", 1)
        log_time = clock()
        at = clock() + timedelta(hours=1, microseconds=250)
        t2.at(at)
        t1.set_status(Status.DOING)
        t3.set_to_wait(Status.UNDONE)
    clock.advance(10)
    with st:
        t1.set_status(Status.DONE)
        t1_ready = clock()
        ids = [t.id for t in (t1, t2, t3)]
        chg_id = chg.id
    st = reopen(st)
    with st:
        # Ask the halt side first: nothing else loaded the edges yet.
        r1, r2, r3 = (st.task(tid) for tid in ids)
        assert r1 is not None and r2 is not None and r3 is not None
        assert sorted(t.summary for t in r1.halt_tasks()) == ["Install foo", "Reboot"]
        assert r1.num_halt_tasks() == 2
        assert r2.halt_tasks() == [r3]
        assert sorted(t.id for t in r3.wait_tasks()) == sorted([r1.id, r2.id])
        assert r2.wait_tasks() == [r1]
        assert r1.wait_tasks() == []

        assert (r1.kind, r1.summary) == ("download", "Download foo")
        assert r1.get("data") == {"url": "https://example.com/foo", "size": 12}
        assert r1.lanes() == sorted([lane1, lane3])
        assert r2.lanes() == [lane2]
        assert r3.lanes() == [0]
        assert r1.progress() == ("downloading", 3, 7)
        assert r2.progress() == ("", 0, 1)
        assert r1.log() == [
            f"{spawn:%Y-%m-%dT%H:%M:%S}Z INFO starting download",
            f"{log_time:%Y-%m-%dT%H:%M:%S}Z ERROR retrying: 1",
        ]
        assert r2.at_time == at
        assert r1.at_time is None
        assert r1.spawn_time == spawn
        assert r1.ready_time == t1_ready
        assert r2.ready_time is None
        assert r1.status is Status.DONE
        assert r2.status is Status.DO
        assert r3.status is Status.WAIT
        assert r3.waited_status is Status.UNDONE
        assert r1.change() == st.change(chg_id)
        assert r1.attempts == 0
        assert r1.doing_time == timedelta(0)
        assert not r1.is_clean()


def test_log_keeps_ten_lines_across_units_and_reopen(file_st: State, db_path: Path, reopen: Any) -> None:
    st = file_st
    with st:
        t = st.new_task("download", "...")
        chg = st.new_change("install", "...")
        chg.add_task(t)
        for i in range(8):
            t.logf("first unit %d", i)
    with st:
        for i in range(8):
            t.errorf("second unit %d", i)
        expected = [line.split(" ", 1)[1] for line in t.log()]
        assert len(expected) == 10
        tid = t.id
    assert db_rows(db_path, "SELECT count(*) FROM task_log") == [(10,)]
    st = reopen(st)
    with st:
        got = st.task(tid).log()  # type: ignore[union-attr]
    assert [line.split(" ", 1)[1] for line in got] == expected
    assert expected == ["INFO first unit 6", "INFO first unit 7"] + [f"ERROR second unit {i}" for i in range(8)]


def test_runner_fields_survive_reopen(file_st: State, db_path: Path, reopen: Any) -> None:
    """doing/undoing time and attempts, written by the runner, are persisted."""
    st = file_st

    def do(task: Task, tomb: Tomb) -> None:
        with st:
            first = not task.has("retried")
            task.set("retried", True)
        if first:
            raise Retry()
        time.sleep(0.01)

    def undo(task: Task, tomb: Tomb) -> None:
        time.sleep(0.01)

    def fail(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("boom")

    runner = TaskRunner(st)
    runner.add_handler("work", do, undo)
    runner.add_handler("fail", fail)
    try:
        with st:
            chg = st.new_change("install", "...")
            t1 = st.new_task("work", "Work")
            t2 = st.new_task("fail", "Fail")
            t2.wait_for(t1)
            chg.add_task(t1)
            chg.add_task(t2)
        drive(runner, st, chg)
    finally:
        runner.stop()
    with st:
        before = (t1.status, t1.attempts, t1.doing_time, t1.undoing_time, t2.status, chg.status, str(chg.err()))
        t1_id, t2_id, chg_id = t1.id, t2.id, chg.id
    assert before[0] is Status.UNDONE
    assert before[1] == 1
    assert before[2] >= timedelta(seconds=0.01)
    assert before[3] >= timedelta(seconds=0.01)
    assert before[4] is Status.ERROR
    assert before[5] is Status.ERROR
    assert "- Fail (boom)" in before[6]
    st = reopen(st)
    with st:
        r1, r2, rc = st.task(t1_id), st.task(t2_id), st.change(chg_id)
        assert r1 is not None and r2 is not None and rc is not None
        after = (r1.status, r1.attempts, r1.doing_time, r1.undoing_time, r2.status, rc.status, str(rc.err()))
    assert after == before
    assert db_rows(db_path, "SELECT attempts FROM tasks WHERE id = ?", (int(t1_id),)) == [(1,)]


def test_state_data_survives_reopen(file_st: State, reopen: Any) -> None:
    st = file_st
    with st:
        st.set("config", {"refresh": {"hold": "2030-01-01"}, "list": [1, 2]})
        st.set("gone", 1)
    with st:
        st.set("gone", None)
    st = reopen(st)
    with st:
        assert st.get("config") == {"refresh": {"hold": "2030-01-01"}, "list": [1, 2]}
        assert not st.has("gone")


def test_clean_flags_survive_reopen(file_st: State, reopen: Any) -> None:
    """snapd's TestCheckpointPreserveCleanStatus."""
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        t2 = st.new_task("download", "...")
        chg.add_task(t2)
        t.set_status(Status.DONE)
        t2.set_status(Status.DONE)
        t.set_clean()
        chg_id, t_id, t2_id = chg.id, t.id, t2.id
    st = reopen(st)
    with st:
        c, r, r2 = st.change(chg_id), st.task(t_id), st.task(t2_id)
        assert c is not None and r is not None and r2 is not None
        assert r.is_clean()
        assert not r2.is_clean()
        assert not c.is_clean()
        r2.set_clean()  # the last one, after a reopen, still makes the change clean
        assert c.is_clean()
    st = reopen(st)
    with st:
        assert st.change(chg_id).is_clean()  # type: ignore[union-attr]


# -- the rows read well in sqlite3 -------------------------------------------------------------


def test_rows_read_well(file_st: State, db_path: Path, clock: FakeClock) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "Install foo")
        chg.set("snap", {"name": "foo", "revision": 7})
        t1 = st.new_task("download", "Download foo")
        t2 = st.new_task("link", "Link foo")
        chg.add_task(t1)
        chg.add_task(t2)
        t2.wait_for(t1)
        t1.set("url", "https://example.com")
        t1.set_status(Status.DOING)
        t1.logf("hello")
        st.set("refresh", {"last": "yesterday", "n": 3})
        spawn = clock()
    clock.advance(60)
    with st:
        t1.set_status(Status.DONE)
        t2.set_to_wait(Status.DONE)
        t2.at(clock() + timedelta(minutes=5))

    tasks = {r[0]: r[1:] for r in db_rows(
        db_path, "SELECT summary, status, waited_status, spawn_time, ready_time, at_time FROM tasks")}
    assert tasks["Download foo"][0] == "Done"
    assert tasks["Link foo"][:2] == ("Wait", "Done")
    assert {r[0] for r in db_rows(db_path, "SELECT status FROM tasks")} <= STORED_STATUSES
    assert parse_time(tasks["Download foo"][2]) == spawn
    assert parse_time(tasks["Download foo"][3]) == spawn + timedelta(seconds=60)
    assert tasks["Link foo"][3] is None
    assert parse_time(tasks["Link foo"][4]) == spawn + timedelta(minutes=6)

    assert db_rows(db_path, "SELECT kind, summary, status FROM changes") == [("install", "Install foo", "Wait")]
    (chg_spawn, chg_ready), = db_rows(db_path, "SELECT spawn_time, ready_time FROM changes")
    assert parse_time(chg_spawn) == spawn
    assert chg_ready is None

    assert db_rows(db_path, "SELECT json_extract(data, '$.snap.name'), json_extract(data, '$.snap.revision') "
                            "FROM changes") == [("foo", 7)]
    assert json.loads(db_rows(db_path, "SELECT data FROM changes")[0][0]) == {"snap": {"name": "foo", "revision": 7}}
    assert db_rows(db_path, "SELECT json_extract(data, '$.url') FROM tasks WHERE summary = 'Download foo'") == [
        ("https://example.com",)]
    assert db_rows(db_path, "SELECT json_extract(value, '$.n') FROM state_data WHERE key = 'refresh'") == [(3,)]
    assert db_rows(db_path, "SELECT count(*) FROM tasks WHERE json_valid(data) = 0") == [(0,)]

    (log_time, level, message), = db_rows(db_path, "SELECT time, level, message FROM task_log")
    assert parse_time(log_time) == spawn
    assert (level, message) == ("INFO", "hello")

    with st:
        t1_id, t2_id = int(t1.id), int(t2.id)
    assert db_rows(db_path, "SELECT task_id, wait_task_id FROM task_dependencies") == [(t2_id, t1_id)]

    with st:
        chg.set_status(Status.DEFAULT)
        t2.set_status(Status.DONE)
    assert db_rows(db_path, "SELECT status FROM changes") == [("Done",)]
    assert parse_time(db_rows(db_path, "SELECT ready_time FROM changes")[0][0]) == clock()


def test_times_are_stored_fixed_width_and_read_back(file_st: State, db_path: Path, clock: FakeClock,
                                                    reopen: Any) -> None:
    """Stored times are 27 characters (microseconds always written), so that they sort as the times do."""
    whens = [datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2030, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
             datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    st = file_st
    for when in whens:
        clock.set(when)
        with st:
            st.new_change("install", "...").add_task(st.new_task("download", "..."))
    stored = [r[0] for r in db_rows(db_path, "SELECT spawn_time FROM tasks ORDER BY id")]
    assert stored == ["2030-01-02T03:04:05.000000Z", "2030-01-02T03:04:05.000007Z", "0999-12-31T23:59:59.999999Z"]
    assert sorted(stored) == [stored[2], stored[0], stored[1]]
    st2 = reopen(st)
    with st2:
        assert [t.spawn_time for t in st2.tasks()] == whens


def test_a_new_task_row_is_the_same_whichever_insert_writes_it(file_st: State, db_path: Path, clock: FakeClock,
                                                              reopen: Any) -> None:
    """A task as new_task made it is written by a shorter insert (the others bind every column): same row."""
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        plain = st.new_task("download", "...")
        touched = st.new_task("download", "...")
        touched.set("x", 1)
        touched.set("x", None)  # its data is empty again, but no longer as made: the full insert writes it
        held = st.new_task("download", "...")
        held.set_status(Status.HOLD)
        for t in (plain, touched, held):
            chg.add_task(t)
    rows = db_rows(db_path, "SELECT * FROM tasks ORDER BY id")
    names = [r[1] for r in db_rows(db_path, "PRAGMA table_info(tasks)")]
    skip = {names.index("id"), names.index("spawn_time")}
    plain_row, touched_row, held_row = ([v for i, v in enumerate(r) if i not in skip] for r in rows)
    assert plain_row == touched_row
    assert [type(v) for v in plain_row] == [type(v) for v in touched_row]
    assert held_row[names.index("status") - 1] == "Hold"
    st2 = reopen(st)
    with st2:
        got = st2.tasks()
        assert [t.status for t in got] == [Status.DO, Status.DO, Status.HOLD]
        assert [t.keys() for t in got] == [[], [], []]
        assert all(not t.is_clean() and t.attempts == 0 for t in got)
        assert [t.progress() for t in got] == [("", 0, 1), ("", 0, 1), ("", 1, 1)]


def test_new_tasks_are_stored_as_do(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task("download", "...")
        chg.add_task(t)
        t2 = st.new_task("download", "...")
        chg.add_task(t2)
        t2.set_status(Status.DEFAULT)
    assert db_rows(db_path, "SELECT status FROM tasks") == [("Do",), ("Do",)]
    assert db_rows(db_path, "SELECT status FROM changes") == [("Do",)]


def test_change_status_column_after_each_unlock(file_st: State, db_path: Path) -> None:
    st = file_st
    with st:
        chg = st.new_change("install", "...")
        empty = st.new_change("empty", "...")
        t1, t2, t3 = (st.new_task("x", f"t{i}") for i in (1, 2, 3))
        for t in (t1, t2, t3):
            chg.add_task(t)
        t2.wait_for(t1)
        t3.wait_for(t2)
    assert check_change_statuses(st, db_path) == {"1": "Do", "2": "Hold"}
    steps = [
        (lambda: t1.set_status(Status.DOING), "Doing"),
        (lambda: t1.set_to_wait(Status.DONE), "Wait"),  # the Wait rule: t2 and t3 wait behind t1
        (lambda: t1.set_status(Status.DONE), "Do"),
        (lambda: t2.set_to_wait(Status.DONE), "Wait"),
        (lambda: chg.set_status(Status.ERROR), "Error"),  # explicit
        (lambda: t2.set_status(Status.DONE), "Error"),  # still explicit
        (lambda: chg.set_status(Status.DEFAULT), "Do"),  # computed again
        (lambda: chg.abort(), "Undo"),
        (lambda: t2.set_status(Status.UNDOING), "Undoing"),
        (lambda: t2.set_status(Status.UNDONE), "Undo"),
        (lambda: t1.set_status(Status.UNDONE), "Undone"),
        (lambda: empty.set_status(Status.DOING), None),
    ]
    for step, expected in steps:
        with st:
            step()
        stored = check_change_statuses(st, db_path)
        if expected is not None:
            assert stored["1"] == expected
    assert check_change_statuses(st, db_path) == {"1": "Undone", "2": "Doing"}


def test_change_status_column_follows_tasks_of_other_changes(file_st: State, db_path: Path) -> None:
    """A task waiting for a task of another change: the Wait rule looks across, so must the column."""
    st = file_st
    with st:
        a = st.new_change("a", "...")
        b = st.new_change("b", "...")
        a1 = st.new_task("x", "a1")
        a2 = st.new_task("x", "a2")
        b1 = st.new_task("x", "b1")
        a.add_task(a1)
        a.add_task(a2)
        b.add_task(b1)
        a2.wait_for(b1)
        a1.set_to_wait(Status.DONE)
        b1.set_to_wait(Status.DONE)
    assert check_change_statuses(st, db_path) == {"1": "Wait", "2": "Wait"}
    with st:
        b1.set_status(Status.DOING)  # a2 no longer waits behind a waiting task
        assert a.status is Status.DO
    assert check_change_statuses(st, db_path) == {"1": "Do", "2": "Doing"}


def test_change_status_column_follows_other_changes_after_reopen(db_path: Path, clock: FakeClock,
                                                                  reopen: Any) -> None:
    """The same across a reopen: nothing of change a is loaded when b1 moves."""
    st = State.open(db_path, clock=clock)
    with st:
        a = st.new_change("a", "...")
        b = st.new_change("b", "...")
        a1, a2, b1 = st.new_task("x", "a1"), st.new_task("x", "a2"), st.new_task("x", "b1")
        a.add_task(a1)
        a.add_task(a2)
        b.add_task(b1)
        a2.wait_for(b1)
        a1.set_to_wait(Status.DONE)
        b1.set_to_wait(Status.DONE)
        b1_id = b1.id
    assert check_change_statuses(st, db_path) == {"1": "Wait", "2": "Wait"}
    st = reopen(st)
    with st:
        st.task(b1_id).set_status(Status.DOING)  # type: ignore[union-attr]
    assert check_change_statuses(st, db_path) == {"1": "Do", "2": "Doing"}


def test_change_status_column_follows_halt_tasks_of_other_changes(file_st: State, db_path: Path) -> None:
    """The Undo side of the rule: an Undo task waits for the tasks that wait for it, wherever they are."""
    st = file_st
    with st:
        a = st.new_change("a", "...")
        b = st.new_change("b", "...")
        a1, a2, b1 = st.new_task("x", "a1"), st.new_task("x", "a2"), st.new_task("x", "b1")
        a.add_task(a1)
        a.add_task(a2)
        b.add_task(b1)
        b1.wait_for(a2)
        a1.set_to_wait(Status.UNDONE)
        a2.set_status(Status.UNDO)
        b1.set_to_wait(Status.UNDONE)
    assert check_change_statuses(st, db_path) == {"1": "Wait", "2": "Wait"}
    with st:
        b1.set_status(Status.UNDOING)
    assert check_change_statuses(st, db_path) == {"1": "Undo", "2": "Undoing"}


def test_change_status_column_follows_a_task_in_no_change(file_st: State, db_path: Path) -> None:
    """A task may wait for a task not (yet) in a change; moving that task moves the change too."""
    st = file_st
    with st:
        a = st.new_change("a", "...")
        a1, a2, loose = st.new_task("x", "a1"), st.new_task("x", "a2"), st.new_task("x", "loose")
        a.add_task(a1)
        a.add_task(a2)
        a2.wait_for(loose)
        a1.set_to_wait(Status.DONE)
        loose.set_to_wait(Status.DONE)
    assert check_change_statuses(st, db_path) == {"1": "Wait"}
    with st:
        loose.set_status(Status.DOING)
        assert a.status is Status.DO
    assert check_change_statuses(st, db_path) == {"1": "Do"}


# -- property: the column always says what chg.status says -------------------------------------

STEP_WORDS = ["do", "doing", "done", "abort", "undo", "undoing", "undone", "error", "hold", "wait", "wait-undone"]
steps_strategy = hst.lists(
    hst.one_of(
        hst.tuples(hst.just("status"), hst.integers(0, 5), hst.sampled_from(STEP_WORDS)),
        hst.tuples(hst.just("edge"), hst.integers(0, 5), hst.integers(0, 5)),
        hst.tuples(hst.just("explicit"), hst.integers(0, 1),
                   hst.sampled_from(["default", "doing", "error", "done", "wait"])),
        hst.tuples(hst.just("abort"), hst.integers(0, 1), hst.just("")),
        hst.tuples(hst.just("commit"), hst.just(0), hst.just("")),
        hst.tuples(hst.just("reopen"), hst.just(0), hst.just("")),
    ),
    min_size=1,
    max_size=25,
)


def set_word(t: Task, word: str) -> None:
    if word.startswith("wait"):
        t.set_to_wait(Status.UNDONE if word == "wait-undone" else Status.DONE)
    else:
        t.set_status(Status(word.capitalize()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy)
def test_change_status_column_property(steps: list[tuple[str, int, Any]]) -> None:
    """Random status moves, edges (also across changes), explicit statuses, commits and reopens:
    after every commit changes.status holds what chg.status says, and a reopened State agrees."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        clock = FakeClock()
        st = State.open(path, clock=clock)
        try:
            with st:
                changes = [st.new_change(f"c{i}", "...") for i in range(2)]
                tasks = [st.new_task("x", f"t{i}") for i in range(6)]
                for i, t in enumerate(tasks):
                    changes[i // 3].add_task(t)
                chg_ids = [c.id for c in changes]
                task_ids = [t.id for t in tasks]
            st.lock()
            for op, a, b in steps:
                if op == "status":
                    set_word(tasks[a], b)
                elif op == "edge" and a != b:
                    tasks[a].wait_for(tasks[b])
                elif op == "explicit":
                    changes[a].set_status(Status(b.capitalize()))
                elif op == "abort":
                    changes[a].abort()
                elif op == "commit":
                    st.unlock()
                    check_change_statuses(st, path)
                    st.lock()
                elif op == "reopen":
                    st.unlock()
                    before = check_change_statuses(st, path)
                    st.close()
                    st = State.open(path, clock=clock)
                    assert check_change_statuses(st, path) == before
                    st.lock()
                    changes = [st.change(cid) for cid in chg_ids]  # type: ignore[misc]
                    tasks = [st.task(tid) for tid in task_ids]  # type: ignore[misc]
            st.unlock()
            check_change_statuses(st, path)
        finally:
            st.close()
