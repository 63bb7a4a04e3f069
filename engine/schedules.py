# SPDX-License-Identifier: GPL-3.0-or-later
"""Schedules: a change made from a template whenever a schedule (cron's syntax or snapd's timer) is due.

A schedule is a row of ``schedules``: its name, its specification
(engine.timespec), the change it makes (a template: kind, summary, data and
tasks, run one after the other), whether it is paused, what to do with the
slots missed while nothing ran, and its next slot. The ScheduleManager, one
of the Overlord's managers, looks at each ensure pass, by the State's clock,
for the schedules whose next slot has come; for each it inserts the slot
into ``schedule_runs`` (primary key: schedule and slot) and makes the change
only when that insert took: a slot runs at most once, whatever the number
of hosts. docs/runner.md ("Schedules") tells how to use it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from . import _time
from ._values import check_name, dump_value
from .errors import NotFoundError
from .events import Lookout, begin_write, lock_key, poke, sql_store
from .session import Session, StateFace, session_of
from .timespec import Spec, parse_spec

if TYPE_CHECKING:
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.schedules")

Missed = Literal["skip", "once"]
#: RUN_RETENTION is how long the record of a slot's run is kept (its key guards the slot only while it is due).
RUN_RETENTION = timedelta(days=7)
#: The most missed slots a schedule's catch-up looks through (a minutely cron after years down stops there).
_MAX_MISSED = 100_000


@dataclass(frozen=True)
class Schedule:
    """Schedule is one schedule as stored: when it is due and the change it makes then."""

    name: str
    spec: str
    template: dict[str, Any]
    paused: bool
    #: missed: after downtime, "skip" the slots that passed, or run "once" for them.
    missed: str
    #: next_time: the next slot (None while paused); last_time: the last slot run.
    next_time: datetime | None
    last_time: datetime | None
    created: datetime

    def to_json(self) -> dict[str, Any]:
        """to_json is the schedule as the REST API shows it."""
        return {"name": self.name, "spec": self.spec, "template": self.template, "paused": self.paused,
                "missed": self.missed, "next-time": _time.opt_to_text(self.next_time),
                "last-time": _time.opt_to_text(self.last_time), "created": _time.to_text(self.created)}


def _from_row(row: Any) -> Schedule:
    name, spec, template, paused, missed, next_time, last_time, created = row
    return Schedule(str(name), str(spec), json.loads(template), bool(paused), str(missed),
                    None if paused else _time.opt_from_text(next_time), _time.opt_from_text(last_time),
                    _time.from_text(created))


def _row(s: Schedule, next_time: datetime | None) -> tuple[Any, ...]:
    return (s.name, s.spec, json.dumps(s.template), s.paused, s.missed, _time.opt_to_text(next_time),
            _time.opt_to_text(s.last_time), _time.to_text(s.created))


def check_template(template: Any, what: str) -> dict[str, Any]:
    """check_template returns template if it can make a change: {"kind", "summary", "data"?, "tasks": [...]}."""
    if not isinstance(template, dict):
        raise TypeError(f"cannot use the template of {what}: it must be a dict, not {type(template).__name__}")
    for key in ("kind", "summary"):
        check_name(template.get(key), f"{key} of the template of {what}")
    tasks = template.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"cannot use the template of {what}: it needs a list of tasks")
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise TypeError(f"cannot use task {i} of the template of {what}: it must be a dict")
        for key in ("kind", "summary"):
            check_name(t.get(key), f"{key} of task {i} of the template of {what}")
        if not isinstance(t.get("data", {}), dict):
            raise TypeError(f"cannot use task {i} of the template of {what}: its data must be a dict")
    if not isinstance(template.get("data", {}), dict):
        raise TypeError(f"cannot use the template of {what}: its data must be a dict")
    unknown = set(template) - {"kind", "summary", "data", "tasks"}
    if unknown:
        raise ValueError(f"cannot use the template of {what}: unknown keys {sorted(unknown)}")
    dump_value("template", template, what)
    return template


def _spec(text: str, name: str) -> Spec:
    try:
        return parse_spec(text)
    except ValueError as e:
        raise ValueError(f"cannot add schedule {name!r}: {e}") from None


def _get(w: UnitOfWork, name: str) -> Schedule | None:
    store = sql_store(w.store)
    rows = store.query(store.sql["schedule"], (name,))
    return _from_row(rows[0]) if rows else None


def _must(w: UnitOfWork, name: str) -> Schedule:
    s = _get(w, name)
    if s is None:
        raise NotFoundError(f"cannot find schedule {name!r}")
    return s


def _save(w: UnitOfWork, s: Schedule, next_time: datetime | None) -> None:
    store = sql_store(w.store)
    begin_write(w)
    store.execute(store.sql["upsert_schedule"], _row(s, next_time))


def add(session: Session, name: str, spec: str, template: dict[str, Any], missed: Missed = "skip") -> Schedule:
    """add makes (or replaces) the schedule name; its first slot is the first after now."""
    w = session.uow
    w.check()
    name = check_name(name, "schedule name")
    if not name:
        raise ValueError("cannot add a schedule with an empty name")
    if missed not in ("skip", "once"):
        raise ValueError(f"cannot add schedule {name!r}: missed must be 'skip' or 'once', not {missed!r}")
    parsed = _spec(spec, name)
    check_template(template, f"schedule {name!r}")
    now = w.now()
    try:
        first = parsed.next_slot(now)
    except ValueError as e:
        raise ValueError(f"cannot add schedule {name!r}: {e}") from None
    old = _get(w, name)
    s = Schedule(name, spec, template, old.paused if old else False, missed, first,
                 old.last_time if old else None, old.created if old else now)
    _save(w, s, first)
    poke(w)
    session.state.ensure_before(max(0.0, (first - now).total_seconds()))
    return _must(w, name)


def listing(session: Session) -> list[Schedule]:
    """listing is every schedule, by name."""
    w = session.uow
    w.check()
    store = sql_store(w.store)
    return [_from_row(r) for r in store.query(store.sql["schedules"])]


def get(session: Session, name: str) -> Schedule | None:
    """get is the schedule name, or None."""
    session.uow.check()
    return _get(session.uow, name)


def remove(session: Session, name: str) -> None:
    """remove deletes a schedule (and the record of its runs; the changes it made stay)."""
    w = session.uow
    w.check()
    _must(w, name)
    store = sql_store(w.store)
    begin_write(w)
    store.execute(store.sql["delete_schedule"], (name,))


def pause(session: Session, name: str) -> Schedule:
    """pause keeps a schedule from making changes until it is resumed."""
    w = session.uow
    w.check()
    s = _must(w, name)
    _save(w, Schedule(s.name, s.spec, s.template, True, s.missed, None, s.last_time, s.created), None)
    return _must(w, name)


def resume(session: Session, name: str) -> Schedule:
    """resume lets a paused schedule make changes again, from its first slot after now."""
    w = session.uow
    w.check()
    s = _must(w, name)
    now = w.now()
    first = _spec(s.spec, name).next_slot(now)
    _save(w, Schedule(s.name, s.spec, s.template, False, s.missed, first, s.last_time, s.created), first)
    poke(w)
    session.state.ensure_before(max(0.0, (first - now).total_seconds()))
    return _must(w, name)


def run_now(session: Session, name: str) -> Any:
    """run_now makes the schedule's change now, whatever its slots (paused or not); its slots stay as they were.

    It returns the Change (engine.statebooks types it: this module sits below engine.change).
    """
    w = session.uow
    w.check()
    s = _must(w, name)
    now = w.now()
    chg = _make_change(session.state, s, None)
    store = sql_store(w.store)
    begin_write(w)
    store.execute(store.sql["insert_schedule_run"], (name, "now " + _time.to_text(now), int(chg.id),
                                                     _time.to_text(now)))
    return chg


def _make_change(st: StateFace, s: Schedule, slot: datetime | None) -> Any:
    t = s.template
    chg = st.new_change(t["kind"], t["summary"])
    for key, value in t.get("data", {}).items():
        chg.set(key, value)
    chg.set("schedule", s.name)
    if slot is not None:
        chg.set("schedule-slot", _time.to_text(slot))
    prev = None
    for spec in t["tasks"]:
        task = st.new_task(spec["kind"], spec["summary"])
        for key, value in spec.get("data", {}).items():
            task.set(key, value)
        if prev is not None:
            task.wait_for(prev)
        chg.add_task(task)
        prev = task
    return chg


class ScheduleManager:
    """ScheduleManager is the Overlord's manager that runs the schedules whose slot has come (the State's clock)."""

    def __init__(self, state: StateFace, *, session: Session | None = None) -> None:
        self._st = state
        self._session = session if session is not None else session_of(state)  # the Overlord's, or taken here
        self._lookout = Lookout()
        self._next_prune: datetime | None = None

    def ensure(self) -> None:
        """ensure runs the due schedules and asks for a pass at the next slot."""
        st = self._st
        if not self._lookout.should_look(self._session):
            return
        with st:
            w = self._session.uow
            store = sql_store(w.store)
            now = w.now()
            for row in store.query(store.sql["due_schedules"], (_time.to_text(now),)):
                self._due(w, str(row[0]), now)
            nxt = store.query(store.sql["next_schedule"])
            due = _time.from_text(nxt[0][0]) if nxt and nxt[0][0] is not None else None
            if due is not None:
                st.ensure_before(max(0.0, (due - now).total_seconds()))
            self._lookout.looked(self._session, due)
            if self._next_prune is None or now >= self._next_prune:
                self._next_prune = now + timedelta(hours=1)
                begin_write(w)
                store.execute(store.sql["delete_old_schedule_runs"], (_time.to_text(now - RUN_RETENTION),))

    def _due(self, w: UnitOfWork, name: str, now: datetime) -> None:
        store = sql_store(w.store)
        lock_key(store, "schedule:" + name)  # PostgreSQL: one host at a time looks at it (the key is the guarantee)
        rows = store.query(store.sql["schedule"], (name,))
        if not rows:
            return
        s = _from_row(rows[0])
        if s.paused or s.next_time is None or s.next_time > now:
            return  # another host ran it meanwhile
        try:
            spec = parse_spec(s.spec)
        except ValueError as e:  # edited by hand: said once per pass, the others run
            log.error("schedule %r cannot run: %s", name, e)
            return
        slot = s.next_time
        following = spec.next_slot(slot)
        run: datetime | None = slot
        if following <= now:  # slots were missed (nothing ran): skip them, or run once for the latest
            latest = following
            for _ in range(_MAX_MISSED):
                n = spec.next_slot(latest)
                if n > now:
                    break
                latest = n
            run = latest if s.missed == "once" else None
            log.info("schedule %r missed its slots from %s to %s: %s", name, _time.to_text(slot),
                     _time.to_text(latest), "running it once" if run else "skipped")
        last = s.last_time
        if run is not None and self._claim_slot(w, s, run, now):
            last = run
        nxt = spec.next_slot(max(now, run or now))
        _save(w, Schedule(s.name, s.spec, s.template, False, s.missed, nxt, last, s.created), nxt)

    def _claim_slot(self, w: UnitOfWork, s: Schedule, slot: datetime, now: datetime) -> bool:
        """_claim_slot records the slot's run and makes its change, unless the slot ran already (any host)."""
        store = sql_store(w.store)
        begin_write(w)
        took = store.execute(store.sql["insert_schedule_run"], (s.name, _time.to_text(slot), None,
                                                               _time.to_text(now)))
        if took != 1:
            log.debug("schedule %r: slot %s ran already", s.name, _time.to_text(slot))
            return False
        chg = _make_change(self._st, s, slot)
        begin_write(w)
        store.execute(store.sql["set_schedule_run_change"], (int(chg.id), s.name, _time.to_text(slot)))
        log.info("schedule %r: slot %s made change %s", s.name, _time.to_text(slot), chg.id)
        return True
