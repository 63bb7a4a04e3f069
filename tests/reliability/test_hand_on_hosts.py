# SPDX-License-Identifier: GPL-3.0-or-later
"""The hand-on under leases (PostgreSQL): the outcome of a task and the claim of the next one, with its lease,
are one transaction; what a host leaves for want of workers wakes the other hosts (docs/runner.md).
"""

from __future__ import annotations

import threading

from engine import Overlord, State, Status, Task
from engine.store.postgresql import CHANNEL
from engine.tomb import Tomb
from tests.support.helpers import chain_change
from tests.support.pgcluster import connect

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion


class Passes:
    """Passes is a manager that counts the loop's ensure passes."""

    def __init__(self) -> None:
        self.count = 0

    def ensure(self) -> None:
        self.count += 1


def test_a_chain_steps_on_without_ensure_passes_and_with_its_lease(overlord: Overlord, pg_url: str) -> None:
    """Each step is claimed, lease and all, by the commit that records the step before: no pass in between."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    reader = connect(pg_url)
    during: list[int] = []
    seen: list[tuple[str, bool, str]] = []

    def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        with task.state:
            tid = task.id
        row = reader.execute("SELECT t.status, t.runner IS NOT NULL AND t.lease_until IS NOT NULL, c.status "
                             "FROM tasks t JOIN changes c ON c.id = t.change_id WHERE t.id = %s",
                             (int(tid),)).fetchone()
        assert row is not None
        seen.append((str(row[0]), bool(row[1]), str(row[2])))

    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 20)
    o.loop()
    try:
        assert chg.wait_ready(WAIT)
    finally:
        reader.close()
    with o.state:
        assert chg.status is Status.DONE
    assert len(during) == 20
    # (A pass woken by the submit's commit, and the loop's poll on a busy machine, may still come.)
    assert during[-1] - during[0] <= 3, during
    # Each running step was committed Doing, under this host's lease; the change never showed a step between two.
    assert seen == [("Doing", True, "Doing")] * 20


def test_a_self_finishing_chain_steps_on_without_ensure_passes(overlord: Overlord, pg_url: str) -> None:
    """Each step sets its own task Done in its block: its outcome still claims the next step, lease and all."""
    o = overlord
    passes = Passes()
    o.add_manager(passes)
    reader = connect(pg_url)
    during: list[int] = []
    leased: list[bool] = []

    def step(task: Task, tomb: Tomb) -> None:
        during.append(passes.count)
        with task.state:
            tid = task.id
        row = reader.execute("SELECT runner IS NOT NULL AND lease_until IS NOT NULL FROM tasks WHERE id = %s",
                             (int(tid),)).fetchone()
        assert row is not None
        leased.append(bool(row[0]))
        with task.state:
            task.set_status(Status.DONE)

    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 20)
    o.loop()
    try:
        assert chg.wait_ready(WAIT)
    finally:
        reader.close()
    with o.state:
        assert all(t.status is Status.DONE for t in chg.tasks())
    assert len(during) == 20
    assert during[-1] - during[0] <= 3, during
    assert leased == [True] * 20


def test_a_hand_on_that_leaves_work_for_want_of_workers_wakes_the_other_hosts(overlord: Overlord,
                                                                            pg_url: str) -> None:
    """One worker, a step followed by a fan-out of three: one is handed on here, the commit notifies the others."""
    o = overlord
    listening, notified, release = threading.Event(), threading.Event(), threading.Event()
    listener = connect(pg_url)
    stop = threading.Event()

    def listen() -> None:
        listener.execute(f"LISTEN {CHANNEL}")
        listening.set()
        while not stop.is_set():
            for _ in listener.notifies(timeout=0.2, stop_after=1):
                notified.set()

    thread = threading.Thread(target=listen, daemon=True)

    def step(task: Task, tomb: Tomb) -> None:
        # The submit's commit notified already: listen only from now on.
        thread.start()
        assert listening.wait(WAIT)

    o.task_runner.add_handler("step", step)
    o.task_runner.add_handler("fan", lambda task, tomb: release.wait(WAIT) and None)
    chg = chain_change(o.state, 1, then=3)
    o.loop()
    try:
        assert notified.wait(WAIT), "the commit that handed on one of three tasks did not wake the other hosts"
    finally:
        release.set()
        assert chg.wait_ready(WAIT)
        stop.set()
        thread.join(WAIT)
        listener.close()
    with o.state:
        assert chg.status is Status.DONE


def test_a_queued_change_waits_under_the_loop_where_outcomes_hand_on(overlord: Overlord) -> None:
    """A change queued behind the one in progress is not handed on until that one is ready."""
    o = overlord
    order: list[str] = []
    done = threading.Event()

    def step(task: Task, tomb: Tomb) -> None:
        with task.state:
            order.append(task.summary)
            if task.summary == "queued":
                done.set()

    o.task_runner.add_handler("step", step)
    with o.state:
        first = o.state.new_change("test", "first", affects=["snap:hello"])
        a, b, c = (o.state.new_task("step", n) for n in ("a", "b", "c"))
        b.wait_for(a)
        c.wait_for(b)
        for t in (a, b, c):
            first.add_task(t)
        queued = o.state.new_change("test", "queued", affects=["snap:hello"], on_conflict="queue")
        queued.add_task(o.state.new_task("step", "queued"))
    o.loop()
    assert done.wait(WAIT), f"the queued change never ran: {order}"
    assert order == ["a", "b", "c", "queued"]


def test_a_change_queued_by_another_host_meanwhile_is_not_claimed(pg_url: str) -> None:
    """The queued changes a unit of work read ahead may be stale: the claim itself passes over a queued change."""
    here, other = State.open(url=pg_url), State.open(url=pg_url)
    try:
        with other:
            older = other.new_change("test", "older", affects=["snap:hello"])
            older.add_task(other.new_task("hold", "unready"))
            seed = other.new_task("noop", "a task to lock")
            older.add_task(seed)
            seed_id = int(seed.id)
        store = here._uow.store
        store.runner_id = "test-runner"
        with here:
            store.task_rows([seed_id])  # reads ahead, among others, the queued changes: none yet
            with other:  # another host queues a change whose task could run at once, and commits
                queued = other.new_change("test", "queued", affects=["snap:hello"], on_conflict="queue")
                queued.add_task(other.new_task("noop", "queued"))
            assert here._uow.keys.held() == set()  # (what was read ahead)
            claimed = [row[0] for row in store.runnable_do(0, 10)]
            store.release_claims([])  # (what this unit claimed is given back at its commit)
        with other:
            (queued_task,) = queued.tasks()
            assert int(queued_task.id) not in claimed
            assert queued_task.status is Status.DO
    finally:
        here.close()
        other.close()
