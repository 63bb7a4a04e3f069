# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs: what the TaskRunner and its recorder share, the handlers of a kind and the runs under way.

A Run is one claimed task whose handler runs or whose outcome is not
committed yet; Runs is the table of them, with the outcomes waiting for the
recorder and the conditions that signal them, under one lock (taken after
the state lock, never before).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import tenacity

from .tomb import Tomb

if TYPE_CHECKING:
    from .ledger import Ran
    from .task import Task


#: PAGE is how many candidate rows a pass reads at once (pages).
PAGE = 256
#: Blocked is pred(task, running) -> bool: whether task is held back while those run (TaskRunner.add_blocked).
Blocked = Callable[["Task", list["Task"]], bool]
#: Match is match(task) -> bool: whether optional handlers take the task (TaskRunner.add_optional_handler).
Match = Callable[["Task"], bool]


class Handler(Protocol):
    """Handler does or undoes a task: fn(task, tomb), sync or async, called without the lock."""

    def __call__(self, task: Task, tomb: Tomb, /) -> Awaitable[None] | None: ...


@dataclass(frozen=True)
class HandlerPair:
    """HandlerPair is what a runner knows of a task kind: its handlers and retry policy."""

    do: Handler | None
    undo: Handler | None
    retry: tenacity.BaseRetrying | None = None

    @functools.cached_property
    def do_async(self) -> bool:
        """do_async says whether the do handler is a coroutine function (asked once per pair, not per run)."""
        return _is_async(self.do)

    @functools.cached_property
    def undo_async(self) -> bool:
        """undo_async says whether the undo handler is a coroutine function."""
        return _is_async(self.undo)


NO_HANDLERS = HandlerPair(None, None)


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn)


@dataclass(eq=False)
class Run:
    """Run is one claimed task whose handler runs or whose outcome is not committed yet."""

    tid: int
    kind: str
    phase: Literal["do", "undo", "cleanup"]
    fn: Handler
    task: Task
    pair: HandlerPair
    tomb: Tomb = field(default_factory=Tomb)
    outcome: BaseException | None = None
    elapsed: float = 0.0
    #: ran is the run as its task records it, once its outcome is being recorded (engine.ledger).
    ran: Ran | None = None
    #: own_done: its handler's commit moved its task to Done, waking nobody: its outcome hands on (engine.handon).
    own_done: bool = False

    @property
    def is_async(self) -> bool:
        """is_async says whether its handler is a coroutine function (run on the runner's event loop)."""
        fn, pair = self.fn, self.pair
        if fn is pair.do:
            return pair.do_async
        if fn is pair.undo:
            return pair.undo_async
        return _is_async(fn)


class IdleCondition(threading.Condition):
    """IdleCondition is a Condition whose notify_all costs nothing while no thread waits (its lock held).

    It is notified after every batch of outcomes (each step of a chain);
    only wait() and stop() wait on it, seldom.
    """

    waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1

    def notify_all(self) -> None:
        if self.waiting:
            super().notify_all()


class Runs:
    """Runs is what the runner and its recorder share: claimed runs and outcomes, under one lock.

    The lock is taken after the state lock, never before.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: idle is notified whenever a run ends or a batch of outcomes is committed.
        self.idle = IdleCondition(self.lock)
        #: have_outcomes is notified when a handler reports its outcome.
        self.have_outcomes = threading.Condition(self.lock)
        #: runs are the claimed tasks whose handler runs or whose outcome is not committed yet.
        self.runs: dict[int, Run] = {}
        #: outcomes are the finished runs waiting for the recorder.
        self.outcomes: list[Run] = []
        #: uncommitted counts the outcomes taken by the recorder and not committed yet.
        self.uncommitted = 0
        #: recording: a thread (the recorder's, or a worker's after its handler) is recording outcomes.
        self.recording = False
        #: fan: the sync runs a recording worker claimed together (one kept, the others started), not reported
        #: yet; fan_in is notified when the last of them reports to a worker waiting for them (engine.outcomes).
        self.fan: set[int] = set()
        self.fan_in = threading.Condition(self.lock)
        self.fan_waiting = False
        self.stopped = False
        self.stopping = False
        #: abandoned: stop() gave up on handlers that did not return.
        self.abandoned = False
        #: Whether the last pass held tasks back (a blocked predicate, no free worker).
        self.some_blocked = False
        self.starved = False
        self.on_error: Callable[[BaseException], Any] | None = None


def check_handler(kind: str, what: str, fn: object) -> None:
    """check_handler refuses what cannot be a handler: not callable, or a generator function."""
    if fn is None:
        return
    if not callable(fn):
        raise TypeError(f"cannot register the {what} handler of {kind!r}: {fn!r} is not callable")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"cannot register the {what} handler of {kind!r}: {name} is a generator function, "
                        "whose body would never run (return or raise instead of yield)")


def pages(query: Callable[[int, int], list[tuple[Any, ...]]], size: Callable[[], int]) -> Any:
    """pages yields the rows of query(after_id, limit) page by page, asking size() for each limit."""
    after = 0
    while True:
        limit = size()
        rows = query(after, limit)
        yield from rows
        if len(rows) < limit:
            return
        after = rows[-1][0]


def execute(run: Run, report: Callable[[Run], Run | None]) -> None:
    """execute runs a sync handler on this worker thread, then those of the runs report hands back (a chain)."""
    next_run: Run | None = run
    while next_run is not None:
        run = next_run
        t0 = time.monotonic()
        try:
            result = run.fn(run.task, run.tomb)
            if result is None:
                pass  # (most handlers: nothing more to ask)
            elif inspect.isawaitable(result):  # a sync function returning a coroutine
                asyncio.run(_await(result))
            elif inspect.isgenerator(result) or inspect.isasyncgen(result):
                raise TypeError(f"the {run.phase} handler of {run.kind!r} returned a generator: its body never ran")
        except BaseException as e:  # the recorder's dispatch ladder decides (engine.outcomes)
            run.outcome = e
        run.elapsed = time.monotonic() - t0
        next_run = report(run)


async def execute_async(run: Run, report: Callable[[Run], Run | None]) -> None:
    """execute_async runs an async handler on the runner's event loop thread; its tomb's death cancels it."""
    t0 = time.monotonic()
    try:
        result = run.fn(run.task, run.tomb)
        if inspect.isawaitable(result):
            await run.tomb.follow(result)  # cancelled when the tomb dies
    except BaseException as e:  # the recorder's dispatch ladder decides (engine.outcomes)
        run.outcome = e
    run.elapsed = time.monotonic() - t0
    report(run)


async def _await(result: Awaitable[None]) -> None:
    await result
