# SPDX-License-Identifier: GPL-3.0-or-later
"""schedule: snapd's refresh.timer syntax, and the next time a schedule allows.

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
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Python's weekday() order
_TIME = re.compile(r"^([0-9]|[01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
#: SPREAD_MARGIN is left at the end of a spread window (snapd's 5 minutes), so a slot is not missed.
SPREAD_MARGIN = timedelta(minutes=5)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class ClockSpan:
    """ClockSpan is a time span within a day, in minutes from midnight (end may be before start: it crosses)."""

    start: int
    end: int
    split: int = 0
    spread: bool = False

    def spans(self) -> list[ClockSpan]:
        """spans splits the span into its /N slots."""
        if self.split <= 1 or self.start == self.end:
            return [self]
        length = (self.end - self.start) % 1440 or 1440
        step = length // self.split
        return [ClockSpan((self.start + i * step) % 1440, (self.start + (i + 1) * step) % 1440 or 1440, 0,
                          self.spread) for i in range(self.split)]

    def window(self, day: datetime) -> Window:
        """window is this span on day (a midnight), its end the next day when it crosses midnight."""
        start = day + timedelta(minutes=self.start)
        end = day + timedelta(minutes=self.end)
        if end < start:
            end += DAY
        return Window(start, end, self.spread)


@dataclass(frozen=True)
class WeekSpan:
    """WeekSpan is a day of the week or a span of days (0 is Monday), wrapping over the week's end."""

    start: int
    end: int

    def match(self, when: datetime) -> bool:
        """match says whether when's day is in the span."""
        return (when.weekday() - self.start) % 7 <= (self.end - self.start) % 7


@dataclass(frozen=True)
class Window:
    """Window is when a scheduled event may happen: at start, or (spread) anywhere before end."""

    start: datetime
    end: datetime
    spread: bool = False

    def includes(self, when: datetime) -> bool:
        """includes says whether when is in [start, end]."""
        return self.start <= when <= self.end


@dataclass(frozen=True)
class Schedule:
    """Schedule is one event set: days (none: every day) and clock spans (none: the whole day)."""

    weeks: tuple[WeekSpan, ...]
    clocks: tuple[ClockSpan, ...]

    def _spans(self) -> list[ClockSpan]:
        return [s for c in (self.clocks or (ClockSpan(0, 0),)) for s in c.spans()]

    def _day_matches(self, day: datetime) -> bool:
        return not self.weeks or any(w.match(day) for w in self.weeks)

    def next_window(self, last: datetime, now: datetime) -> Window:
        """next_window is the earliest window that does not end before now and does not include last."""
        day = min(last, now).replace(hour=0, minute=0, second=0, microsecond=0)
        day = max(day, now.replace(hour=0, minute=0, second=0, microsecond=0) - 2 * DAY)
        for _ in range(3 * 366):
            if self._day_matches(day):
                best: Window | None = None
                for span in self._spans():
                    w = span.window(day)
                    if w.end < now or w.includes(last):
                        continue
                    if best is None or w.start < best.start:
                        best = w
                if best is not None:
                    return best
            day += DAY
        raise ValueError("internal error: the schedule has no window in three years")

    def includes(self, when: datetime) -> bool:
        """includes says whether when is in one of the schedule's windows (a lone time is one minute long)."""
        for back in (DAY, timedelta(0)):
            day = when.replace(hour=0, minute=0, second=0, microsecond=0) - back
            if not self._day_matches(day):
                continue
            for span in self._spans():
                w = span.window(day)
                end = w.end + timedelta(minutes=1) if w.end == w.start else w.end
                if w.start <= when < end:
                    return True
        return False


def _clock(text: str, where: str) -> int:
    m = _TIME.match(text)
    if m is None:
        raise ValueError(f"cannot parse {where!r}: {text!r} is not a valid time")
    return 1440 if text == "24:00" else int(m.group(1)) * 60 + int(m.group(2))


def _clock_span(text: str) -> ClockSpan:
    rest, split = text, 0
    if "/" in text:
        rest, _, count = text.partition("/")
        if not count.isdigit() or int(count) == 0 or "/" in count:
            raise ValueError(f"cannot parse {text!r}: not a valid interval")
        split = int(count)
    spread = "~" in rest
    sep = "~" if spread else "-"
    if sep in rest:
        a, _, b = rest.partition(sep)
        return ClockSpan(_clock(a, text), _clock(b, text), split, spread)
    if split:
        raise ValueError(f"cannot parse {text!r}: a count needs a span (HH:MM-HH:MM/N)")
    t = _clock(rest, text)
    return ClockSpan(t, t)


def _weekday(text: str, where: str) -> int:
    if text[:3] in DAYS and len(text) == 4 and text[3].isdigit():
        raise ValueError(f"cannot parse {where!r}: numbered weekdays ({text}) are not supported")
    if text not in DAYS:
        raise ValueError(f"cannot parse {where!r}: {text!r} is not a valid weekday")
    return DAYS.index(text)


def _event_set(text: str) -> Schedule:
    weeks: list[WeekSpan] = []
    clocks: list[ClockSpan] = []
    for fragment in text.split(","):
        if not fragment:
            raise ValueError(f"cannot parse {text!r}: not a valid fragment")
        if ":" in fragment:
            clocks.append(_clock_span(fragment))
        elif clocks:
            raise ValueError(f"cannot parse {fragment!r}: invalid schedule fragment")
        else:
            parts = fragment.split("-")
            if len(parts) > 2:
                raise ValueError(f"cannot parse {fragment!r}: invalid week span")
            start = _weekday(parts[0], fragment)
            weeks.append(WeekSpan(start, _weekday(parts[-1], fragment)))
    return Schedule(tuple(weeks), tuple(clocks))


def parse_schedule(text: str) -> list[Schedule]:
    """parse_schedule reads a refresh.timer; ValueError ("cannot parse ...") names what is wrong."""
    if not text or len(text) > 1024:
        raise ValueError("cannot parse the schedule: it is empty or longer than 1024 characters")
    return [_event_set(s) for s in text.split(",,")]


def next_refresh(schedules: list[Schedule], last: datetime, now: datetime, max_postponement: timedelta,
                 rand: random.Random | None = None) -> datetime:
    """next_refresh is when the next refresh after last is due: now when its window has begun.

    The earliest window of any schedule that does not include last; a spread
    window gives a random point in it (up to SPREAD_MARGIN before its end); never
    later than last + max_postponement.
    """
    window = Window(last + max_postponement, last + max_postponement + timedelta(hours=1))
    for s in schedules:
        w = s.next_window(last, now)
        if w.start < window.start:
            window = w
    if window.start <= now:
        return now
    when = window.start
    if window.spread:
        length = window.end - window.start
        if length > SPREAD_MARGIN:
            length -= SPREAD_MARGIN
        when += timedelta(seconds=(rand or random).uniform(0, length.total_seconds()))
    return when
