# SPDX-License-Identifier: GPL-3.0-or-later
"""Warnings: added, shown, repeated and expired by the State's clock (snapd's warning_test.go)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import EngineError, State, StateWarning
from engine.testing import FakeClock

DAY = timedelta(days=1)


def messages(ws: list[StateWarning]) -> list[str]:
    return [str(w) for w in ws]


def test_empty(st: State, clock: FakeClock) -> None:
    with st:
        assert st.all_warnings() == []
        assert st.warnings() == []
        assert st.okay_warnings(clock()) == 0


def test_add_warning(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("hello")
        ws = st.all_warnings()
        assert messages(ws) == ["hello"]
        w = ws[0]
        assert isinstance(w, StateWarning)
        assert str(w) == "hello"
        assert w.first_added == clock() == w.last_added
        assert w.last_shown is None
        assert w.repeat_after == timedelta(hours=24)
        assert w.expire_after == timedelta(days=28)
        assert messages(st.warnings()) == ["hello"]


def test_adding_again_refreshes_last_added(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("hello")
        first = clock()
        clock.advance(hours=5)
        st.add_warning("hello")
        (w,) = st.all_warnings()
        assert w.first_added == first
        assert w.last_added == clock()


def test_show_and_okay(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("number one")
        t1 = clock()
        assert messages(st.warnings()) == ["number one"]
        clock.advance(1)
        st.add_warning("number two")
        t2 = clock()
        assert messages(st.warnings()) == ["number one", "number two"]

        assert st.okay_warnings(t1) == 1  # only what was added by t1
        assert messages(st.warnings()) == ["number two"]
        assert st.okay_warnings(t2) == 1
        assert st.warnings() == []
        assert messages(st.all_warnings()) == ["number one", "number two"]
        assert st.okay_warnings(t2) == 0  # nothing due any more


def test_default_repeat_after_is_a_day(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("hello")
        shown = clock()
        assert st.okay_warnings(shown) == 1
        st.add_warning("hello")  # adding it again does not show it again
        assert st.warnings() == []
        clock.set(shown + DAY - timedelta(seconds=1))
        assert st.warnings() == []
        clock.set(shown + DAY + timedelta(seconds=1))
        assert messages(st.warnings()) == ["hello"]


def test_custom_repeat_after(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("seconds", repeat_after=2)
        st.add_warning("delta", repeat_after=timedelta(minutes=1))
        shown = clock()
        assert st.okay_warnings(shown) == 2
        assert st.warnings() == []
        clock.advance(3)
        assert messages(st.warnings()) == ["seconds"]
        clock.advance(60)
        assert messages(st.warnings()) == ["seconds", "delta"]
        for w in st.all_warnings():
            assert w.repeat_after == {"seconds": timedelta(seconds=2), "delta": timedelta(minutes=1)}[str(w)]


def test_default_expire_after_is_28_days(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("hello")
        added = clock()
        clock.set(added + timedelta(days=28) - timedelta(seconds=1))
        assert messages(st.all_warnings()) == ["hello"]
        assert messages(st.warnings()) == ["hello"]
        clock.set(added + timedelta(days=28) + timedelta(seconds=1))
        assert st.all_warnings() == []
        assert st.warnings() == []


def test_custom_expire_after(st: State, clock: FakeClock) -> None:
    with st:
        st.add_warning("short", expire_after=10)
        st.add_warning("delta", expire_after=timedelta(hours=1))
        clock.advance(11)
        assert messages(st.all_warnings()) == ["delta"]
        clock.advance(hours=1)
        assert st.all_warnings() == []


def test_delete_expired_keeps_order_by_last_added(st: State, clock: FakeClock) -> None:
    """snapd's TestDeleteExpired: sorted by last added; expired ones drop out."""
    with st:
        st.add_warning("hello again")
        clock.advance(1)
        st.add_warning("hello", expire_after=timedelta(milliseconds=20))
        clock.advance(0.001)
        st.add_warning("hello again")  # now the most recently added
        assert messages(st.all_warnings()) == ["hello", "hello again"]
        clock.advance(0.040)
        assert messages(st.all_warnings()) == ["hello again"]


def test_old_repeated_warning_is_alive_again(st: State, clock: FakeClock) -> None:
    """snapd's TestOldRepeatedWarning: adding an expired warning again revives it."""
    with st:
        st.add_warning("hello")
        clock.advance(days=56)
        assert st.all_warnings() == []
        st.add_warning("hello")
        assert messages(st.all_warnings()) == ["hello"]
        assert messages(st.warnings()) == ["hello"]


@pytest.mark.parametrize("message", ["", " ", " leading", "trailing ", "\tx", "x\n"], ids=repr)
def test_invalid_messages(st: State, message: str) -> None:
    with st:
        with pytest.raises((ValueError, EngineError)):
            st.add_warning(message)
        assert st.all_warnings() == []


def test_non_text_message(st: State) -> None:
    with st:
        with pytest.raises((ValueError, TypeError, EngineError)):
            st.add_warning(42)  # type: ignore[arg-type]
        assert st.all_warnings() == []


@pytest.mark.parametrize("kw", [{"repeat_after": 0}, {"expire_after": 0}, {"expire_after": timedelta(0)}], ids=repr)
def test_zero_durations_are_refused(st: State, kw: dict[str, Any]) -> None:
    with st:
        with pytest.raises((ValueError, EngineError)):
            st.add_warning("hello", **kw)
        assert st.all_warnings() == []


def test_warnings_persist_across_reopen(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        st.add_warning("hello", repeat_after=timedelta(hours=2), expire_after=timedelta(days=3))
        st.add_warning("other")
        added = clock()
        clock.advance(1)
        st.okay_warnings(clock())
        shown = clock()
    st.close()

    con = sqlite3.connect(db_path)
    try:
        rows = dict(con.execute("SELECT message, last_shown FROM warnings").fetchall())
    finally:
        con.close()
    assert set(rows) == {"hello", "other"}
    assert rows["hello"].startswith(shown.strftime("%Y-%m-%dT%H:%M:%S"))

    st2 = State.open(db_path, clock=clock)
    try:
        with st2:
            ws = {str(w): w for w in st2.all_warnings()}
            assert set(ws) == {"hello", "other"}
            hello = ws["hello"]
            assert hello.first_added == added
            assert hello.last_added == added
            assert hello.last_shown == shown
            assert hello.repeat_after == timedelta(hours=2)
            assert hello.expire_after == timedelta(days=3)
            assert ws["other"].repeat_after == timedelta(hours=24)
            assert ws["other"].expire_after == timedelta(days=28)
            assert st2.warnings() == []
        clock.advance(hours=2, seconds=1)
        with st2:
            assert messages(st2.warnings()) == ["hello"]
        clock.advance(days=3)
        with st2:
            assert messages(st2.all_warnings()) == ["other"]
    finally:
        st2.close()


def test_warnings_roll_back_with_the_unit(st: State) -> None:
    with pytest.raises(ZeroDivisionError), st:
        st.add_warning("lost")
        1 / 0  # noqa: B018 - the rollback is the point
    with st:
        assert st.all_warnings() == []
