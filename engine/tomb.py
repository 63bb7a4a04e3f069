# SPDX-License-Identifier: GPL-3.0-or-later
"""Tomb: how the runner tells a running handler to stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import Retry


class Tomb:
    """Tomb is handed to every handler; it starts dying when the task is aborted
    or the runner stops, and the handler should then return (or raise Retry).
    """

    __slots__ = ("_callbacks", "_dead", "_event", "_lock", "_watching")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dead = False
        # The Event of `dying`, made when first asked for (most handlers never ask: a run of a chain
        # would otherwise pay for an Event and its Condition).
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[], None]] = []
        # How many until_dying() calls are waiting: a handler that watches the tomb stops by itself.
        self._watching = 0

    def __repr__(self) -> str:
        return f"<Tomb {'dying' if self._dead else 'alive'}>"

    @property
    def dying(self) -> threading.Event:
        """dying is a threading.Event set once the handler is asked to stop."""
        event = self._event
        if event is None:
            with self._lock:
                event = self._event
                if event is None:
                    event = threading.Event()
                    if self._dead:
                        event.set()
                    self._event = event
        return event

    def is_dying(self) -> bool:
        """is_dying returns whether the handler was asked to stop."""
        return self._dead

    def kill(self) -> None:
        """kill asks the handler to stop; it is idempotent."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
            if self._event is not None:
                self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def wait_dying(self, timeout: float | None = None) -> bool:
        """wait_dying blocks until the tomb is dying (True) or the timeout passes (False)."""
        if self._dead:
            return True
        return self.dying.wait(timeout)

    async def until_dying(self) -> None:
        """until_dying waits, in an async handler, until the tomb is dying."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            if not self._dead:
                self._callbacks.append(lambda: _wake(loop, event))
            else:
                event.set()
        self._watching += 1
        try:
            await event.wait()
        finally:
            self._watching -= 1


    async def follow(self, awaitable: Awaitable[Any]) -> Any:
        """follow awaits awaitable and cancels it when the tomb starts dying (the runner's async handlers).

        The cancellation raises asyncio.CancelledError inside the handler at
        its next await, unless the handler is awaiting until_dying() (then
        it stops by itself, as it chose); if it ends so, follow raises Retry: the task runs
        again at the next start (the runner stopped), is undone (it was
        aborted) or waits for the next ensure (stop_kinds). A handler that
        catches the cancellation and returns, or raises something else,
        has that outcome as usual.
        """
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        state = {"done": False, "cancelled": False}

        def cancel_unwatched() -> None:
            if not self._watching and not state["done"] and current is not None:
                state["cancelled"] = True
                current.cancel()

        def cancel() -> None:
            loop.call_soon_threadsafe(cancel_unwatched)

        with self._lock:
            dying = self._dead
            if not dying:
                self._callbacks.append(cancel)
        if dying:
            cancel()
        try:
            # Awaited in the caller's own task: what the handler raises (SystemExit too) stays its outcome.
            return await awaitable
        except asyncio.CancelledError:
            if state["cancelled"] and current is not None:
                current.uncancel()
                raise Retry(reason="") from None
            raise
        finally:
            state["done"] = True
            with self._lock:
                if cancel in self._callbacks:
                    self._callbacks.remove(cancel)


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    loop.call_soon_threadsafe(event.set)
