# SPDX-License-Identifier: GPL-3.0-or-later
"""Auto-refresh from the SnapManager's ensure, under the State's clock: schedule, lanes, holds, retries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Status
from managers import NoUpdateAvailableError, SnapOperationError
from managers.snapstate.autorefresh import RETRY_DELAY
from tests.support.system import System

TUE_NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def set_config(system: System, **refresh: Any) -> None:
    with system.o.state:
        system.o.state.set("config", {"system": {"refresh": refresh}})


def auto_changes(system: System) -> list[tuple[str, Status, list[str]]]:
    with system.o.state:
        return [(c.id, c.status, c.get("snap-names")) for c in system.o.state.changes() if c.kind == "auto-refresh"]


def state(system: System, key: str) -> Any:
    with system.o.state:
        return system.o.state.get(key, None)


def revisions(system: System) -> dict[str, str]:
    with system.o.state:
        return {s.name: s.current for s in system.sm.snaps()}


def install(system: System, *names: str) -> None:
    for name in names:
        system.publish(name, "1.0")
    cid = system.run(lambda sm: sm.install(list(names)))
    assert system.status(cid) is Status.DONE, system.err(cid)


def test_auto_refresh_fires_in_the_window_with_a_lane_per_snap(system: System) -> None:
    set_config(system, timer="10:00-11:00")
    install(system, "hello", "world", "other")
    system.publish("hello", "2.0")
    system.publish("world", "2.0")
    system.o.settle(30)
    assert auto_changes(system) == []
    assert state(system, "next-refresh") == "2030-01-02T10:00:00Z"  # the next window not holding "now"
    system.clock.set(datetime(2030, 1, 2, 9, 59, tzinfo=UTC))
    system.sm.ensure()  # (not settle: it would wait the real minute the ensure asks for)
    assert auto_changes(system) == []
    system.clock.set(datetime(2030, 1, 2, 10, 0, tzinfo=UTC))
    system.o.settle(30)
    [(cid, status, names)] = auto_changes(system)
    assert (status, names) == (Status.DONE, ["hello", "world"])
    assert revisions(system) == {"hello": "2", "world": "2", "other": "1"}
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        lanes = {tuple(t.lanes()) for t in chg.tasks() if t.kind != "check-refresh"}
        assert len(lanes) == 2 and chg.tasks()[0].kind == "check-refresh"
    assert state(system, "last-refresh") == "2030-01-02T10:00:00Z"
    assert state(system, "next-refresh") == "2030-01-03T10:00:00Z"
    # A restart keeps the schedule: it is in the state.
    system.restart()
    system.o.settle(30)
    assert len(auto_changes(system)) == 1 and state(system, "next-refresh") == "2030-01-03T10:00:00Z"


def test_one_broken_snap_is_undone_and_the_others_refresh(system: System) -> None:
    set_config(system, timer="10:00-11:00")
    install(system, "hello", "world")
    system.publish("hello", "2.0")
    system.publish("world", "2.0")
    broken = system.base / "store/snaps/world/2.snap"
    broken.write_bytes(broken.read_bytes()[:-10] + b"0123456789")  # not the file its digest names
    system.clock.set(datetime(2030, 1, 2, 10, 30, tzinfo=UTC))
    system.o.settle(30)
    [(cid, status, names)] = auto_changes(system)
    assert (status, names) == (Status.ERROR, ["hello", "world"])
    assert revisions(system) == {"hello": "2", "world": "1"}
    assert "world" in system.err(cid)
    with system.o.state:
        assert system.sm.info("world").active
    # the check itself succeeded: the next refresh is tomorrow's window
    assert state(system, "next-refresh") == "2030-01-03T10:00:00Z"


def test_a_failed_check_is_retried_after_the_delay(system: System) -> None:
    set_config(system, timer="10:00-12:00")
    install(system, "hello")
    system.publish("hello", "2.0")
    store = system.base / "store"
    store.rename(system.base / "gone")
    start = datetime(2030, 1, 2, 10, 0, tzinfo=UTC)
    system.clock.set(start)
    system.o.settle(30)
    [(_, status, _)] = auto_changes(system)
    assert status is Status.ERROR
    system.clock.set(start + RETRY_DELAY - timedelta(seconds=1))
    system.sm.ensure()
    assert len(auto_changes(system)) == 1
    (system.base / "gone").rename(store)
    system.clock.set(start + RETRY_DELAY)
    system.o.settle(30)
    changes = auto_changes(system)
    assert [s for _, s, _ in changes] == [Status.ERROR, Status.DONE] and revisions(system) == {"hello": "2"}


def test_nothing_while_an_auto_refresh_is_unready(system: System) -> None:
    set_config(system, timer="10:00-12:00")
    install(system, "hello")
    system.clock.set(datetime(2030, 1, 2, 10, 0, tzinfo=UTC))
    system.sm.ensure()  # the manager's ensure alone: the change is made, not run
    assert len(auto_changes(system)) == 1
    with system.o.state:
        system.o.state.set("next-refresh", "2030-01-02T10:00:00Z")  # due again
    system.clock.set(datetime(2030, 1, 2, 11, 0, tzinfo=UTC))
    system.sm.ensure()
    assert len(auto_changes(system)) == 1
    system.o.settle(30)
    assert [s for _, s, _ in auto_changes(system)] == [Status.DONE]


def test_holds_per_snap_and_system_wide(system: System) -> None:
    set_config(system, timer="10:00-12:00")
    install(system, "hello", "world")
    system.publish("hello", "2.0")
    system.publish("world", "2.0")
    ar = system.sm.auto_refresh
    with system.o.state:
        ar.hold(system.o.state, ["hello"], "forever")
        ar.hold(system.o.state, ["world"], "2030-01-03T11:00:00Z")
        with pytest.raises(SnapOperationError, match="longer than 90 days"):
            ar.hold(system.o.state, [], "forever")
        with pytest.raises(SnapOperationError, match="longer than 90 days"):
            ar.hold(system.o.state, [], "2030-04-05T00:00:00Z")
        with pytest.raises(SnapOperationError, match="that time has passed"):
            ar.hold(system.o.state, ["hello"], "2029-01-01T00:00:00Z")
    system.clock.set(datetime(2030, 1, 2, 10, 0, tzinfo=UTC))
    system.o.settle(30)
    assert [(s, n) for _, s, n in auto_changes(system)] == [(Status.DONE, [])]  # both held
    assert revisions(system) == {"hello": "1", "world": "1"}
    # world's hold ends before the next window: then it refreshes, hello stays held
    system.clock.set(datetime(2030, 1, 3, 11, 30, tzinfo=UTC))
    system.o.settle(30)
    assert auto_changes(system)[-1][2] == ["world"] and revisions(system) == {"hello": "1", "world": "2"}
    # a refresh of every snap leaves held snaps alone; a refresh of a held snap by name refreshes it
    with system.o.state, pytest.raises(NoUpdateAvailableError):
        system.sm.refresh()
    cid = system.run(lambda sm: sm.refresh("hello"))
    assert system.status(cid) is Status.DONE and revisions(system)["hello"] == "2"

    # the system-wide hold (refresh --hold, or the setting refresh.hold) stops every auto-refresh
    system.publish("world", "3.0")
    with system.o.state:
        ar.hold(system.o.state, [], "2030-01-10T00:00:00Z")
    system.clock.set(datetime(2030, 1, 4, 11, 0, tzinfo=UTC))
    system.o.settle(30)
    assert len(auto_changes(system)) == 2
    with system.o.state:
        ar.unhold(system.o.state, [])
    set_config(system, timer="10:00-12:00", hold="2030-01-10T00:00:00Z")
    system.o.settle(30)
    assert len(auto_changes(system)) == 2
    set_config(system, timer="10:00-12:00")
    system.o.settle(30)
    assert len(auto_changes(system)) == 3 and revisions(system)["world"] == "3"


def test_a_month_of_the_default_timer(system: System) -> None:
    # (Seed 8 draws, on day 28, a point 18 minutes after the previous slot's: within RETRY_DELAY of it.)
    system.sm.auto_refresh.rand = random.Random(8)
    install(system, "hello")
    start = system.clock.now
    seen = []
    while True:
        nxt = datetime.fromisoformat(state(system, "next-refresh").replace("Z", "+00:00"))
        if nxt > start + timedelta(days=30):
            break
        system.clock.set(nxt)
        # The clock skips what an ensure asks to wait for: a slot's random point may fall less than
        # RETRY_DELAY after the last attempt (11:42 in one slot, 12:01 in the next), and then the
        # auto-refresh waits until 20 minutes after that attempt, as snapd's does.
        system.o.settle(30, advance=system.clock.advance)
        seen.append(nxt)
    assert len(auto_changes(system)) == len(seen)
    per_slot = {(t.date(), t.hour // 6) for t in seen}
    assert len(per_slot) == len(seen)  # one in each 6-hour slot, never two
    assert 4 * 30 - 3 <= len(seen) <= 4 * 30  # every slot of the month (the first day starts at noon)


def test_a_bad_timer_warns_and_the_default_applies(system: System, tmp_path: Path) -> None:
    set_config(system, timer="every day")
    system.o.settle(30)
    with system.o.state:
        assert any("cannot use refresh.timer 'every day'" in w.message for w in system.o.state.warnings())
    assert state(system, "refresh-timer") == "00:00~24:00/4"
