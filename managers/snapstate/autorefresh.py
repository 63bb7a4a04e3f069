# SPDX-License-Identifier: GPL-3.0-or-later
"""Auto-refresh: SnapManager's ensure starts an "auto-refresh" change when the refresh.timer says it is due.

The ensure only decides (state reads, no store access): when the next
refresh time has come, no auto-refresh change is unready and the last
failed check is older than RETRY_DELAY, it makes an "auto-refresh" change
of one task, check-refresh. That task asks the store (the slow part) and
adds one lane per snap with an update, held snaps and snaps another change
is working on left out, to its own change; a snap whose lane fails is
undone, the others complete. A successful check records last-refresh; the
next refresh time is then computed from the timer.

State keys: "last-refresh", "next-refresh" (RFC 3339), "refresh-timer" (the
timer next-refresh was computed for: a new timer recomputes it),
"last-refresh-attempt", "auto-refresh-change" (the id of the last change),
"refresh-holds" ({"system": TIME, "snaps": {NAME: TIME}}, TIME RFC 3339 or
"forever"). Settings read from the state key "config" (system settings,
docs/managers.md): refresh.timer, refresh.hold.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import State, Task, Tomb

from ..errors import ManagerError, NoUpdateAvailableError, SnapNotInstalledError, SnapOperationError
from .conflict import busy_snaps, snap_key
from .lookup import store_lookup
from .model import SnapManagerView, get_snap_state, mark_done
from .schedule import Schedule, next_refresh, parse_schedule
from .snapstate import refresh_task_sets

log = logging.getLogger("managers.snapstate")

#: DEFAULT_TIMER is snapd's default schedule: four times a day, at a random point of each quarter.
DEFAULT_TIMER = "00:00~24:00/4"
#: MAX_POSTPONEMENT: the schedule never leaves a system without a refresh check longer (snapd's 95 days).
MAX_POSTPONEMENT = timedelta(days=95)
#: RETRY_DELAY: a failed check is tried again this long after it started (snapd's refreshRetryDelay).
RETRY_DELAY = timedelta(minutes=20)
#: MAX_SYSTEM_HOLD: the longest a system-wide hold may last (snapd's maxPostponement less its 5-day buffer).
MAX_SYSTEM_HOLD = timedelta(days=90)
FOREVER = "forever"
HOLDS_KEY = "refresh-holds"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")


def system_setting(st: State, key: str, default: Any = None) -> Any:
    """system_setting reads a system setting (config["system"], a dotted key) as committed (lock held).

    It reads what managers.configstate writes (`overlord set system
    refresh.timer=...`, checked there) without importing it: the
    configuration manager is built on the snap manager, not the reverse.
    """
    node: Any = st.get("config", {}).get("system", {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def format_time(when: datetime) -> str:
    """format_time is RFC 3339 in UTC, to the second."""
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def parse_time(text: str) -> datetime:
    """parse_time reads RFC 3339 (ValueError otherwise)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"cannot use time {text!r}: it has no time zone")
    return when.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """parse_duration reads 90d, 24h, 1h30m, 45m, 30s (ValueError otherwise)."""
    m = _DURATION.match(text)
    if not text or m is None:
        raise ValueError(f"cannot use duration {text!r}: write it like 24h, 7d, 1h30m or 45m")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def _held_until(text: object, now: datetime) -> datetime | None:
    """_held_until is when a hold ends (datetime.max for forever), None when it is over or unreadable."""
    if text == FOREVER:
        return datetime.max.replace(tzinfo=UTC)
    if not isinstance(text, str):
        return None
    try:
        until = parse_time(text)
    except ValueError:
        return None
    return until if until > now else None


class AutoRefresh:
    """AutoRefresh is the part of the SnapManager's ensure that refreshes on a schedule."""

    def __init__(self, sm: SnapManagerView, clock: Callable[[], datetime], rand: random.Random | None = None) -> None:
        self.sm = sm
        self.clock = clock
        self.rand = rand or random.Random()
        self._bad_timer = ""
        self._parsed: dict[str, list[Schedule]] = {}

    # -- settings ----------------------------------------------------------------------------

    def timer(self, st: State) -> tuple[str, list[Schedule]]:
        """timer is the refresh.timer setting and its schedules (the default when unset or unreadable)."""
        text = system_setting(st, "refresh.timer", None)
        if not isinstance(text, str) or not text:
            text = DEFAULT_TIMER
        if text in self._parsed:
            return text, self._parsed[text]
        if text != DEFAULT_TIMER:
            try:
                self._parsed[text] = parse_schedule(text)
                return text, self._parsed[text]
            except ValueError as e:
                if self._bad_timer != text:
                    self._bad_timer = text
                    log.warning("cannot use refresh.timer %r (%s): using the default %s", text, e, DEFAULT_TIMER)
                    st.add_warning(f"cannot use refresh.timer {text!r}: {e}; refreshing on the default schedule "
                                   f"{DEFAULT_TIMER}")
        self._parsed.setdefault(DEFAULT_TIMER, parse_schedule(DEFAULT_TIMER))
        return DEFAULT_TIMER, self._parsed[DEFAULT_TIMER]

    def holds(self, st: State) -> dict[str, Any]:
        """holds is the state's record of holds: {"system": TIME, "snaps": {NAME: TIME}}."""
        data = st.get(HOLDS_KEY, {})
        return {"system": data.get("system", ""), "snaps": dict(data.get("snaps", {}))}

    def system_hold(self, st: State, now: datetime) -> datetime | None:
        """system_hold is until when every auto-refresh is held (refresh.hold or refresh --hold), or None."""
        ends = [t for t in (_held_until(system_setting(st, "refresh.hold", None), now),
                            _held_until(self.holds(st)["system"], now)) if t is not None]
        return max(ends) if ends else None

    def held_snaps(self, st: State, now: datetime) -> dict[str, datetime]:
        """held_snaps maps each snap held now to the end of its hold."""
        out = {}
        for name, text in self.holds(st)["snaps"].items():
            until = _held_until(text, now)
            if until is not None:
                out[name] = until
        return out

    def hold(self, st: State, names: list[str], until: str) -> None:
        """hold holds the auto-refresh of names (none: of the system) until a time or "forever" (lock held)."""
        now = self.clock()
        if until != FOREVER:
            try:
                end = parse_time(until)
            except ValueError:
                raise SnapOperationError(f"cannot hold refreshes until {until!r}: it is not an RFC 3339 time "
                                         "or \"forever\"") from None
            if end <= now:
                raise SnapOperationError(f"cannot hold refreshes until {until}: that time has passed")
            until = format_time(end)
        if not names and (until == FOREVER or parse_time(until) - now > MAX_SYSTEM_HOLD + timedelta(minutes=1)):
            raise SnapOperationError(f"cannot hold every refresh for longer than {MAX_SYSTEM_HOLD.days} days: "
                                     "hold snaps by name to hold them longer")
        holds = self.holds(st)
        for name in names:
            if get_snap_state(st, name) is None:
                raise SnapNotInstalledError(f"cannot hold snap {name!r}: it is not installed")
            holds["snaps"][name] = until
        if not names:
            holds["system"] = until
        st.set(HOLDS_KEY, holds)
        st.ensure_before(0)

    def unhold(self, st: State, names: list[str]) -> None:
        """unhold removes the holds of names (none: the system-wide one) (lock held)."""
        holds = self.holds(st)
        for name in names:
            holds["snaps"].pop(name, None)
        if not names:
            holds["system"] = ""
        st.set(HOLDS_KEY, holds)
        st.ensure_before(0)

    def info(self, st: State) -> dict[str, Any]:
        """info is what `refresh --time` shows: timer, last and next refresh, the holds in force (lock held)."""
        now = self.clock()
        timer, _ = self.timer(st)
        out: dict[str, Any] = {"timer": timer}
        for key, name in (("last-refresh", "last"), ("next-refresh", "next")):
            if st.get(key, None):
                out[name] = st.get(key)
        hold = self.system_hold(st, now)
        if hold is not None:
            out["hold"] = FOREVER if hold.year == 9999 else format_time(hold)
        held = {n: (FOREVER if t.year == 9999 else format_time(t)) for n, t in self.held_snaps(st, now).items()}
        if held:
            out["held-snaps"] = held
        return out

    # -- the ensure ------------------------------------------------------------------------------

    def in_flight(self, st: State) -> bool:
        """in_flight says whether the last auto-refresh change is unready."""
        cid = st.get("auto-refresh-change", None)
        chg = st.change(cid) if cid is not None else None
        return chg is not None and not chg.is_ready()

    def ensure(self) -> None:
        """ensure starts an auto-refresh change when one is due; it never reads the store itself."""
        st = self.sm.state
        with st:
            if self.sm.snap_store is None or not self.sm.can_auto_refresh():
                return
            timer, schedules = self.timer(st)
            now = self.clock()
            last = _time(st.get("last-refresh", None))
            nxt = _time(st.get("next-refresh", None))
            if nxt is None or st.get("refresh-timer", None) != timer:
                # A system that never refreshed counts from now: its first auto-refresh is in the timer's next
                # window that does not include now (snapd anchors at the seeding time instead).
                nxt = next_refresh(schedules, last or now, now, MAX_POSTPONEMENT, self.rand)
                st.set("next-refresh", format_time(nxt))
                st.set("refresh-timer", timer)
                log.debug("next auto-refresh at %s (timer %s)", format_time(nxt), timer)
            if self.in_flight(st):
                return
            hold = self.system_hold(st, now)
            if hold is not None:
                if hold.year < 9999:
                    st.ensure_before(max(0.0, (hold - now).total_seconds()))
                return
            if nxt > now:
                st.ensure_before((nxt - now).total_seconds())
                return
            attempt = _time(st.get("last-refresh-attempt", None))
            if attempt is not None and attempt + RETRY_DELAY > now:
                st.ensure_before((attempt + RETRY_DELAY - now).total_seconds())
                return
            st.set("last-refresh-attempt", format_time(now))
            chg = st.new_change("auto-refresh", "Auto-refresh snaps")
            chg.add_task(st.new_task("check-refresh", "Check the store for snap updates"))
            chg.set("snap-names", [])
            st.set("auto-refresh-change", chg.id)
            st.ensure_before(0)
            log.info("auto-refresh due (timer %s): change %s checks for updates", timer, chg.id)

    def do_check_refresh(self, task: Task, tomb: Tomb) -> None:
        """do_check_refresh asks the store for updates and adds a lane per snap that has one to its change.

        The store is read without the state lock: what each snap's channel
        offers is looked up first, then the lanes are added, the check recorded
        and the task set Done in one transaction.
        """
        st = task.state
        store = self.sm.snap_store
        if store is None:
            raise ManagerError("cannot check for snap updates: no store is configured")
        found = store_lookup(self.sm, "refresh", None)  # takes the lock only to read the snaps' channels
        failure = found.failure()
        if failure is not None:  # the check failed: the next is tried after RETRY_DELAY
            raise failure
        with st:
            now = self.clock()
            chg = task.change()
            assert chg is not None
            skip = set(self.held_snaps(st, now))
            # Snaps another unready change works on wait for the next refresh.
            skip.update(busy_snaps(self.sm, found.names(), ignore_change=chg.id))
            try:
                names, sets = refresh_task_sets(self.sm, None, skip=skip, found=found)
            except NoUpdateAvailableError:
                names, sets = [], []
            for ts in sets:
                ts.join_lane(st.new_lane())
                chg.add_all(ts)
            chg.affect(*[snap_key(n) for n in names])  # other changes' conflicts see them
            chg.set("snap-names", names)
            if skip:
                task.logf("Left alone (held, or another change is working on them): %s", ", ".join(sorted(skip)))
            task.logf("Updates: %s", ", ".join(names) if names else "none")
            st.set("last-refresh", format_time(now))
            st.set("next-refresh", None)
            st.ensure_before(0)
            mark_done(task)


def _time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None
