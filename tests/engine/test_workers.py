# SPDX-License-Identifier: GPL-3.0-or-later
"""The runner's worker pool (engine._workers.Workers): jobs that block run side by side, up to the pool's size,
although one sleeping thread is woken at a time."""

from __future__ import annotations

import threading

from engine._workers import Workers

TIMEOUT = 30.0


def test_jobs_that_wait_for_each_other_all_run_at_once() -> None:
    """Each job waits for all the others: every one of them must have a thread of its own."""
    pool = Workers(8, "test-worker")
    together = threading.Barrier(8)
    met: list[bool] = []
    done = threading.Semaphore(0)

    def job() -> None:
        try:
            together.wait(TIMEOUT)
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        done.release()

    for _ in range(2):  # the second time, the threads of the first sleep and are woken
        met.clear()
        together.reset()
        for _ in range(8):
            pool.submit(job)
        for _ in range(8):
            assert done.acquire(timeout=TIMEOUT)
        assert met == [True] * 8
    pool.shutdown()


def test_a_pool_runs_jobs_again_after_a_shutdown() -> None:
    pool = Workers(2, "test-worker")
    ran = threading.Semaphore(0)
    pool.submit(ran.release)
    assert ran.acquire(timeout=TIMEOUT)
    pool.shutdown()
    for _ in range(3):
        pool.submit(ran.release)
    for _ in range(3):
        assert ran.acquire(timeout=TIMEOUT)
    pool.shutdown()


def test_more_jobs_than_threads_wait_for_a_free_one() -> None:
    """Two threads, four jobs of which two block until the last has run: the queue drains as threads free up."""
    pool = Workers(2, "test-worker")
    release = threading.Event()
    order: list[str] = []
    done = threading.Semaphore(0)

    def blocked() -> None:
        assert release.wait(TIMEOUT)
        order.append("blocked")
        done.release()

    def quick(name: str) -> None:
        order.append(name)
        if name == "last":
            release.set()
        done.release()

    pool.submit(lambda: quick("first"))
    pool.submit(blocked)
    pool.submit(lambda: quick("last"))
    for _ in range(3):
        assert done.acquire(timeout=TIMEOUT)
    assert order[-1] == "blocked"
    pool.shutdown()
