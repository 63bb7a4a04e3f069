# SPDX-License-Identifier: GPL-3.0-or-later
"""Worker threads and the event loop that run handlers."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("engine.taskrunner")


class Workers:
    """Workers is a bounded pool of daemon threads, started on demand.

    Daemon threads: a handler that never returns cannot keep the process
    from exiting (the runner's stop() gives up on it after its bound).
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[[], None]) -> None:
        """submit runs fn on a worker thread."""
        spawn = False
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self._size:
                self._threads += 1
                spawn = True
        self._queue.put(fn)
        if spawn:
            threading.Thread(target=self._loop, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # fn reports its own outcome; this is a bug
                log.exception("internal error: worker job failed")
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """shutdown lets idle threads exit; busy ones exit after their job."""
        with self._lock:
            n, self._threads, self._idle = self._threads, 0, 0
        for _ in range(n):
            self._queue.put(None)


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
