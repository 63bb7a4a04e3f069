# SPDX-License-Identifier: GPL-3.0-or-later
"""Work: what Change, Task, prune, warnings and manager tables use of the State's unit of work.

engine.unitofwork.UnitOfWork is the one implementation; the protocol lets
the lower modules name what they need without importing the module above
them. The handles (task_handle, change_handle) are typed where they are
used, since the handle classes live above this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ._records import ChangeRec, TaskRec
from .status import Status

if TYPE_CHECKING:
    import threading

    from .cache import RecordCache
    from .changeset import ChangeSet
    from .store import Store


class Work(Protocol):
    """Work is the engine's internal interface to a State (see engine.unitofwork)."""

    #: The State (the public one, for handles' .state).
    state: Any
    store: Store
    #: records are the loaded records, by id, and their lookups (the identity map, engine.cache).
    records: RecordCache
    #: changeset notes what is to be written and what the commit wakes (engine.changeset).
    changeset: ChangeSet
    task_hooks: dict[int, Any]
    #: hook_failures, when a list, collects what the status hooks raise (the runner's recorder).
    hook_failures: list[tuple[Any, Any, BaseException]] | None
    warnings: Any
    #: The notices (engine.notice.NoticeBook).
    notices: Any
    #: The idempotency and affected keys (engine.keys.KeyBook).
    keys: Any
    #: The timings not written yet (engine.timings.TimingBook).
    timings: Any
    change_hooks: dict[int, Any]
    #: Called as a change becomes ready (a runner that hands on): whether it marked the change's tasks clean.
    ready_hook: Callable[[ChangeRec], bool] | None
    #: For the runner's cycle check: changes whose tasks got new edges (None: every change), tasks moved
    #: into Do or Undo (engine.statusrules.revive).
    new_waits: set[int] | None
    revived: set[int]
    #: The changes with tasks in Wait, once loaded (None: not yet; waiting_changes() loads them).
    waiting_known: set[int] | None
    waiters: dict[int, threading.Event]
    async_waiters: dict[int, list[tuple[Any, Any]]]

    def check(self) -> None:
        """check raises RuntimeError unless this thread holds the state lock."""

    def held(self) -> bool:
        """held says whether this thread holds the state lock."""

    def locked_async(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """locked_async calls fn under the state lock without blocking the event loop."""

    def now(self) -> datetime:
        """now is the State clock's time."""

    def flush(self) -> None:
        """flush writes what changed into the open transaction."""

    def next_id(self, name: str) -> int:
        """next_id hands out the next id of a sequence."""

    def change_updated(self, rec: ChangeRec) -> None:
        """change_updated records a change-update notice for a change whose status moved."""

    def task_handle(self, rec: TaskRec) -> Any:
        """task_handle is the public Task of a record."""

    def change_handle(self, rec: ChangeRec) -> Any:
        """change_handle is the public Change of a record."""

    def change_status(self, crec: ChangeRec) -> Status:
        """change_status is a change's status."""

    def set_task_status(self, rec: TaskRec, new: Status) -> None:
        """set_task_status moves a task to new."""

    def dirty_task(self, rec: TaskRec) -> None:
        """dirty_task notes a task to write."""

    def dirty_change(self, rec: ChangeRec) -> None:
        """dirty_change notes a change to write."""

    def own_change(self, rec: ChangeRec) -> None:
        """own_change locks a change's row before what people set on it is read or changed (shared stores)."""

    def touch(self, cid: int) -> None:
        """touch notes a change whose status to store again."""

    def note_runnable(self) -> None:
        """note_runnable notes that tasks may have become runnable."""

    def note_waits(self, tids: Iterable[int]) -> None:
        """note_waits notes tasks that got new edges."""

    def waiting_changes(self) -> set[int]:
        """waiting_changes are the changes with tasks in Wait."""

    def add_log(self, rec: TaskRec, level: str, message: str) -> None:
        """add_log adds a line to a task's log."""

    def add_edge(self, rec: TaskRec, wait: TaskRec) -> None:
        """add_edge makes rec wait for wait."""

    def add_lane(self, rec: TaskRec, lane: int) -> None:
        """add_lane puts a task in a lane."""
