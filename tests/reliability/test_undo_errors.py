# SPDX-License-Identifier: GPL-3.0-or-later
"""Undo that fails (issue 4 item 5).

An undo handler that raises leaves its task in Error; the rest of the change
still undoes what it can (the tasks it waits for are undone once it is
ready, as in snapd's sequence "t31:do-error t21:undo-error"); and chg.err()
reports the original error and the undo error, one `- <summary> (<error>)`
line each, in task order.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from engine import Overlord, State, Status, Task
from engine.testing import FakeClock
from engine.tomb import Tomb

WAIT = 30.0
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|ERROR) .+$")


class Journal:
    """Journal records which handlers ran, as their external effects would."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def add(self, entry: str) -> None:
        with self._lock:
            self.calls.append(entry)


def make_overlord(path: Path, clock: FakeClock, journal: Journal) -> Overlord:
    o = Overlord(path, clock=clock)

    def do(task: Task, tomb: Tomb) -> None:
        with task.state:
            summary = task.summary
            fail = task.get("do-error", None)
        journal.add(f"{summary}:do")
        if fail:
            raise RuntimeError(fail)

    def undo(task: Task, tomb: Tomb) -> None:
        with task.state:
            summary = task.summary
            fail = task.get("undo-error", None)
        journal.add(f"{summary}:undo")
        if fail:
            raise OSError(fail)

    o.task_runner.add_handler("step", do, undo)
    o.task_runner.add_handler("notify", do)  # nothing to undo
    return o


def add(st: State, chg_tasks: dict[str, Task], chg: object, name: str, kind: str = "step",
        waits: tuple[str, ...] = (), **data: str) -> Task:
    t = st.new_task(kind, name)
    for key, value in data.items():
        t.set(key.replace("_", "-"), value)
    for w in waits:
        t.wait_for(chg_tasks[w])
    chg.add_task(t)  # type: ignore[attr-defined]
    chg_tasks[name] = t
    return t


def statuses(st: State, cid: str) -> dict[str, Status]:
    chg = st.change(cid)
    assert chg is not None
    return {t.summary: t.status for t in chg.tasks()}


def test_undo_error_leaves_task_in_error_and_the_rest_undoes(db_path: Path, clock: FakeClock) -> None:
    journal = Journal()
    o = make_overlord(db_path, clock, journal)
    st = o.state
    try:
        with st:
            chg = st.new_change("install", "install with a bad undo")
            ts: dict[str, Task] = {}
            add(st, ts, chg, "fetch")
            add(st, ts, chg, "unpack", waits=("fetch",), undo_error="cannot remove /srv/unpacked: device busy")
            add(st, ts, chg, "notify", kind="notify", waits=("unpack",))
            add(st, ts, chg, "link", waits=("notify",))
            add(st, ts, chg, "side", waits=("fetch",))
            add(st, ts, chg, "start", waits=("link", "side"), do_error="service failed to start")
            cid = chg.id
        o.settle(WAIT)
        with st:
            chg = st.change(cid)
            assert chg is not None
            got = statuses(st, cid)
            assert got == {
                "fetch": Status.UNDONE,   # undone although unpack's undo failed
                "unpack": Status.ERROR,   # its undo raised
                "notify": Status.DONE,    # no undo handler: stays done
                "link": Status.UNDONE,
                "side": Status.UNDONE,
                "start": Status.ERROR,    # the original error
            }, got
            assert chg.status is Status.ERROR
            assert chg.is_ready()
            err = chg.err()
            assert err is not None
            assert str(err) == (
                "cannot perform the following tasks:\n"
                "- unpack (cannot remove /srv/unpacked: device busy)\n"
                "- start (service failed to start)"
            )
            unpack_log = next(t for t in chg.tasks() if t.summary == "unpack").log()
            assert all(LOG_LINE.match(line) for line in unpack_log), unpack_log
            assert unpack_log[-1].endswith(" ERROR cannot remove /srv/unpacked: device busy")
    finally:
        o.stop()
    # Order: link and side undo before unpack's undo, fetch's undo after it failed.
    calls = journal.calls
    assert calls.index("unpack:undo") > calls.index("link:undo")
    assert calls.index("fetch:undo") > calls.index("unpack:undo")
    assert calls.index("fetch:undo") > calls.index("side:undo")
    assert "notify:undo" not in calls and "start:undo" not in calls

    # It all survives a reopen, err() included.
    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            assert statuses(st2, cid)["unpack"] is Status.ERROR
            chg2 = st2.change(cid)
            assert chg2 is not None
            assert str(chg2.err()) == str(err)
    finally:
        st2.close()


def test_undo_error_in_one_lane_leaves_other_lane_done(db_path: Path, clock: FakeClock) -> None:
    journal = Journal()
    o = make_overlord(db_path, clock, journal)
    st = o.state
    try:
        with st:
            chg = st.new_change("install", "two lanes")
            ts: dict[str, Task] = {}
            lane_a, lane_b = st.new_lane(), st.new_lane()
            for t in (add(st, ts, chg, "a1"),
                      add(st, ts, chg, "a2", waits=("a1",), undo_error="undo a2 failed"),
                      add(st, ts, chg, "a3", waits=("a2",), do_error="a3 failed")):
                t.join_lane(lane_a)
            for t in (add(st, ts, chg, "b1"), add(st, ts, chg, "b2", waits=("b1",))):
                t.join_lane(lane_b)
            cid = chg.id
        o.settle(WAIT)
        with st:
            assert statuses(st, cid) == {
                "a1": Status.UNDONE, "a2": Status.ERROR, "a3": Status.ERROR,
                "b1": Status.DONE, "b2": Status.DONE,
            }
            chg = st.change(cid)
            assert chg is not None and chg.status is Status.ERROR
            assert str(chg.err()) == (
                "cannot perform the following tasks:\n"
                "- a2 (undo a2 failed)\n"
                "- a3 (a3 failed)"
            )
    finally:
        o.stop()


def test_undo_error_after_abort_is_the_only_error(db_path: Path, clock: FakeClock) -> None:
    """An aborted change has no original error: err() shows the undo error alone."""
    journal = Journal()
    o = make_overlord(db_path, clock, journal)
    st = o.state
    try:
        with st:
            chg = st.new_change("install", "aborted by the user")
            ts: dict[str, Task] = {}
            add(st, ts, chg, "first")
            add(st, ts, chg, "second", waits=("first",), undo_error="cannot undo second")
            hold = add(st, ts, chg, "third", waits=("second",))
            hold.set_status(Status.HOLD)  # so the change stops after second
            cid = chg.id
        o.settle(WAIT)
        with st:
            assert statuses(st, cid) == {"first": Status.DONE, "second": Status.DONE, "third": Status.HOLD}
            chg = st.change(cid)
            assert chg is not None
            chg.abort()
        o.settle(WAIT)
        with st:
            assert statuses(st, cid) == {"first": Status.UNDONE, "second": Status.ERROR, "third": Status.HOLD}
            assert chg.status is Status.ERROR
            assert str(chg.err()) == "cannot perform the following tasks:\n- second (cannot undo second)"
    finally:
        o.stop()


def test_several_undo_errors_are_all_reported(db_path: Path, clock: FakeClock) -> None:
    journal = Journal()
    o = make_overlord(db_path, clock, journal)
    st = o.state
    try:
        with st:
            chg = st.new_change("install", "every undo fails")
            ts: dict[str, Task] = {}
            add(st, ts, chg, "u1", undo_error="undo 1 failed")
            add(st, ts, chg, "u2", waits=("u1",), undo_error="undo 2 failed")
            add(st, ts, chg, "u3", waits=("u2",), do_error="do 3 failed")
            cid = chg.id
        o.settle(WAIT)
        with st:
            assert statuses(st, cid) == {"u1": Status.ERROR, "u2": Status.ERROR, "u3": Status.ERROR}
            chg = st.change(cid)
            assert chg is not None
            assert str(chg.err()) == (
                "cannot perform the following tasks:\n"
                "- u1 (undo 1 failed)\n"
                "- u2 (undo 2 failed)\n"
                "- u3 (do 3 failed)"
            )
    finally:
        o.stop()
    assert journal.calls == ["u1:do", "u2:do", "u3:do", "u2:undo", "u1:undo"]
