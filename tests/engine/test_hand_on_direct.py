# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain's next task claimed the direct way, and the general claim wherever a rule may hold it back.

When the cache finds one next task and nothing else runs, the hand-on moves
it to Doing at once (HandOn._hand_on_one) instead of through the general
claim (TaskRunner._claim_from). Every rule that the general claim applies
still applies: each case below makes one of them matter, and checks both
that the general claim ran and that the rule held (docs/runner.md,
"Handing on"; docs/performance.md, issue 25, hw2g).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import Overlord, Status, Task, TaskRunner
from tests.support.helpers import chain_change

TIMEOUT = 30.0


@pytest.fixture
def general_claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """general_claims counts the general claims made by hand-ons (not by ensure passes)."""
    calls: list[int] = []
    original = TaskRunner._claim_from

    def claim_from(self: TaskRunner, *args: Any) -> Any:
        if self._handing_on:
            calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(TaskRunner, "_claim_from", claim_from)
    yield calls


def summary(task: Task) -> str:
    with task.state:
        return task.summary


def noting_runs() -> tuple[list[str], threading.Event, Callable[[Task, object], None]]:
    """noting_runs is a handler noting each task's summary as it runs, the list it notes in, and an event set
    at its first run."""
    ran: list[str] = []
    first = threading.Event()

    def step(task: Task, tomb: object) -> None:
        ran.append(summary(task))
        first.set()

    return ran, first, step


def statuses(o: Overlord, chg: Any) -> list[Status]:
    with o.state:
        return [t.status for t in chg.tasks()]


def test_a_plain_chain_is_handed_on_without_the_general_claim(overlord: Overlord, general_claims: list[int]) -> None:
    o = overlord
    ran: list[str] = []
    o.task_runner.add_handler("step", lambda task, tomb: ran.append(summary(task)))
    chg = chain_change(o.state, 10)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    assert ran == [f"step {i}" for i in range(1, 11)]
    assert len(general_claims) == 1  # the last step's, which finds nothing: the 9 others' went the direct way


def _hook(o: Overlord, chg: Any, ran: list[str]) -> None:
    """A status hook that raises as step 2 moves to Doing: step 2 ends in Error instead of running."""
    def hook(task: Task, old: Status, new: Status) -> None:
        if task.summary == "step 2" and new is Status.DOING:
            raise RuntimeError("no step 2 today")

    with o.state:
        o.state.add_task_status_changed_handler(hook)


def _blocked(o: Overlord, chg: Any, ran: list[str]) -> None:
    """A blocked predicate is asked about every step it could hold back."""
    def blocked(task: Task, running: list[Task]) -> bool:
        ran.append(f"asked {task.summary}")
        return False

    o.task_runner.add_blocked(blocked)


def _key(o: Overlord, chg: Any, ran: list[str]) -> None:
    """A concurrency key's rate of one start an hour holds step 2 back."""
    o.task_runner.set_concurrency("step", "k", 1, rate=1, per=3600)


def _at(o: Overlord, chg: Any, ran: list[str]) -> None:
    """Step 2 is due in an hour: it is not started after step 1."""
    with o.state:
        step2 = next(t for t in chg.tasks() if t.summary == "step 2")
        step2.at(datetime.now(UTC) + timedelta(hours=1))


CASES: dict[str, tuple[Callable[[Overlord, Any, list[str]], None], list[str], list[Status]]] = {
    "status hook": (_hook, ["step 1"], [Status.DONE, Status.ERROR, Status.HOLD]),
    "blocked predicate": (_blocked, ["asked step 1", "step 1", "asked step 2", "step 2", "asked step 3", "step 3"],
                          [Status.DONE] * 3),
    "concurrency key": (_key, ["step 1"], [Status.DONE, Status.DO, Status.DO]),
    "at-time": (_at, ["step 1"], [Status.DONE, Status.DO, Status.DO]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_of_the_claim_still_holds_a_chain_s_next_step(overlord: Overlord, general_claims: list[int],
                                                                 case: str) -> None:
    o = overlord
    setup, expect_ran, expect_statuses = CASES[case]
    ran, first, step = noting_runs()
    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 3)
    setup(o, chg, ran)
    o.loop()
    if expect_statuses[-1].ready:
        assert chg.wait_ready(TIMEOUT)
    else:
        assert first.wait(TIMEOUT)
        o.task_runner.wait()  # step 1's outcome and its hand-on are committed
    assert ran == expect_ran
    assert statuses(o, chg) == expect_statuses
    assert general_claims  # the general claim decided


def test_an_optional_handler_s_matcher_is_asked_about_every_step(overlord: Overlord,
                                                                 general_claims: list[int]) -> None:
    o = overlord
    asked: list[str] = []

    def match(task: Task) -> bool:
        asked.append(task.summary)
        return True

    o.task_runner.add_optional_handler(match, lambda task, tomb: None)
    chg = chain_change(o.state, 3)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    assert asked[:1] == ["step 1"] and "step 2" in asked and "step 3" in asked
    assert len(general_claims) == 3  # a handler found by a matcher is claimed the general way, every step


def test_a_step_that_starts_beside_another_run_takes_the_general_claim(overlord: Overlord,
                                                                       general_claims: list[int]) -> None:
    """While another task runs, the chain's next step is claimed the general way (the running ones count)."""
    o = overlord
    release = threading.Event()
    o.task_runner.add_handler("step", lambda task, tomb: None)
    o.task_runner.add_handler("slow", lambda task, tomb: release.wait(TIMEOUT))
    with o.state:
        slow = o.state.new_change("slow", "runs beside the chain")
        slow.add_task(o.state.new_task("slow", "slow"))
    chg = chain_change(o.state, 3)
    o.loop()
    try:
        assert chg.wait_ready(TIMEOUT)
    finally:
        release.set()
    assert slow.wait_ready(TIMEOUT)
    assert len(general_claims) >= 3  # each step's hand-on (the slow task running all along), and the slow one's




def test_a_next_step_in_a_queued_change_is_held_back(overlord: Overlord, general_claims: list[int]) -> None:
    """b1 of a change queued behind an unready one waits for c1 of another change: c1's outcome leaves it in Do."""
    o, st = overlord, overlord.state
    ran, first, step = noting_runs()
    o.task_runner.add_handler("step", step)
    with st:
        older = st.new_change("older", "unready, nothing running", affects=["snap:x"])
        later = st.new_task("step", "later")
        later.at(datetime.now(UTC) + timedelta(hours=1))
        older.add_task(later)
        free = st.new_change("free", "no key")
        c1, c2 = st.new_task("step", "c1"), st.new_task("step", "c2, due later: the change stays unready")
        c2.at(datetime.now(UTC) + timedelta(hours=1))
        free.add_task(c1)
        free.add_task(c2)
        queued = st.new_change("queued", "behind the older one", affects=["snap:x"], on_conflict="queue")
        b1 = st.new_task("step", "b1")
        b1.wait_for(c1)
        queued.add_task(b1)
    o.loop()
    assert first.wait(TIMEOUT)
    o.task_runner.wait()
    assert ran == ["c1"]
    with st:
        assert (c1.status, b1.status) == (Status.DONE, Status.DO)
    assert general_claims
