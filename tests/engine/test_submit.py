# SPDX-License-Identifier: GPL-3.0-or-later
"""What a submit writes: a new task that waits is inserted with its blockers count, counted from the cache
(engine.changeset), which must be the count the database gives and what the runner starts tasks by; a task
made as new_task made it is known to be stored so; its spawn time's text (engine._time.to_text)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from engine import Overlord, State, Status, Task, Tomb
from engine._time import from_text, to_text
from engine.session import session_of
from tests.support.helpers import noting_summaries, task_of

WAIT = 30.0  # generous bound for settle; never a timing assertion

#: Every task's stored blockers count beside the count of what it waits for that is not Done.
_COUNTS = """SELECT t.id, t.blockers, (SELECT count(*) FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id
                                     WHERE d.task_id = t.id AND w.status <> 'Done') FROM tasks t ORDER BY t.id"""


def _noop(task: Task, tomb: Tomb) -> None:
    pass


@pytest.fixture
def overlord(tmp_path: Path) -> Iterator[Overlord]:
    o = Overlord(tmp_path / "state.db")
    o.task_runner.add_handler("k", _noop)
    yield o
    o.stop()


def _counts(db: Path) -> dict[int, tuple[int, int]]:
    con = sqlite3.connect(db)
    try:
        return {tid: (stored, real) for tid, stored, real in con.execute(_COUNTS)}
    finally:
        con.close()


def test_new_tasks_that_wait_are_stored_with_the_count_of_what_they_wait_for(overlord: Overlord,
                                                                              tmp_path: Path) -> None:
    st = overlord.state
    with st:
        first = st.new_change("c", "runs first")
        done = st.new_task("k", "done before")
        first.add_task(done)
        held = st.new_task("k", "held")  # Done, then Hold by hand
        first.add_task(held)
    overlord.settle(WAIT)
    with st:
        held.set_status(Status.HOLD)
        chg = st.new_change("c", "waits for old and new tasks")
        chain = [st.new_task("k", f"t{i}") for i in range(4)]
        for later, earlier in zip(chain[1:], chain, strict=False):
            later.wait_for(earlier)
        chain[0].wait_for(done)  # Done: not counted
        fan_in = st.new_task("k", "fan-in")
        for t in (*chain, done, held):
            fan_in.wait_for(t)
        for t in (*chain, fan_in):
            chg.add_task(t)
        ids = [int(t.id) for t in (*chain, fan_in)]
    counts = _counts(tmp_path / "state.db")
    assert [counts[tid][0] for tid in ids] == [0, 1, 1, 1, 5]
    assert all(stored == real for stored, real in counts.values()), counts
    overlord.settle(WAIT)
    with st:
        assert [task_of(st, str(tid)).status for tid in ids] == [Status.DONE] * 4 + [Status.DO]
    counts = _counts(tmp_path / "state.db")
    assert all(stored == real for stored, real in counts.values()), counts
    assert counts[ids[-1]] == (1, 1)  # the fan-in waits for the held task only


def test_a_chain_submitted_before_the_loop_runs_in_order(overlord: Overlord) -> None:
    order: list[str] = []
    overlord.task_runner.add_handler("step", noting_summaries(order))
    st = overlord.state
    with st:
        chg = st.new_change("c", "a chain")
        prev = None
        for i in range(50):
            t = st.new_task("step", f"{i}")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
    overlord.settle(WAIT)
    with st:
        assert chg.status is Status.DONE
    assert order == [str(i) for i in range(50)]


def test_a_small_submit_keeps_no_row_yet_rewrites_its_tasks_in_part_and_right(tmp_path: Path) -> None:
    """A task inserted as new_task made it is known to be stored so: its claim rewrites its status alone; one
    inserted in no change gets its change written when it is added to one."""
    db = tmp_path / "state.db"
    st = State.open(db)
    try:
        with st:
            orphan = st.new_task("k", "inserted in no change")
        with st:
            chg = st.new_change("c", "small")
            t = st.new_task("k", "in its change")
            chg.add_task(t)
            chg.add_task(orphan)
            cid, tid, oid = int(chg.id), int(t.id), int(orphan.id)
        updates: list[str] = []
        session_of(st).store.raw.set_trace_callback(
            lambda sql: updates.append(sql.split(" WHERE")[0])
            if sql.startswith("UPDATE tasks SET") and "blockers" not in sql else None)
        with st:
            t.set_status(Status.DOING)
        with st:
            orphan.set_status(Status.DOING)
        assert updates == ["UPDATE tasks SET status='Doing'"] * 2
    finally:
        st.close()
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, change_id, status FROM tasks ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == [(oid, cid, "Doing"), (tid, cid, "Doing")]


@settings(max_examples=200, deadline=None)
@given(times=hs.lists(hs.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                                   timezones=hs.just(UTC)), min_size=1, max_size=6),
       repeat=hs.integers(0, 3))
def test_a_time_is_stored_as_its_own_text_whatever_was_formatted_before(times: list[datetime], repeat: int) -> None:
    """to_text keeps the text of the last second it formatted: a time of another second (or of the same second
    with other microseconds, or the same second of another minute, day, year) gets its own."""
    for when in [*times, *times[:repeat]]:
        shifted = [when, when.replace(microsecond=(when.microsecond + 1) % 1_000_000)]
        for w in shifted:
            want = (f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:{w.second:02d}."
                    f"{w.microsecond:06d}Z")
            assert to_text(w) == want
            assert from_text(want) == w
