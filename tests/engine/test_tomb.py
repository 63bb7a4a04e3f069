# SPDX-License-Identifier: GPL-3.0-or-later
"""Tomb: what a handler sees of its tomb, whether the runner kills it before or after the handler looks.

The tomb makes its threading.Event only when asked for it; these tests hold
that a tomb killed first still shows a set Event, and that a kill wakes a
handler already waiting on it, in another thread or in an async handler.
"""

from __future__ import annotations

import asyncio
import threading

from engine import Tomb

TIMEOUT = 30.0


def test_a_tomb_killed_before_anyone_looks_is_dying_every_way() -> None:
    tomb = Tomb()
    assert not tomb.is_dying()
    tomb.kill()
    tomb.kill()  # idempotent
    assert tomb.is_dying()
    assert tomb.dying.is_set()
    assert tomb.wait_dying(0)
    assert repr(tomb) == "<Tomb dying>"


def test_a_kill_wakes_a_handler_waiting_on_the_event() -> None:
    tomb = Tomb()
    assert not tomb.wait_dying(0)
    assert repr(tomb) == "<Tomb alive>"
    woke = threading.Event()

    def handler() -> None:
        if tomb.dying.wait(TIMEOUT):
            woke.set()

    t = threading.Thread(target=handler)
    t.start()
    tomb.kill()
    t.join(TIMEOUT)
    assert woke.is_set()


def test_the_event_set_by_hand_counts_as_dying() -> None:
    tomb = Tomb()
    tomb.dying.set()
    assert tomb.is_dying()


def test_until_dying_returns_on_a_kill_and_at_once_after_one() -> None:
    async def main() -> None:
        tomb = Tomb()
        waiter = asyncio.ensure_future(tomb.until_dying())
        await asyncio.sleep(0)
        assert not waiter.done()
        threading.Thread(target=tomb.kill).start()
        await asyncio.wait_for(waiter, TIMEOUT)
        await asyncio.wait_for(tomb.until_dying(), TIMEOUT)  # dying already: returns at once

    asyncio.run(main())
