# SPDX-License-Identifier: GPL-3.0-or-later
"""Schedules: a change made from a template when a cron line or a snapd timer is due, by the State's clock.

On both backends: the change is made at its slot and not before, with the
template's data and tasks; pause, resume and run now; slots missed while
nothing ran are skipped or run once; a slot runs at most once over several
hosts (PostgreSQL, three overlords passing at once).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import NotFoundError, Overlord, Task
from engine.testing import FakeClock
from engine.tomb import Tomb

TIMEOUT = 30.0
TEMPLATE = {"kind": "backup", "summary": "Nightly backup", "data": {"target": "s3"},
            "tasks": [{"kind": "dump", "summary": "Dump", "data": {"db": "main"}},
                      {"kind": "upload", "summary": "Upload"}]}


@pytest.fixture
def where(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "postgresql":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": tmp_path / "state.db"}


def _open(where: dict[str, Any], clock: FakeClock) -> Overlord:
    o = Overlord(**where, clock=clock)
    for kind in ("dump", "upload"):
        o.task_runner.add_handler(kind, _noop)
    return o


def _noop(task: Task, tomb: Tomb) -> None:
    pass


@pytest.fixture
def ov(where: dict[str, Any], clock: FakeClock) -> Iterator[Overlord]:
    o = _open(where, clock)
    yield o
    o.stop()
    o.state.close()


def made(o: Overlord) -> list[tuple[str, str | None, str]]:
    """made lists the changes schedules made: (schedule, slot, status)."""
    with o.state:
        return [(c.get("schedule"), c.get("schedule-slot", None), c.status.value) for c in o.state.changes()
                if c.has("schedule")]


def test_a_cron_schedule_makes_its_change_at_each_slot_and_not_before(ov: Overlord, clock: FakeClock) -> None:
    with ov.state:
        s = ov.state.add_schedule("backup", "*/15 * * * *", TEMPLATE)
    assert s.next_time == datetime(2030, 1, 1, 12, 15, tzinfo=UTC) and not s.paused
    ov.settle(TIMEOUT)
    clock.advance(minutes=14, seconds=59)
    ov.state_engine.ensure()  # one pass: the slot is a second away (settle would wait for it)
    ov.task_runner.wait()
    assert made(ov) == []
    clock.advance(seconds=1)
    ov.settle(TIMEOUT)
    assert made(ov) == [("backup", "2030-01-01T12:15:00.000000Z", "Done")]
    with ov.state:
        chg = ov.state.changes()[-1]
        assert (chg.kind, chg.summary, chg.get("target")) == ("backup", "Nightly backup", "s3")
        dump, upload = chg.tasks()
        assert (dump.kind, dump.get("db"), upload.wait_tasks()) == ("dump", "main", [dump])
        s2 = ov.state.schedule("backup")
        assert s2 is not None
        assert s2.next_time == datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
        assert s2.last_time == datetime(2030, 1, 1, 12, 15, tzinfo=UTC)
    clock.advance(minutes=15)
    ov.settle(TIMEOUT)
    assert [m[1] for m in made(ov)] == ["2030-01-01T12:15:00.000000Z", "2030-01-01T12:30:00.000000Z"]


def test_a_snapd_timer_schedule(ov: Overlord, clock: FakeClock) -> None:
    with ov.state:
        s = ov.state.add_schedule("weekly", "mon,10:00-12:00", TEMPLATE)
    assert s.next_time == datetime(2030, 1, 7, 10, 0, tzinfo=UTC)  # 2030-01-01 is a Tuesday
    clock.set(datetime(2030, 1, 7, 10, 0, tzinfo=UTC))
    ov.settle(TIMEOUT)
    assert made(ov) == [("weekly", "2030-01-07T10:00:00.000000Z", "Done")]
    with ov.state:
        assert [x.name for x in ov.state.schedules()] == ["weekly"]
        assert ov.state.schedules()[0].next_time == datetime(2030, 1, 14, 10, 0, tzinfo=UTC)


def test_pause_resume_and_run_now(ov: Overlord, clock: FakeClock) -> None:
    with ov.state:
        ov.state.add_schedule("backup", "0 * * * *", TEMPLATE)
        paused = ov.state.pause_schedule("backup")
    assert paused.paused and paused.next_time is None
    clock.advance(hours=3)
    ov.settle(TIMEOUT)
    assert made(ov) == []
    with ov.state:
        chg = ov.state.run_schedule("backup")  # run now, paused or not
        assert chg.get("schedule") == "backup"
    ov.settle(TIMEOUT)
    assert made(ov) == [("backup", None, "Done")]
    with ov.state:
        resumed = ov.state.resume_schedule("backup")
    assert resumed.next_time == datetime(2030, 1, 1, 16, 0, tzinfo=UTC)  # the slots of the pause are not run
    clock.advance(hours=1)
    ov.settle(TIMEOUT)
    assert [m[1] for m in made(ov)] == [None, "2030-01-01T16:00:00.000000Z"]
    with ov.state:
        ov.state.remove_schedule("backup")
        assert ov.state.schedules() == []
        with pytest.raises(NotFoundError, match="cannot find schedule 'backup'"):
            ov.state.pause_schedule("backup")


@pytest.mark.parametrize(("missed", "expected"), [("skip", []), ("once", ["2030-01-04T03:00:00.000000Z"])])
def test_missed_slots_are_skipped_or_run_once(where: dict[str, Any], clock: FakeClock, missed: str,
                                              expected: list[str]) -> None:
    o = _open(where, clock)
    try:
        with o.state:
            o.state.add_schedule("nightly", "0 3 * * *", TEMPLATE, missed=missed)  # type: ignore[arg-type]
    finally:
        o.stop()
        o.state.close()
    clock.set(datetime(2030, 1, 4, 9, 0, tzinfo=UTC))  # down for three nights
    o = _open(where, clock)
    try:
        o.settle(TIMEOUT)
        assert [m[1] for m in made(o)] == expected
        with o.state:
            s = o.state.schedule("nightly")
            assert s is not None and s.next_time == datetime(2030, 1, 5, 3, 0, tzinfo=UTC)
        clock.set(datetime(2030, 1, 5, 3, 0, tzinfo=UTC))  # back to normal: the next slot runs
        o.settle(TIMEOUT)
        assert [m[1] for m in made(o)] == [*expected, "2030-01-05T03:00:00.000000Z"]
    finally:
        o.stop()
        o.state.close()


def test_a_slot_a_little_late_is_run(ov: Overlord, clock: FakeClock) -> None:
    with ov.state:
        ov.state.add_schedule("backup", "0 3 * * *", TEMPLATE)
    clock.set(datetime(2030, 1, 2, 7, 0, tzinfo=UTC))  # late, but before the next slot: not missed
    ov.settle(TIMEOUT)
    assert [m[1] for m in made(ov)] == ["2030-01-02T03:00:00.000000Z"]


@pytest.mark.parametrize(("spec", "template", "message"), [
    ("61 * * * *", TEMPLATE, "cannot add schedule 'x': cannot parse cron line '61 \\* \\* \\* \\*': minute 61"),
    ("* * * *", TEMPLATE, "cannot parse the schedule"),
    ("funday", TEMPLATE, "not a valid weekday"),
    ("0 0 31 2 *", TEMPLATE, "cannot find a time this cron line allows"),
    ("00:00~24:00/1441", TEMPLATE, "a window of 1440 minutes has at most 1440 slots"),
    ("10:00-10:30/31", TEMPLATE, "a window of 30 minutes has at most 30 slots"),
    ("10:00\n-11:00", TEMPLATE, "'10:00\\\\n' is not a valid time"),  # (re's $ took a final line break)
    ("0 3 * * *", {"kind": "k", "summary": "s", "tasks": []}, "it needs a list of tasks"),
    ("0 3 * * *", {"kind": "k", "summary": "s", "tasks": [{"kind": 1, "summary": "s"}]}, "kind of task 0"),
    ("0 3 * * *", {**TEMPLATE, "extra": 1}, "unknown keys \\['extra'\\]"),
])
def test_bad_schedules_are_refused_in_one_line(ov: Overlord, spec: str, template: Any, message: str) -> None:
    with ov.state:
        with pytest.raises((ValueError, TypeError), match=message):
            ov.state.add_schedule("x", spec, template)
        assert ov.state.schedules() == []


def _host_pass(o: Overlord, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    """_host_pass is one host's schedule pass, started with the others' at the barrier."""
    try:
        barrier.wait(TIMEOUT)
        o.schedules.ensure()
    except BaseException as e:
        errors.append(e)


def test_a_slot_runs_once_over_three_hosts_passing_at_once(pg_url: str, clock: FakeClock) -> None:
    hosts = [_open({"url": pg_url}, clock) for _ in range(3)]
    try:
        with hosts[0].state:
            hosts[0].state.add_schedule("every-minute", "* * * * *", TEMPLATE)
        for o in hosts:
            o.state_engine.start_up()
        slots = 12
        for _ in range(slots):
            clock.advance(minutes=1)
            barrier = threading.Barrier(len(hosts))
            errors: list[BaseException] = []
            threads = [threading.Thread(target=_host_pass, args=(o, barrier, errors)) for o in hosts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            assert errors == []
        per_slot = Counter(slot for _, slot, _ in made(hosts[0]))
        assert len(per_slot) == slots and set(per_slot.values()) == {1}, per_slot
    finally:
        for o in hosts:
            o.stop()
            o.state.close()


def test_the_unique_key_of_a_slot_keeps_a_host_with_a_stale_view_from_running_it_again(
        pg_url: str, clock: FakeClock) -> None:
    """Two hosts that both saw the slot due before either ran it (no advisory lock could help): one change."""
    a, b = _open({"url": pg_url}, clock), _open({"url": pg_url}, clock)
    try:
        with a.state:
            a.state.add_schedule("s", "0 * * * *", TEMPLATE)
        clock.advance(hours=1)
        with a.state, b.state:
            sa, sb = a.state.schedule("s"), b.state.schedule("s")
            assert sa is not None and sb is not None
        from engine.schedules import ScheduleManager

        for o, s in ((a, sa), (b, sb)):
            with o.state:
                ScheduleManager(o.state)._claim_slot(o.state._uow, s, datetime(2030, 1, 1, 13, tzinfo=UTC),
                                                      clock())
        assert [m[1] for m in made(a)] == ["2030-01-01T13:00:00.000000Z"]
    finally:
        for o in (a, b):
            o.stop()
            o.state.close()


def test_schedules_are_listed_with_their_next_time(ov: Overlord) -> None:
    with ov.state:
        ov.state.add_schedule("b", "0 3 * * *", TEMPLATE)
        ov.state.add_schedule("a", "mon,10:00", TEMPLATE, missed="once")
        got = [s.to_json() for s in ov.state.schedules()]
    assert [(s["name"], s["next-time"], s["missed"]) for s in got] == [
        ("a", "2030-01-07T10:00:00.000000Z", "once"), ("b", "2030-01-02T03:00:00.000000Z", "skip")]


def test_the_records_of_old_runs_are_deleted_after_a_week(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "state.db"
    o = _open({"path": db}, clock)
    try:
        with o.state:
            o.state.add_schedule("daily", "0 3 * * *", TEMPLATE)
        for _ in range(9):
            clock.advance(days=1)
            o.settle(TIMEOUT)
        with sqlite3.connect(db) as conn:
            slots = [r[0] for r in conn.execute("SELECT slot FROM schedule_runs ORDER BY slot")]
        assert len(made(o)) == 9
        assert slots[0] >= "2030-01-03" and len(slots) == 8, slots  # run more than a week ago: gone
    finally:
        o.stop()
        o.state.close()
