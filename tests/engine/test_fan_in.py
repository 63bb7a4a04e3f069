# SPDX-License-Identifier: GPL-3.0-or-later
"""Fan-in: under an Overlord's loop, the outcomes of the tasks claimed together by one hand-on are recorded in
one transaction (docs/runner.md, "Handing on"), without waiting long for a handler that runs long."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.outcomes
from engine import Change, Overlord, Status, Task
from engine.tomb import Tomb
from tests.support.helpers import count_writes

TIMEOUT = 30.0


@pytest.fixture
def overlord(tmp_path: Path) -> Iterator[Overlord]:
    o = Overlord(tmp_path / "state.db", workers=4)
    yield o
    o.stop()


def fan_out(o: Overlord, leaves: int) -> Change:
    """fan_out is a change of a root task and leaves tasks of kind "leaf" that wait for it."""
    st = o.state
    with st:
        chg = st.new_change("fan", f"a root and {leaves} leaves")
        root = st.new_task("root", "the root")
        chg.add_task(root)
        for i in range(leaves):
            t = st.new_task("leaf", f"leaf {i + 1}")
            t.wait_for(root)
            chg.add_task(t)
    return chg


def warm_up(o: Overlord) -> None:
    """warm_up runs 4 leaves at once under o's loop: its 4 worker threads exist (none is started in a hand-on)."""
    together = threading.Barrier(4)
    o.task_runner.add_handler("root", lambda task, tomb: None)
    o.task_runner.add_handler("leaf", lambda task, tomb: together.wait(TIMEOUT))
    chg = fan_out(o, 4)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE


def test_the_outcomes_of_tasks_claimed_together_are_one_transaction(overlord: Overlord,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The leaves the root's outcome claimed (one run by that worker, the others started) end Done in one commit."""
    o = overlord
    monkeypatch.setattr(engine.outcomes, "FAN_IN_S", TIMEOUT)  # whatever the machine's load: all of them
    writes = count_writes(o.state, monkeypatch)  # per write transaction: relaxed (committed without its own sync)
    done_at: dict[str, int] = {}  # leaf's id -> the write transactions begun before it became Done

    def hook(task: Task, old: Status, new: Status) -> None:
        if task.kind == "leaf" and new is Status.DONE:
            done_at[task.id] = len(writes)

    warm_up(o)
    with o.state:
        o.state.add_task_status_changed_handler(hook)
    o.task_runner.add_handler("leaf", lambda task, tomb: None)
    for _ in range(3):
        done_at.clear()
        chg = fan_out(o, 4)
        assert chg.wait_ready(TIMEOUT)
        with o.state:
            assert chg.status is Status.DONE
        assert len(done_at) == 4
        assert len(set(done_at.values())) == 1, done_at  # no transaction began between two of them


def test_a_long_handler_does_not_hold_back_the_outcomes_claimed_with_it(overlord: Overlord) -> None:
    """One leaf blocks until the others are Done: their outcomes are recorded without waiting for it."""
    o = overlord
    others_done = threading.Event()
    done: set[str] = set()

    def hook(task: Task, old: Status, new: Status) -> None:
        if task.kind == "leaf" and new is Status.DONE:
            done.add(task.id)
            if len(done) == 3:
                others_done.set()

    first = threading.Lock()
    blocked: list[Any] = []

    def leaf(task: Task, tomb: Tomb) -> None:
        with first:
            if blocked:
                return
            blocked.append(task)
        assert others_done.wait(TIMEOUT), "the other leaves' outcomes waited for this handler"

    warm_up(o)
    with o.state:
        o.state.add_task_status_changed_handler(hook)
    o.task_runner.add_handler("leaf", leaf)
    chg = fan_out(o, 4)
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    assert others_done.is_set()
