# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain whose handlers add the next step (and may finish their own task), on PostgreSQL (the peers' chains,
`python -m bench.peers`, engine-spawn and engine-spawn-done): the handler's commit leaves its change's status to
its outcome, which claims the next step, so the change never shows Do between two steps and is neither locked
nor counted by the handler's commit; with two hosts it still ends Done, stored Done (docs/runner.md, "Handing
on").
"""

from __future__ import annotations

from typing import Any

from engine import Overlord, Status, Task
from engine.session import session_of
from engine.tomb import Tomb
from tests.support.helpers import spawn_first, spawn_next
from tests.support.pgcluster import connect

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion
STEPS = 20


def _step(task: Task, tomb: Tomb, finish: bool = True) -> None:
    """_step adds the next step of the chain, waiting for this one, and sets this one Done (finish), in one block."""
    spawn_next(task, STEPS, finish)


def test_a_self_finishing_spawned_chain_never_shows_its_change_between_two_steps(overlord: Overlord) -> None:
    """One change-update notice each way (spawned, Doing, Done): never Do, with no task Doing, between two steps."""
    o = overlord
    o.task_runner.add_handler("step", _step)
    chg = spawn_first(o.state)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE
        assert len(chg.tasks()) == STEPS and all(t.status is Status.DONE for t in chg.tasks())
        (notice,) = o.state.notices(types=["change-update"], keys=[chg.id])
    assert notice.occurrences == 3


def test_two_hosts_run_a_self_finishing_spawned_chain_to_a_stored_done(pg_url: str) -> None:
    """Either host may claim a step; the status each handler's commit leaves to its outcome is always stored."""
    hosts = [Overlord(url=pg_url, workers=2) for _ in range(2)]
    try:
        for o in hosts:
            o.task_runner.add_handler("step", _step)
        chg = spawn_first(hosts[0].state)
        with hosts[0].state:
            cid = int(chg.id)
        for o in hosts:
            o.loop()
        assert chg.wait_ready(WAIT)
    finally:
        for o in hosts:
            o.stop()
            o.state.close()
    reader = connect(pg_url)
    try:
        row = reader.execute("SELECT c.status, c.ready_time IS NOT NULL, count(t.id), "
                             "count(*) FILTER (WHERE t.status = 'Done') FROM changes c JOIN tasks t "
                             "ON t.change_id = c.id WHERE c.id = %s GROUP BY c.id", (cid,)).fetchone()
    finally:
        reader.close()
    assert row is not None
    assert (str(row[0]), bool(row[1]), row[2], row[3]) == ("Done", True, STEPS, STEPS)


def test_a_handler_adding_the_next_step_commits_without_locking_its_change(overlord: Overlord) -> None:
    """The handler's task is Doing: its block cannot move the change's status, so its commit neither locks nor
    counts the change's row (its outcome's unit settles it), and the change still goes Do -> Doing -> Done."""
    o = overlord
    store: Any = session_of(o.state).uow.store
    settled: list[str] = []

    def spying(name: str) -> Any:
        fn = getattr(store, name)

        def spy(*args: Any) -> Any:
            settled.append(name)
            return fn(*args)
        return spy

    for name in ("locked_change_rows", "keep_changes"):
        setattr(store, name, spying(name))
    by_block: list[list[str]] = []

    def step(task: Task, tomb: Tomb) -> None:
        before = len(settled)
        _step(task, tomb, finish=False)
        by_block.append(settled[before:])

    o.task_runner.add_handler("step", step)
    chg = spawn_first(o.state)
    o.loop()
    assert chg.wait_ready(WAIT)
    with o.state:
        assert chg.status is Status.DONE
        assert len(chg.tasks()) == STEPS and all(t.status is Status.DONE for t in chg.tasks())
        (notice,) = o.state.notices(types=["change-update"], keys=[chg.id])
    assert notice.occurrences == 3
    assert by_block[:-1] == [[]] * (STEPS - 1), by_block  # (the last block adds nothing)
    assert settled  # the outcomes' units settle it
