# SPDX-License-Identifier: GPL-3.0-or-later
"""schedule: snapd's refresh.timer syntax (parsed by the engine: engine.timespec), and the next refresh time.

    timer     = eventset *( ",," eventset )
    eventset  = wdaylist / timelist / wdaylist "," timelist
    wdayset   = wday / wday "-" wday            (mon, mon-fri, fri-mon wraps)
    timeset   = time / time ( "-" / "~" ) time [ "/" count ]
    time      = H:MM or HH:MM, 00:00 to 24:00

"mon,fri,10:00-12:00" is Monday and Friday between 10 and 12; "~" picks a
random point in the window instead of its start; "/N" splits a window into N
equal slots, one refresh in each; ",," joins event sets. Times are UTC
(snapd's are local). Numbered weekdays (mon1, the first Monday of the
month) are not supported. The semantics follow snapd's timeutil/schedule.go.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from engine import ClockSpan, TimerSet, WeekSpan, parse_timer

# The timer syntax is the engine's (engine.timespec), shared with its schedules; these are its names here.
__all__ = ["SPREAD_MARGIN", "ClockSpan", "Schedule", "WeekSpan", "next_refresh", "parse_schedule"]
Schedule = TimerSet
parse_schedule = parse_timer
#: SPREAD_MARGIN is left at the end of a spread window (snapd's 5 minutes), so a slot is not missed.
SPREAD_MARGIN = timedelta(minutes=5)


def next_refresh(schedules: list[Schedule], last: datetime, now: datetime, max_postponement: timedelta,
                 rand: random.Random | None = None) -> datetime:
    """next_refresh is when the next refresh after last is due: now when its window has begun.

    The earliest window of any schedule that does not include last; a spread
    window gives a random point in it (up to SPREAD_MARGIN before its end); never
    later than last + max_postponement.
    """
    start, end, spread = last + max_postponement, last + max_postponement + timedelta(hours=1), False
    for s in schedules:
        w = s.next_window(last, now)
        if w.start < start:
            start, end, spread = w.start, w.end, w.spread
    if start <= now:
        return now
    when = start
    if spread:
        length = end - start
        if length > SPREAD_MARGIN:
            length -= SPREAD_MARGIN
        when += timedelta(seconds=(rand or random).uniform(0, length.total_seconds()))
    return when
