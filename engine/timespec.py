# SPDX-License-Identifier: GPL-3.0-or-later
"""timespec: when things are due. snapd's timer syntax, and cron's; the next slot after a time.

snapd's timer (its refresh.timer; timeutil/schedule.go is the reference)::

    timer     = eventset *( ",," eventset )
    eventset  = wdaylist / timelist / wdaylist "," timelist
    wdayset   = wday / wday "-" wday            (mon, mon-fri, fri-mon wraps)
    timeset   = time / time ( "-" / "~" ) time [ "/" count ]
    time      = H:MM or HH:MM, 00:00 to 24:00

"mon,fri,10:00-12:00" is Monday and Friday between 10 and 12; "~" picks a
random point in the window instead of its start (a refresh's choice: a
slot is always the window's start); "/N" splits a window into N equal
slots; ",," joins event sets. Numbered weekdays (mon1, the first Monday of
the month) are not supported.

cron's five fields (minute hour day-of-month month day-of-week), each
``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a list of
those; months and weekdays by number or by their three-letter English
names; weekday 0 and 7 are Sunday; when both day fields are restricted, a
day matching either is due (cron's rule).

Times are UTC. parse_spec reads either syntax (cron when it has five
space-separated fields); its result's next_slot(after) is the first slot
strictly after a time. The snap manager (refresh.timer) and the engine's
schedules (engine.schedules) both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Python's weekday() order
_TIME = re.compile(r"^([0-9]|[01][0-9]|2[0-3]):([0-5][0-9])\Z|^24:00\Z")  # (\Z: $ would take a final line break)
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
class TimerSet:
    """TimerSet is one event set of a snapd timer: days (none: every day) and clock spans (none: the whole day)."""

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
        start, end = _clock(a, text), _clock(b, text)
        length = (end - start) % 1440 or 1440
        if split > length and start != end:  # slots are whole minutes (and a huge count, a list of its size)
            raise ValueError(f"cannot parse {text!r}: a window of {length} minutes has at most {length} slots")
        return ClockSpan(start, end, split, spread)
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


def _event_set(text: str) -> TimerSet:
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
    return TimerSet(tuple(weeks), tuple(clocks))


def parse_timer(text: str) -> list[TimerSet]:
    """parse_timer reads a snapd timer (refresh.timer); ValueError ("cannot parse ...") names what is wrong."""
    if not text or len(text) > 1024:
        raise ValueError("cannot parse the schedule: it is empty or longer than 1024 characters")
    return [_event_set(s) for s in text.split(",,")]


# -- slots: the starts of the windows ----------------------------------------------------------------


def _midnight(when: datetime) -> datetime:
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def timer_next_start(sets: list[TimerSet], after: datetime) -> datetime:
    """timer_next_start is the first window start of any event set strictly after after (a slot)."""
    best: datetime | None = None
    for s in sets:
        day = _midnight(after) - DAY  # a window of yesterday's may start... never after today: look from today
        for _ in range(3 * 366):
            if best is not None and day > best:
                break
            if s._day_matches(day):
                for span in s._spans():
                    start = day + timedelta(minutes=span.start)
                    if start > after and (best is None or start < best):
                        best = start
            day += DAY
    if best is None:
        raise ValueError("internal error: the timer has no window in three years")
    return best


# -- cron -----------------------------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: The fields of a cron line: name, lowest, highest, names (from lowest).
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _CRON_DAYS))


def _cron_value(text: str, field: tuple[str, int, int, tuple[str, ...]], line: str) -> int:
    name, low, high, names = field
    if text.lower() in names:
        return names.index(text.lower()) + low
    if not text.isdigit():
        raise ValueError(f"cannot parse cron line {line!r}: {text!r} is not a valid {name}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"cannot parse cron line {line!r}: {name} {value} is not within {low}-{high}")
    return value


def _cron_field(text: str, field: tuple[str, int, int, tuple[str, ...]], line: str) -> frozenset[int]:
    name, low, high, _ = field
    out: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cannot parse cron line {line!r}: {step_text!r} is not a valid step")
            step = int(step_text)
        if body == "*":
            a, b = low, high
        elif "-" in body:
            x, _, y = body.partition("-")
            a, b = _cron_value(x, field, line), _cron_value(y, field, line)
            if a > b:
                raise ValueError(f"cannot parse cron line {line!r}: the range {body!r} runs backwards")
        elif body:
            a = b = _cron_value(body, field, line)
            if slash:
                b = high
        else:
            raise ValueError(f"cannot parse cron line {line!r}: an empty {name}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class CronSpec:
    """CronSpec is a parsed cron line: the minutes, hours, days, months and weekdays (0 Monday) it allows."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, day.weekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow  # both restricted: either (cron's rule)

    def next_slot(self, after: datetime) -> datetime:
        """next_slot is the first minute strictly after after that the line allows."""
        start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = _midnight(start)
        minutes, hours = sorted(self.minutes), sorted(self.hours)
        for _ in range(8 * 366):  # (Feb 29 on a given weekday may be years away)
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        when = day.replace(hour=h, minute=m)
                        if when >= start:
                            return when
            day += DAY
        raise ValueError("cannot find a time this cron line allows within eight years")


def parse_cron(line: str) -> CronSpec:
    """parse_cron reads a five-field cron line; ValueError ("cannot parse cron line ...") names what is wrong."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"cannot parse cron line {line!r}: it needs five fields (minute hour day month weekday)")
    minutes, hours, days, months, cron_days = (_cron_field(f, spec, line) for f, spec in zip(fields, _FIELDS,
                                                                                              strict=True))
    weekdays = frozenset((d - 1) % 7 for d in cron_days)  # cron: 0 and 7 Sunday; Python: 0 Monday
    return CronSpec(minutes, hours, days, months, weekdays, fields[2] == "*", fields[4] == "*")


@dataclass(frozen=True)
class Spec:
    """Spec is a parsed schedule specification, cron's or snapd's timer: next_slot gives its slots."""

    text: str
    cron: CronSpec | None
    timer: tuple[TimerSet, ...]

    def next_slot(self, after: datetime) -> datetime:
        """next_slot is the first slot strictly after after."""
        if self.cron is not None:
            return self.cron.next_slot(after)
        return timer_next_start(list(self.timer), after)


def parse_spec(text: str) -> Spec:
    """parse_spec reads cron's syntax (five space-separated fields) or snapd's timer syntax."""
    if not isinstance(text, str):
        raise TypeError(f"cannot parse the schedule {text!r}: it must be a str, not {type(text).__name__}")
    if len(text.split()) == 5:
        return Spec(text, parse_cron(text), ())
    if " " in text.strip():
        raise ValueError(f"cannot parse the schedule {text!r}: a cron line has five fields; a timer has no spaces")
    return Spec(text, None, tuple(parse_timer(text.strip())))
