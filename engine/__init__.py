# SPDX-License-Identifier: GPL-3.0-or-later
"""engine: changes and tasks run by do/undo handlers, persisted in SQLite or PostgreSQL.

The ideas of snapd's overlord (state, changes, tasks, task runner, state
engine, overlord) for Python daemons; every change, task and piece of state
is a row of a SQLite database, or of a PostgreSQL one that several runner
hosts share. See docs/ for the concepts.
"""

from __future__ import annotations

from .change import Change
from .errors import (
    ChangeConflictError,
    ChangeError,
    DatabaseBusyError,
    DatabaseConflictError,
    DatabaseCorruptError,
    DatabaseError,
    DatabaseFullError,
    DatabaseInUseError,
    DatabaseReplacedError,
    EngineError,
    EnsureError,
    NoStateError,
    NotFoundError,
    ReadOnlyStateError,
    Retry,
    SchemaVersionError,
    TaskDependencyCycleError,
    Wait,
)
from .eventmanager import EventManager
from .events import EventWait
from .keys import KEY_RETENTION
from .notice import Notice
from .overlord import Overlord
from .runs import Handler
from .schedules import Schedule, ScheduleManager
from .state import MISSING, State
from .stateengine import Manager, StateEngine
from .status import Status
from .tables import TableRows, metadata
from .task import Task, TaskSet
from .taskrunner import TaskRunner
from .timespec import ClockSpan, Spec, TimerSet, WeekSpan, parse_spec, parse_timer
from .timings import EnsureTiming, TaskTiming
from .tomb import Tomb
from .tracing import disable_tracing, enable_tracing, tracing_wanted
from .warning import StateWarning
from .why import TaskRef, WhyNot, add_why_not_rule, remove_why_not_rule, why_not, why_not_tasks

__all__ = [
    "KEY_RETENTION",
    "MISSING",
    "Change",
    "ChangeConflictError",
    "ChangeError",
    "ClockSpan",
    "DatabaseBusyError",
    "DatabaseConflictError",
    "DatabaseCorruptError",
    "DatabaseError",
    "DatabaseFullError",
    "DatabaseInUseError",
    "DatabaseReplacedError",
    "EngineError",
    "EnsureError",
    "EnsureTiming",
    "EventManager",
    "EventWait",
    "Handler",
    "Manager",
    "NoStateError",
    "NotFoundError",
    "Notice",
    "Overlord",
    "ReadOnlyStateError",
    "Retry",
    "Schedule",
    "ScheduleManager",
    "SchemaVersionError",
    "Spec",
    "State",
    "StateEngine",
    "StateWarning",
    "Status",
    "TableRows",
    "Task",
    "TaskDependencyCycleError",
    "TaskRef",
    "TaskRunner",
    "TaskSet",
    "TaskTiming",
    "TimerSet",
    "Tomb",
    "Wait",
    "WeekSpan",
    "WhyNot",
    "add_why_not_rule",
    "disable_tracing",
    "enable_tracing",
    "metadata",
    "parse_spec",
    "parse_timer",
    "remove_why_not_rule",
    "tracing_wanted",
    "why_not",
    "why_not_tasks",
]
