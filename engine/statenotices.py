# SPDX-License-Identifier: GPL-3.0-or-later
"""StateNotices: the State's notices, added and read under the lock, waited for without it.

A part of engine.state.State (its notices' members), kept in its own module:
the waiters are woken by the commit that adds or repeats a notice (on
PostgreSQL, by any host's commit, through LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableSet
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _time

if TYPE_CHECKING:
    from .notice import Notice
    from .store import Store
    from .unitofwork import UnitOfWork

#: How long the first notice waiter on a shared store waits for its LISTEN to be in place (seconds).
LISTEN_START = 5.0


class StateNotices:
    """StateNotices is what a State does with notices (engine.state.State inherits it)."""

    _uow: UnitOfWork
    _store: Store
    _lock: threading.RLock
    _closed: bool
    _notice_cond: threading.Condition
    _notice_seq: int
    _notice_waiters: MutableSet[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    _listener: threading.Thread | None
    _listen_stop: threading.Event

    if TYPE_CHECKING:
        def _check(self) -> None: ...

        def _held(self) -> bool: ...

        def __enter__(self) -> Any: ...

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

    def add_notice(self, type: str, key: str, *, data: Mapping[str, str] | None = None,
                   repeat_after: float | timedelta | None = None,
                   expire_after: float | timedelta | None = None) -> str:
        """add_notice records an occurrence of the notice of type and key and returns the notice's id.

        An existing notice of that type and key counts one more occurrence,
        takes data as its last data, and is repeated (waiters see it again)
        unless it was repeated less than repeat_after ago (None or 0: every
        occurrence repeats). It expires expire_after (default 7 days) after
        its last occurrence. type is lowercase words joined by "-"; key is
        non-empty text of at most 256 bytes; data maps str to str. The
        notice is written, and waiters woken, by the commit.
        """
        self._check()
        return self._uow.notices.add(type, key, data, repeat_after, expire_after)

    def notices(self, after: datetime | None = None, types: Iterable[str] | None = None,
                keys: Iterable[str] | None = None) -> list[Notice]:
        """notices returns the unexpired notices repeated after a time, of the given types and keys, oldest first.

        None (or an empty list) for types or keys means any. The order is
        that of last_repeated; a client passes the last_repeated of the last
        notice it saw as after to see only what came since.
        """
        self._check()
        return self._uow.notices.matching(after, _strs(types, "types"), _strs(keys, "keys"))

    def wait_notices(self, after: datetime | None = None, types: Iterable[str] | None = None,
                     keys: Iterable[str] | None = None, timeout: float | None = None) -> list[Notice]:
        """wait_notices waits, WITHOUT the lock, until notices match, and returns them ([] after timeout).

        It returns at once when some match already; otherwise it is woken
        by the commit that adds or repeats one (on PostgreSQL, by any
        host's commit through LISTEN/NOTIFY, and it looks again at least
        every POLL_INTERVAL). timeout None waits until a notice comes or
        the State closes.
        """
        if self._held():
            raise RuntimeError("cannot wait for notices while holding the state lock")
        type_list, key_list = _strs(types, "types"), _strs(keys, "keys")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        poll = self._shared_poll()
        while True:
            with self._notice_cond:
                seq = self._notice_seq
            if self._closed:
                return []
            with self:
                found = self._uow.notices.matching(after, type_list, key_list)
            if found:
                return found
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            with self._notice_cond:
                if self._notice_seq == seq and not self._closed:
                    wait = left if poll is None else (poll if left is None else min(poll, left))
                    self._notice_cond.wait(wait)

    async def wait_notices_async(self, after: datetime | None = None, types: Iterable[str] | None = None,
                                 keys: Iterable[str] | None = None,
                                 timeout: float | None = None) -> list[Notice]:
        """wait_notices_async is wait_notices for asyncio: it awaits the commit that adds one, without a thread.

        The lock is taken only for the short look at the notices table,
        and never by blocking the event loop: when another thread holds it,
        that look runs in a worker thread (asyncio.to_thread).
        """
        type_list, key_list = _strs(types, "types"), _strs(keys, "keys")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        poll = self._shared_poll()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._notice_cond:
            self._notice_waiters.add(waiter)
        try:
            while True:
                event.clear()
                if self._closed:
                    return []
                found: list[Notice] = await self._locked_async(
                    lambda: self._uow.notices.matching(after, type_list, key_list))
                if found:
                    return found
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return []
                wait = left if poll is None else (poll if left is None else min(poll, left))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
        finally:
            with self._notice_cond:
                self._notice_waiters.discard(waiter)

    async def _locked_async(self, fn: Callable[[], Any]) -> Any:
        """_locked_async calls fn under the lock without blocking the event loop (a thread only when it is busy)."""
        if self._lock.acquire(blocking=False):
            try:
                with self:
                    return fn()
            finally:
                self._lock.release()
        return await asyncio.to_thread(self._locked_call, fn)

    def _locked_call(self, fn: Callable[[], Any]) -> Any:
        with self:
            return fn()

    def _notices_woken(self) -> None:
        """_notices_woken wakes every notice waiter (a commit added or repeated notices)."""
        with self._notice_cond:
            self._notice_seq += 1
            self._notice_cond.notify_all()
            waiters = list(self._notice_waiters)
        for loop, event in waiters:
            call_soon(loop, event.set)

    def _shared_poll(self) -> float | None:
        """_shared_poll starts listening to other hosts' notices on a shared store; it returns the poll interval."""
        if not self._store.shared:
            return None

        listen = getattr(self._store, "listen", None)
        listening = threading.Event()
        with self._notice_cond:
            if listen is not None and self._listener is None and not self._closed:
                from .store.postgresql import NOTICE_CHANNEL

                self._listener = threading.Thread(target=listen, args=(self._notices_woken, self._listen_stop,
                                                                       NOTICE_CHANNEL, listening),
                                                  name="engine-notices", daemon=True)
                self._listener.start()
            else:
                listening.set()
        # What is committed from now on wakes this waiter (bounded: the polling covers a server away).
        listening.wait(LISTEN_START)
        return _time.POLL_INTERVAL


def _strs(values: Iterable[str] | None, what: str) -> list[str] | None:
    """_strs checks a filter of notice types or keys: None or strings."""
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"cannot filter notices: {what} must be strings, not {out!r}")
    return out


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """call_soon calls fn in loop's thread, soon; nothing if the loop closed (its waiter is gone)."""
    with contextlib.suppress(RuntimeError):  # the loop closed: its waiter is gone
        loop.call_soon_threadsafe(fn)
