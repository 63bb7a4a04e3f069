# SPDX-License-Identifier: GPL-3.0-or-later
"""The refresh.timer syntax (snapd's timeutil/schedule.go) and the next refresh time over simulated months."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from managers.snapstate.schedule import ClockSpan, WeekSpan, next_refresh, parse_schedule

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # a Tuesday
MAX = timedelta(days=95)


def test_parse() -> None:
    [s] = parse_schedule("mon,fri,10:00-12:00")
    assert s.weeks == (WeekSpan(0, 0), WeekSpan(4, 4)) and s.clocks == (ClockSpan(600, 720),)
    [s] = parse_schedule("fri-mon,9:00~11:00/2")
    assert s.weeks == (WeekSpan(4, 0),) and s.clocks == (ClockSpan(540, 660, 2, True),)
    assert [c for c in s.clocks[0].spans()] == [ClockSpan(540, 600, 0, True), ClockSpan(600, 660, 0, True)]
    a, b = parse_schedule("mon,10:00,,fri,15:00")
    assert (a.weeks, b.clocks) == ((WeekSpan(0, 0),), (ClockSpan(900, 900),))
    [s] = parse_schedule("23:00-01:00")
    assert s.clocks[0].window(datetime(2030, 1, 1, tzinfo=UTC)).end == datetime(2030, 1, 2, 1, 0, tzinfo=UTC)
    for bad, message in [("", "empty"), ("mon,", "not a valid fragment"), ("10:00,mon", "invalid schedule fragment"),
                         ("25:00", "not a valid time"), ("10:00-12:00/0", "not a valid interval"),
                         ("funday", "not a valid weekday"), ("mon1", "numbered weekdays"),
                         ("10:00/2", "a count needs a span"), ("mon-tue-wed", "invalid week span")]:
        with pytest.raises(ValueError, match=message):
            parse_schedule(bad)


def simulate(timer: str, days: int, start: datetime = T0, seed: int = 1) -> list[datetime]:
    """simulate refreshes as soon as each refresh is due, for days, returning the refresh times."""
    schedules = parse_schedule(timer)
    rand = random.Random(seed)
    now = start
    nxt = next_refresh(schedules, now, now, MAX, rand)  # a new system counts from now
    out = []
    while nxt < start + timedelta(days=days):
        now = nxt
        out.append(now)
        nxt = next_refresh(schedules, now, now, MAX, rand)
        assert nxt > now
    return out


def test_a_month_of_four_slots_a_day_each_in_its_window() -> None:
    times = simulate("00:00~24:00/4", 30)
    [s] = parse_schedule("00:00~24:00/4")
    per_day = Counter(t.date() for t in times)
    days = sorted(per_day)
    assert per_day[days[0]] == 1  # a new system at 12:00 starts with the 18:00-24:00 slot
    assert {per_day[d] for d in days[1:-1]} == {4} and len(days) == 31
    for t in times:
        slot = (t.hour * 60 + t.minute) // 360
        assert s.includes(t)
        assert t.hour * 60 + t.minute <= slot * 360 + 355  # the spread keeps 5 minutes before the slot's end
    assert len({(t.date(), (t.hour * 60 + t.minute) // 360) for t in times}) == len(times)  # one per slot


def test_a_month_on_mondays_and_fridays_in_a_window() -> None:
    times = simulate("mon,fri,10:00-12:00/2", 31)
    assert {t.strftime("%a") for t in times} == {"Mon", "Fri"}
    assert {(t.hour, t.minute) for t in times} == {(10, 0), (11, 0)}  # no spread: the slots' starts
    assert len(times) == 2 * len({t.date() for t in times}) and len({t.date() for t in times}) in (8, 9)


def test_a_spread_window_crossing_midnight_and_a_wrapping_week_span() -> None:
    times = simulate("fri-sun,23:00~01:00", 28)
    [s] = parse_schedule("fri-sun,23:00~01:00")
    for t in times:
        assert s.includes(t), t
        start_day = t - timedelta(hours=1)  # the window began on Fri, Sat or Sun evening
        assert start_day.strftime("%a") in ("Fri", "Sat", "Sun")
    assert len(times) == 12  # 4 weekends of 3 evenings


def test_the_earliest_of_several_event_sets_and_the_postponement_limit() -> None:
    schedules = parse_schedule("mon,10:00,,fri,15:00")
    tue = T0
    assert next_refresh(schedules, tue, tue, MAX) == datetime(2030, 1, 4, 15, 0, tzinfo=UTC)  # Friday
    # a window that has begun is due now; one missed while the system was off is not (the next one is)
    fri = datetime(2030, 1, 4, 15, 0, tzinfo=UTC)
    assert next_refresh(parse_schedule("fri,14:00-16:00"), tue - timedelta(days=10), fri, MAX) == fri
    assert next_refresh(schedules, tue - timedelta(days=10), tue, MAX) == datetime(2030, 1, 4, 15, 0, tzinfo=UTC)
    # never more than max_postponement after the last refresh
    assert next_refresh(schedules, tue, tue, timedelta(hours=2)) == tue + timedelta(hours=2)
