# SPDX-License-Identifier: GPL-3.0-or-later
"""Notices: aggregation, repeat-after, expiry, change-update and warning notices, waiting (snapd's notices_test.go)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Notice, Overlord, State, Status, Task, Tomb
from engine.testing import FakeClock, settle

WAIT = 30.0  # a bound on waits for events: a guard against hangs, never a timing


@pytest.fixture
def fclock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nst(tmp_path: Path, fclock: FakeClock) -> Any:
    st = State.open(tmp_path / "state.db", clock=fclock)
    yield st
    st.close()


def summary(ns: list[Notice]) -> list[tuple[str, str, int]]:
    return [(n.type, n.key, n.occurrences) for n in ns]


def test_add_notice_aggregates_by_type_and_key(nst: State, fclock: FakeClock, tmp_path: Path) -> None:
    start = fclock()
    with nst:
        a1 = nst.add_notice("snap-refresh", "hello", data={"revision": "7"})
        fclock.advance(minutes=5)
        a2 = nst.add_notice("snap-refresh", "hello", data={"revision": "8"})
        b = nst.add_notice("snap-refresh", "world")
        c = nst.add_notice("backup-done", "hello")
    assert a1 == a2 and len({a1, b, c}) == 3
    with nst:
        ns = nst.notices()
    assert summary(ns) == [("snap-refresh", "hello", 2), ("snap-refresh", "world", 1), ("backup-done", "hello", 1)]
    n = ns[0]
    assert (n.id, n.first_occurred, n.last_data) == (a1, start, {"revision": "8"})
    assert n.last_occurred == n.last_repeated == start + timedelta(minutes=5)
    assert n.expire_after == timedelta(days=7) and n.repeat_after == timedelta(0)
    assert n.to_json()["last-data"] == {"revision": "8"} and n.to_json()["expire-after"] == "168h0m0s"
    # Filters: types and keys (any of each), after (what was repeated since).
    with nst:
        assert summary(nst.notices(types=["backup-done"])) == [("backup-done", "hello", 1)]
        assert [x.key for x in nst.notices(keys=["hello"])] == ["hello", "hello"]
        assert summary(nst.notices(after=ns[1].last_repeated)) == [("backup-done", "hello", 1)]
    # Rows of their own, for sqlite3.
    con = sqlite3.connect(tmp_path / "state.db")
    try:
        rows = con.execute("SELECT id, type, key, occurrences, last_data FROM notices ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == [(int(a1), "snap-refresh", "hello", 2, '{"revision": "8"}'),
                    (int(b), "snap-refresh", "world", 1, "{}"), (int(c), "backup-done", "hello", 1, "{}")]


def test_notices_survive_reopening_and_ids_go_on(tmp_path: Path, fclock: FakeClock) -> None:
    st = State.open(tmp_path / "state.db", clock=fclock)
    with st:
        first = st.add_notice("custom", "a")
    st.close()
    st = State.open(tmp_path / "state.db", clock=fclock)
    try:
        with st:
            assert st.add_notice("custom", "a") == first
            assert int(st.add_notice("custom", "b")) > int(first)
            assert summary(st.notices()) == [("custom", "a", 2), ("custom", "b", 1)]
    finally:
        st.close()


def test_repeat_after_keeps_occurrences_from_repeating(nst: State, fclock: FakeClock) -> None:
    with nst:
        nst.add_notice("custom", "k", repeat_after=timedelta(hours=1))
        (n,) = nst.notices()
    seen = n.last_repeated
    fclock.advance(minutes=30)
    with nst:
        nst.add_notice("custom", "k", data={"n": "2"}, repeat_after=timedelta(hours=1))
        # Counted, but not repeated: a client that saw it sees nothing new.
        (n,) = nst.notices()
        assert (n.occurrences, n.last_repeated, n.last_occurred) == (2, seen, fclock())
        assert nst.notices(after=seen) == []
    fclock.advance(minutes=31)  # more than an hour after the last repeat
    with nst:
        nst.add_notice("custom", "k", repeat_after=timedelta(hours=1))
        (n,) = nst.notices(after=seen)
        assert (n.occurrences, n.last_repeated) == (3, fclock())
        # Without repeat_after, every occurrence repeats.
        nst.add_notice("custom", "k")
        assert nst.notices(after=n.last_repeated)[0].occurrences == 4


def test_notices_expire_and_prune_deletes_them(nst: State, fclock: FakeClock, tmp_path: Path) -> None:
    with nst:
        nst.add_notice("custom", "short", expire_after=timedelta(hours=1))
        nst.add_notice("custom", "long")
    fclock.advance(hours=2)
    with nst:
        assert [n.key for n in nst.notices()] == ["long"]
        nst.prune(fclock(), timedelta(days=1), timedelta(days=3), 500)
    con = sqlite3.connect(tmp_path / "state.db")
    try:
        assert con.execute("SELECT key FROM notices").fetchall() == [("long",)]
    finally:
        con.close()
    fclock.advance(days=8)  # the default: 7 days after the last occurrence
    with nst:
        assert nst.notices() == []
        nst.prune(fclock(), timedelta(days=1), timedelta(days=3), 500)
        # A notice added after its expiry starts again from one occurrence.
        nst.add_notice("custom", "long")
        assert summary(nst.notices()) == [("custom", "long", 1)]


def test_bad_notices_are_refused_with_one_line(nst: State) -> None:
    with nst:
        for kw, match in [
            (dict(type="Bad Type", key="k"), "cannot add notice of type 'Bad Type'"),
            (dict(type="custom", key=""), "cannot add custom notice with key ''"),
            (dict(type="custom", key="x" * 257), "longer than 256 bytes"),
            (dict(type="custom", key="k", expire_after=0), "expire_after must be positive"),
        ]:
            with pytest.raises(ValueError, match=match) as e:
                nst.add_notice(**kw)  # type: ignore[arg-type]
            assert "\n" not in str(e.value)
        with pytest.raises(TypeError, match="data must map str to str"):
            nst.add_notice("custom", "k", data={"n": 1})  # type: ignore[dict-item]
        assert nst.notices() == []


def test_change_update_notice_at_spawn_and_each_status_transition(tmp_path: Path, fclock: FakeClock) -> None:
    o = Overlord(tmp_path / "state.db", clock=fclock)
    o.task_runner.add_handler("work", lambda t, tomb: None)
    st = o.state
    seen: list[Status] = []
    try:
        with st:
            chg = st.new_change("install", "Install")
            chg.add_task(st.new_task("work", "Work"))
            st.add_change_status_changed_handler(lambda c, old, new: seen.append(new))
        with st:
            (n,) = st.notices(types=["change-update"])
            assert (n.key, n.occurrences, n.last_data) == (chg.id, 1, {"kind": "install"})
        settle(o, clock=fclock)
        with st:
            assert chg.status is Status.DONE
            (n,) = st.notices(types=["change-update"], keys=[chg.id])
        # The spawn, then Doing and Done, as the status hooks saw them.
        assert seen == [Status.DOING, Status.DONE]
        assert n.occurrences == 1 + len(seen)
    finally:
        o.stop()
        st.close()


def test_warnings_are_notices(nst: State) -> None:
    with nst:
        nst.add_warning("disk almost full")
        nst.add_warning("disk almost full")
        (n,) = nst.notices(types=["warning"])
    assert (n.key, n.occurrences) == ("disk almost full", 2)
    # The warning's repeat: the second occurrence, within 24 hours, did not repeat it.
    assert n.last_repeated == n.first_occurred and n.repeat_after == timedelta(hours=24)


def test_wait_notices_returns_at_once_or_after_timeout(nst: State) -> None:
    with nst:
        nst.add_notice("custom", "a")
        (n,) = nst.notices()
    assert summary(nst.wait_notices(timeout=0)) == [("custom", "a", 1)]
    assert nst.wait_notices(after=n.last_repeated, timeout=0.01) == []
    with nst, pytest.raises(RuntimeError, match="while holding the state lock"):
        nst.wait_notices(timeout=0)


def test_wait_notices_is_woken_by_a_change_finishing_without_holding_the_lock(tmp_path: Path) -> None:
    o = Overlord(tmp_path / "state.db")
    st = o.state
    release = threading.Event()

    def work(t: Task, tomb: Tomb) -> None:
        assert release.wait(WAIT)

    o.task_runner.add_handler("work", work)
    got: list[Notice] = []
    waiting = threading.Event()
    with st:
        chg = st.new_change("install", "Install")
        chg.add_task(st.new_task("work", "Work"))
        cid = chg.id
    o.loop()
    try:
        # Wait for the change to be Doing, then for the notice of its end.
        with st:
            (n,) = st.notices(keys=[cid])
        while True:
            with st:
                if chg.status is Status.DOING:
                    (n,) = st.notices(keys=[cid])
                    break
            st.wait_notices(after=n.last_repeated, keys=[cid], timeout=WAIT)

        def waiter() -> None:
            waiting.set()
            got.extend(st.wait_notices(after=n.last_repeated, types=["change-update"], keys=[cid],
                                       timeout=WAIT))

        th = threading.Thread(target=waiter)
        th.start()
        assert waiting.wait(WAIT)
        # The waiter holds no lock: this unit of work commits while it waits (and wakes nobody).
        with st:
            st.set("unrelated", 1)
        release.set()
        th.join(WAIT)
        assert not th.is_alive()
        assert [x.key for x in got] == [cid]
        assert chg.wait_ready(WAIT)
        with st:
            assert chg.status is Status.DONE
            (last,) = st.notices(keys=[cid])
        assert got[0].occurrences == last.occurrences == 3
    finally:
        release.set()
        o.stop()
        st.close()


def test_async_waits_need_no_thread(nst: State) -> None:
    with nst:
        chg = nst.new_change("install", "Install")
        task = nst.new_task("work", "Work")
        chg.add_task(task)
        (n,) = nst.notices()
    go = threading.Event()

    def finish() -> None:  # another thread commits what the waits await
        assert go.wait(WAIT)
        with nst:
            task.set_status(Status.DONE)
            nst.add_notice("custom", "hello")

    th = threading.Thread(target=finish)
    th.start()

    async def main() -> tuple[bool, list[Notice], int, int]:
        before = threading.active_count()
        ready = asyncio.ensure_future(chg.wait_ready_async(WAIT))
        noticed = asyncio.ensure_future(nst.wait_notices_async(after=n.last_repeated, types=["custom"],
                                                               timeout=WAIT))
        await asyncio.sleep(0)  # both are waiting now
        during = threading.active_count()
        go.set()
        return await ready, await noticed, before, during

    try:
        ready, noticed, before, during = asyncio.run(main())
        assert ready is True
        assert summary(noticed) == [("custom", "hello", 1)]
        assert during == before  # no thread per wait
    finally:
        go.set()
        th.join(WAIT)


def test_async_waits_time_out(nst: State) -> None:
    with nst:
        chg = nst.new_change("install", "Install")
        chg.add_task(nst.new_task("work", "Work"))
        (n,) = nst.notices()

    async def main() -> tuple[bool, list[Notice]]:
        return await chg.wait_ready_async(0.01), await nst.wait_notices_async(after=n.last_repeated, timeout=0.01)

    assert asyncio.run(main()) == (False, [])


def test_async_handler_is_cancelled_when_its_change_is_aborted(tmp_path: Path) -> None:
    o = Overlord(tmp_path / "state.db")
    st = o.state
    started = threading.Event()
    cancelled = threading.Event()

    async def slow(t: Task, tomb: Tomb) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)  # never looks at the tomb itself
        except asyncio.CancelledError:
            cancelled.set()
            raise

    o.task_runner.add_handler("slow", slow, lambda t, tomb: None)
    with st:
        chg = st.new_change("install", "Install")
        task = st.new_task("slow", "Slow")
        chg.add_task(task)
    o.loop()
    try:
        assert started.wait(WAIT)
        with st:
            chg.abort()
        assert chg.wait_ready(WAIT)
        assert cancelled.is_set()
        with st:
            # Cancelled in Doing while aborted: undone, as a sync handler that returned on the tomb would be.
            assert (task.status, chg.status) == (Status.UNDONE, Status.UNDONE)
    finally:
        o.stop()
        st.close()


def test_async_handler_cancelled_by_stop_runs_again_at_the_next_start(tmp_path: Path) -> None:
    o = Overlord(tmp_path / "state.db")
    started = threading.Event()
    cancelled = threading.Event()

    async def slow(t: Task, tomb: Tomb) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    o.task_runner.add_handler("slow", slow)
    with o.state:
        chg = o.state.new_change("install", "Install")
        chg.add_task(o.state.new_task("slow", "Slow"))
    o.loop()
    assert started.wait(WAIT)
    o.stop()  # returns once the handler was cancelled: its outcome is a retry
    assert cancelled.is_set()
    o.state.close()
    o = Overlord(tmp_path / "state.db")
    o.task_runner.add_handler("slow", lambda t, tomb: None)
    try:
        with o.state:
            (task,) = o.state.tasks()
            assert task.status is Status.DOING  # left to run again, not failed
        settle(o)
        with o.state:
            assert task.status is Status.DONE
    finally:
        o.stop()
        o.state.close()


def test_postgresql_long_poll_is_woken_by_another_host(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LISTEN/NOTIFY: a notice committed by another process wakes a waiter at once (polling is off here)."""
    import subprocess
    import sys

    import engine._time

    monkeypatch.setattr(engine._time, "POLL_INTERVAL", 3600.0)  # only a notification can wake it in time
    st = State.open(url=pg_url)
    got: list[Notice] = []
    try:
        with st:
            st.add_notice("custom", "here")
            (mine,) = st.notices()
        th = threading.Thread(target=lambda: got.extend(
            st.wait_notices(after=mine.last_repeated, types=["custom"], timeout=20 * WAIT)))
        th.start()
        # The other host: another process, its own State, a change run to its end there.
        code = ("import sys; from engine import Overlord\n"
                "o = Overlord(url=sys.argv[1]); o.task_runner.add_handler('k', lambda t, tomb: None)\n"
                "with o.state:\n"
                "    o.state.new_change('c', 'elsewhere').add_task(o.state.new_task('k', 'one'))\n"
                "    o.state.add_notice('custom', 'there', data={'from': 'host B'})\n"
                "o.settle(60); o.stop(); o.state.close()\n")
        subprocess.run([sys.executable, "-c", code, pg_url], check=True, timeout=WAIT)
        th.join(WAIT)
        assert not th.is_alive(), "the waiter was not woken"
        assert [(n.key, n.last_data) for n in got] == [("there", {"from": "host B"})]
        # The other host's change ran to Done: its change-update notices are here too.
        with st:
            (chg,) = [n for n in st.notices(types=["change-update"]) if n.last_data == {"kind": "c"}]
            assert chg.occurrences == 3
    finally:
        st.close()
