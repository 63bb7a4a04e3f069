# SPDX-License-Identifier: GPL-3.0-or-later
"""Worker threads and the event loop that run handlers."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("engine.taskrunner")


class Workers:
    """Workers is a bounded pool of daemon threads, started on demand.

    Daemon threads: a handler that never returns cannot keep the process
    from exiting (the runner's stop() gives up on it after its bound).

    One sleeping thread at a time is woken for the jobs waiting: the thread
    that takes a job wakes the next one (or starts one) while jobs are left,
    and a thread that finishes its job takes the next one itself. A fan-out
    of short handlers runs on the few threads that are awake rather than
    waking a thread per job (each a futex wake-up and a GIL hand-off), and a
    handler that blocks still leaves the jobs behind it to other threads.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: collections.deque[Callable[[], None] | None] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._threads = 0
        self._sleeping = 0
        self._waking = 0  # threads notified that have not taken the lock back yet

    def submit(self, fn: Callable[[], None]) -> None:
        """submit runs fn on a worker thread."""
        with self._lock:
            self._jobs.append(fn)
            self._call_one()

    def _call_one(self) -> None:
        """_call_one (lock held, jobs waiting) wakes a sleeping thread, or starts one, unless one is on its way."""
        if self._waking > 0:
            return
        if self._sleeping > self._waking:
            self._waking += 1
            self._wake.notify()
        elif self._threads < self._size:
            self._threads += 1
            self._waking += 1
            try:
                threading.Thread(target=self._loop, name=f"{self._name}-{self._threads}", daemon=True).start()
            except BaseException:
                self._threads -= 1
                self._waking -= 1
                raise

    def _loop(self) -> None:
        with self._lock:
            self._woken()  # (a new thread counts as woken until it takes the lock)
            while True:
                while not self._jobs:
                    self._sleeping += 1
                    self._wake.wait()
                    self._sleeping -= 1
                    self._woken()
                fn = self._jobs.popleft()
                if fn is None:
                    if self._jobs:
                        self._call_one()  # (jobs submitted after a shutdown, behind its sentinels)
                    return
                if self._jobs:
                    self._call_one()  # (the jobs left may wait while this one runs)
                self._lock.release()
                try:
                    fn()
                except BaseException:  # fn reports its own outcome; this is a bug
                    log.exception("internal error: worker job failed")
                finally:
                    self._lock.acquire()

    def _woken(self) -> None:
        # (Never below 0: a thread woken by shutdown's notify_all may take another's count, which only
        # lets one more thread be woken early; a count left above 0 would leave jobs waiting.)
        if self._waking > 0:
            self._waking -= 1

    def shutdown(self) -> None:
        """shutdown lets idle threads exit; busy ones exit after their job."""
        with self._lock:
            n, self._threads = self._threads, 0
            self._jobs.extend([None] * n)
            self._wake.notify_all()


class EventLoopThread:
    """EventLoopThread runs async handlers on one event loop in its own thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """submit schedules coro on the loop, starting it if needed."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            loop = self._loop
        asyncio.run_coroutine_threadsafe(coro, loop)

    def shutdown(self) -> None:
        """shutdown stops the loop once its pending callbacks ran."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
