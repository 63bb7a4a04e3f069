# SPDX-License-Identifier: GPL-3.0-or-later
"""Rows damaged by hand (the sqlite3 shell, foreign keys off): one bad row never stops the others.

The row that cannot be loaded is reported once, with its id and the reason,
in the log and as a state warning, and left alone; every other change runs.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine import DatabaseCorruptError, Overlord, State, Status, Task, Tomb
from engine.testing import FakeClock

WAIT = 30.0


def _noop(task: Task, tomb: Tomb) -> None:
    pass


def _shell(db: Path, *sql: str) -> None:
    """_shell edits the database as a sqlite3 shell would: foreign keys off, no engine."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for stmt in sql:
            conn.execute(stmt)
    finally:
        conn.close()


def _damaged_change(db: Path, clock: FakeClock) -> tuple[str, str]:
    """_damaged_change makes a change of two runnable tasks to damage; returns (change id, first task id)."""
    st = State.open(db, clock=clock)
    try:
        with st:
            chg = st.new_change("victim", "a change whose rows get damaged")
            first, second = st.new_task("k", "first"), st.new_task("k", "second")
            chg.add_task(first)
            chg.add_task(second)
            return chg.id, first.id
    finally:
        st.close()


DAMAGE = {
    "task in a missing change": ("UPDATE tasks SET change_id = 999 WHERE id = {tid}", "change 999"),
    "deleted change row": ("DELETE FROM changes WHERE id = {cid}", "change {cid}"),
    "task spawn_time": ("UPDATE tasks SET spawn_time = 'yesterday' WHERE id = {tid}", "spawn_time 'yesterday'"),
    "task at_time": ("UPDATE tasks SET at_time = 'yesterday' WHERE id = {tid}", "at_time 'yesterday'"),
    "task progress": ("UPDATE tasks SET progress_label = 'x', progress_done = 'lots', progress_total = 3 "
                      "WHERE id = {tid}", "progress_done 'lots'"),
    "change spawn_time": ("UPDATE changes SET spawn_time = 'yesterday' WHERE id = {cid}", "spawn_time 'yesterday'"),
    "task status": ("UPDATE tasks SET status = 'Bogus' WHERE id = {tid}", "'Bogus'"),
    "task data": ("UPDATE tasks SET data = '{{not json' WHERE id = {tid}", "not valid JSON"),
    "change data": ("UPDATE changes SET data = 'nope' WHERE id = {cid}", "not valid JSON"),
    "change explicit status": ("UPDATE changes SET explicit_status = 'Bogus' WHERE id = {cid}", "'Bogus'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_damaged_row_is_reported_once_and_the_others_run(
        damage: str, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    sql, reason = DAMAGE[damage]
    db = tmp_path / "state.db"
    cid, tid = _damaged_change(db, clock)
    _shell(db, "PRAGMA ignore_check_constraints = ON", sql.format(cid=cid, tid=tid))
    caplog.set_level(logging.ERROR, "engine")
    o = Overlord(db, clock=clock)  # the damaged row does not keep the database from opening
    o.task_runner.add_handler("k", _noop)
    try:
        for _ in range(2):  # two healthy changes, so that the damage is met by several passes
            with o.state:
                good = o.state.new_change("good", "a healthy change")
                good.add_task(o.state.new_task("k", "healthy"))
                good_id = good.id
            o.settle(WAIT)
            with o.state:
                healthy = o.state.change(good_id)
                assert healthy is not None and healthy.status is Status.DONE, damage
        with o.state:
            warnings = [str(w) for w in o.state.all_warnings()]
        reported = [r.getMessage() for r in caplog.records if " alone: " in r.getMessage()]
        assert len(reported) == 1, reported  # once, however many passes met it
        assert reason.format(cid=cid) in reported[0], reported
        assert len(warnings) == 1 and reason.format(cid=cid) in warnings[0], warnings
    finally:
        o.stop()


def test_bad_status_does_not_refuse_the_database_at_open(tmp_path: Path, clock: FakeClock) -> None:
    """quick_check's "CHECK constraint failed" is a row to report, not a corrupt file."""
    db = tmp_path / "state.db"
    _, tid = _damaged_change(db, clock)
    _shell(db, "PRAGMA ignore_check_constraints = ON", f"UPDATE tasks SET status = 'Bogus' WHERE id = {tid}")
    st = State.open(db, clock=clock)
    try:
        with pytest.raises(DatabaseCorruptError) as excinfo, st:
            t = st.task(tid)
            assert t is not None
            _ = t.status
        assert f"task {tid}" in str(excinfo.value) and "'Bogus'" in str(excinfo.value)
    finally:
        st.close()


def test_emptied_alembic_version_is_one_clear_line(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "state.db"
    _damaged_change(db, clock)
    _shell(db, "DELETE FROM alembic_version")
    before = db.read_bytes()
    with pytest.raises(DatabaseCorruptError) as excinfo:
        State.open(db, clock=clock)
    message = str(excinfo.value)
    assert str(db) in message and "alembic_version" in message and "\n" not in message, message
    assert "CREATE TABLE" not in message and "already exists" not in message
    assert db.read_bytes() == before
    # The command says the same, on one line.
    overlord = Path(sys.executable).with_name("overlord")
    out = subprocess.run([str(overlord), "changes", str(db)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "alembic_version" in out.stderr


@pytest.mark.parametrize("edit", [
    "UPDATE sequences SET last_id = 0",
    "DELETE FROM sequences",
    "UPDATE sequences SET last_id = 'x'",
])
def test_reset_sequences_never_hand_out_an_id_in_use(edit: str, tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "state.db"
    cid, tid = _damaged_change(db, clock)
    st = State.open(db, clock=clock)
    try:
        with st:
            lane_chg = st.change(cid)
            assert lane_chg is not None
            lane = st.new_lane()
            for t in lane_chg.tasks():
                t.join_lane(lane)
    finally:
        st.close()
    _shell(db, edit)
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", _noop)
    try:
        with o.state:
            chg = o.state.new_change("after", "made after the sequences were edited")
            t = o.state.new_task("k", "after")
            chg.add_task(t)
            new_lane = o.state.new_lane()
            t.join_lane(new_lane)
            ids = (int(chg.id), int(t.id), new_lane)
        assert ids[0] > int(cid) and ids[1] > int(tid) + 1 and ids[2] > lane, ids
        o.settle(WAIT)
        with o.state:
            done = o.state.change(str(ids[0]))
            assert done is not None and done.status is Status.DONE
    finally:
        o.stop()
    # Also when the sequences are edited while the engine runs (it notices the write).
    st = State.open(db, clock=clock)
    try:
        _shell(db, "UPDATE sequences SET last_id = 0")
        with st:
            again = st.new_change("again", "after a second edit")
            assert int(again.id) > ids[0]
        with st:
            assert [c.kind for c in st.changes()][-1] == "again"
    finally:
        st.close()


@pytest.mark.parametrize("edit", [
    "UPDATE changes SET ready_time = '2030-99-99' WHERE id = {cid}",
    "UPDATE tasks SET status = 'Bogus' WHERE change_id = {cid}",
])
def test_listing_changes_leaves_out_a_row_that_cannot_be_read(edit: str, tmp_path: Path, clock: FakeClock) -> None:
    """st.changes(), the viewer and debug state list the other changes; the damaged one is named, not a traceback."""
    db = tmp_path / "state.db"
    cid, _ = _damaged_change(db, clock)
    st = State.open(db, clock=clock)
    try:
        with st:
            other = st.new_change("other", "a readable change")
            other.add_task(st.new_task("k", "readable"))
            other_id = other.id
    finally:
        st.close()
    _shell(db, "PRAGMA ignore_check_constraints = ON", edit.format(cid=cid))
    st = State.open(db, clock=clock, read_only=True)
    try:
        with st:
            listed = st.changes()
            readable = []
            for chg in listed:
                with contextlib.suppress(DatabaseCorruptError):
                    readable.append((chg.id, chg.status))
        assert readable == [(other_id, Status.DO)]
    finally:
        st.close()
    overlord = Path(sys.executable).with_name("overlord")
    out = subprocess.run([str(overlord), "changes", str(db)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "a readable change" in out.stdout, out
    assert "Traceback" not in out.stderr
    out = subprocess.run([str(overlord), "debug", "state", "--db", str(db), "--changes"], capture_output=True,
                         text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 1, out.stderr


def test_an_unknown_stored_change_status_is_rewritten(tmp_path: Path, clock: FakeClock) -> None:
    """changes.status is derived: a hand-edited value does not keep the change from loading."""
    db = tmp_path / "state.db"
    cid, _ = _damaged_change(db, clock)
    _shell(db, "PRAGMA ignore_check_constraints = ON", f"UPDATE changes SET status = 'Bogus' WHERE id = {cid}")
    st = State.open(db, clock=clock)
    try:
        with st:
            chg = st.change(cid)
            assert chg is not None and chg.status is Status.DO
            chg.set("touched", True)
    finally:
        st.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT status FROM changes WHERE id = ?", (int(cid),)).fetchone() == ("Do",)
    finally:
        conn.close()


@pytest.mark.parametrize("status", ["Bogus", "", "do"])
def test_an_unknown_status_at_the_head_of_a_chain_is_reported(
        status: str, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """No runner query selects the head (its status is unknown) nor the task waiting for it: the scan does."""
    db = tmp_path / "state.db"
    st = State.open(db, clock=clock)
    try:
        with st:
            chg = st.new_change("stuck", "a chain whose head gets damaged")
            head, tail = st.new_task("k", "head"), st.new_task("k", "tail")
            tail.wait_for(head)
            chg.add_task(head)
            chg.add_task(tail)
            cid, hid = chg.id, head.id
    finally:
        st.close()
    _shell(db, "PRAGMA ignore_check_constraints = ON", f"UPDATE tasks SET status = '{status}' WHERE id = {hid}")
    caplog.set_level(logging.ERROR, "engine")
    o = Overlord(db, clock=clock)
    o.task_runner.add_handler("k", _noop)
    try:
        for _ in range(2):  # several passes, one report
            with o.state:
                good = o.state.new_change("good", "a healthy change")
                good.add_task(o.state.new_task("k", "healthy"))
                good_id = good.id
            o.settle(WAIT)
            with o.state:
                healthy = o.state.change(good_id)
                assert healthy is not None and healthy.status is Status.DONE
        with o.state:
            warnings = [str(w) for w in o.state.all_warnings()]
    finally:
        o.stop()
    reported = [r.getMessage() for r in caplog.records if " alone: " in r.getMessage()]
    assert len(reported) == 1, reported
    assert f"change {cid}" in reported[0] and f"task {hid}" in reported[0] and repr(status) in reported[0]
    assert len(warnings) == 1 and f"change {cid}" in warnings[0] and repr(status) in warnings[0], warnings
