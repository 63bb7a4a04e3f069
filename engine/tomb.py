# SPDX-License-Identifier: GPL-3.0-or-later
"""Tomb: how the runner tells a running handler to stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class Tomb:
    """Tomb is handed to every handler; it starts dying when the task is aborted
    or the runner stops, and the handler should then return (or raise Retry).
    """

    __slots__ = ("_callbacks", "_lock", "dying")

    def __init__(self) -> None:
        #: dying is set once the handler is asked to stop.
        self.dying = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Tomb {'dying' if self.dying.is_set() else 'alive'}>"

    def is_dying(self) -> bool:
        """is_dying returns whether the handler was asked to stop."""
        return self.dying.is_set()

    def kill(self) -> None:
        """kill asks the handler to stop; it is idempotent."""
        with self._lock:
            if self.dying.is_set():
                return
            self.dying.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def wait_dying(self, timeout: float | None = None) -> bool:
        """wait_dying blocks until the tomb is dying (True) or the timeout passes (False)."""
        return self.dying.wait(timeout)

    async def until_dying(self) -> None:
        """until_dying waits, in an async handler, until the tomb is dying."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            if not self.dying.is_set():
                self._callbacks.append(lambda: _wake(loop, event))
            else:
                event.set()
        await event.wait()


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    loop.call_soon_threadsafe(event.set)
