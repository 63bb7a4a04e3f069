# SPDX-License-Identifier: GPL-3.0-or-later
"""StateBooks: the State's books beside its changes: warnings, timings, events, schedules, manager tables, hooks.

A part of engine.state.State (those members), kept in its own module; each
book lives in its own module (engine.warning, engine.timings, engine.events,
engine.schedules, engine.tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from . import _time
from . import schedules as _schedules
from .events import emit as _emit
from .schedules import Schedule
from .status import Status

if TYPE_CHECKING:
    from sqlalchemy import Table

    from .change import Change
    from .session import Session
    from .tables import TableRows
    from .task import Task
    from .timings import EnsureTiming
    from .unitofwork import UnitOfWork
    from .warning import StateWarning

#: A task status hook: fn(task, old, new) (State.add_task_status_changed_handler).
TaskHook = Callable[["Task", Status, Status], Any]
#: A change status hook: fn(change, old, new) (State.add_change_status_changed_handler).
ChangeHook = Callable[["Change", Status, Status], Any]


class StateBooks:
    """StateBooks is what a State keeps beside its changes (engine.state.State inherits it)."""

    _uow: UnitOfWork
    _session: Session
    _hook_ids: Iterator[int]

    if TYPE_CHECKING:
        def _check(self) -> None: ...

    # -- warnings -----------------------------------------------------------------

    def add_warning(self, message: str, *, repeat_after: float | timedelta | None = None,
                    expire_after: float | timedelta | None = None) -> None:
        """add_warning records a warning, or refreshes the one with the same message."""
        self._check()
        self._uow.warnings.add(message, repeat_after, expire_after)

    def warnings(self) -> list[StateWarning]:
        """warnings returns the warnings due to be shown, oldest first."""
        self._check()
        return self._uow.warnings.pending_warnings()

    def all_warnings(self) -> list[StateWarning]:
        """all_warnings returns every unexpired warning, oldest first."""
        self._check()
        return self._uow.warnings.all()

    def ensure_timings(self, manager: str | None = None) -> list[EnsureTiming]:
        """ensure_timings returns the kept slow ensure passes, oldest first (with manager: those it ran in)."""
        self._check()
        return self._uow.timings.ensure_timings(manager)

    def okay_warnings(self, t: datetime) -> int:
        """okay_warnings marks the warnings due at t as shown and returns how many."""
        self._check()
        return self._uow.warnings.okay(_time.utc(t, "okay_warnings time"))

    # -- notices ------------------------------------------------------------------

    def emit(self, key: str, data: Any = None) -> int:
        """emit records an event of key and hands data to every task waiting for it; it returns how many.

        Each waiting task gets the event once: it goes back to Do, and its
        handler's task.wait_event(key) returns data. data is JSON. The event
        and the deliveries are written by this unit of work's commit.
        """
        self._check()
        return _emit(self._session, key, data)

    # -- schedules (engine.schedules) ----------------------------------------------

    def add_schedule(self, name: str, spec: str, template: dict[str, Any], *,
                     missed: Literal["skip", "once"] = "skip") -> Schedule:
        """add_schedule makes (or replaces) a schedule: when spec is due, a change is made from template.

        spec is cron's syntax ("*/15 * * * *") or snapd's timer syntax
        ("mon-fri,10:00"); template is {"kind", "summary", "data"?, "tasks":
        [{"kind", "summary", "data"?}, ...]} (the tasks run one after the
        other); missed says what to do with the slots that passed while
        nothing ran: "skip" them or run "once". See docs/runner.md.
        """
        self._check()
        return _schedules.add(self._session, name, spec, template, missed)

    def schedules(self) -> list[Schedule]:
        """schedules lists the schedules, by name."""
        return _schedules.listing(self._session)

    def schedule(self, name: str) -> Schedule | None:
        """schedule is the schedule of that name, or None."""
        return _schedules.get(self._session, name)

    def remove_schedule(self, name: str) -> None:
        """remove_schedule deletes a schedule (NotFoundError if there is none); its changes stay."""
        _schedules.remove(self._session, name)

    def pause_schedule(self, name: str) -> Schedule:
        """pause_schedule keeps a schedule from making changes until resume_schedule."""
        return _schedules.pause(self._session, name)

    def resume_schedule(self, name: str) -> Schedule:
        """resume_schedule runs a paused schedule again from its first slot after now."""
        return _schedules.resume(self._session, name)

    def run_schedule(self, name: str) -> Change:
        """run_schedule makes the schedule's change now ("run now"); its slots stay as they were."""
        chg: Change = _schedules.run_now(self._session, name)
        return chg

    # -- manager tables -------------------------------------------------------------

    def table(self, table: Table) -> TableRows:
        """table is this State's rows of a manager's own table, written at commit with the state (lock needed).

        table is a SQLAlchemy Table declared on engine.metadata (see engine.tables).
        """
        return self._uow.tables.rows(table)

    # -- hooks ----------------------------------------------------------------------

    def add_task_status_changed_handler(self, fn: TaskHook) -> int:
        """add_task_status_changed_handler calls fn(task, old, new) on every task status change."""
        self._check()
        hid = next(self._hook_ids)
        self._uow.task_hooks[hid] = fn
        return hid

    def remove_task_status_changed_handler(self, hid: int) -> None:
        """remove_task_status_changed_handler removes a handler added earlier."""
        self._check()
        self._uow.task_hooks.pop(hid, None)

    def add_change_status_changed_handler(self, fn: ChangeHook) -> int:
        """add_change_status_changed_handler calls fn(change, old, new) on every change status change."""
        self._check()
        hid = next(self._hook_ids)
        self._uow.change_hooks[hid] = fn
        return hid

    def remove_change_status_changed_handler(self, hid: int) -> None:
        """remove_change_status_changed_handler removes a handler added earlier."""
        self._check()
        self._uow.change_hooks.pop(hid, None)
