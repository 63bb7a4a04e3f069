# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain's step on SQLite: how many Python functions it calls, pinned (docs/performance.md, hw2s).

A step (OutcomeRecorder.report on the worker that ran the task: the
outcome recorded, the next task claimed, one commit) called 139 Python
functions at 9eccfc0 and about 126 after the cuts of hw2s (the recorder
taking its batch in report's own lock section, the ladder's returned
outcome first, move_task's bookkeeping inline, the statuses' texts read
without a property: Status.text). Counted by sys.setprofile on the middle steps of a chain: a
count, not a time, so the same on a loaded machine.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest

from engine import Overlord, Status, Task
from engine.outcomes import OutcomeRecorder
from engine.tomb import Tomb
from tests.support.helpers import chain_change

TIMEOUT = 30.0
#: STEP_CALLS bounds the Python functions a middle step calls (126 at hw2s; 139 before).
STEP_CALLS = 132


def test_a_chains_step_calls_few_python_functions(overlord: Overlord, monkeypatch: pytest.MonkeyPatch) -> None:
    o = overlord
    counts: list[int] = []
    report = OutcomeRecorder.report

    def counted(self: OutcomeRecorder, run: Any, *, inline: bool = False) -> Any:
        n = 0

        def prof(frame: FrameType, event: str, arg: object) -> None:
            nonlocal n
            if event == "call":
                n += 1

        sys.setprofile(prof)
        try:
            return report(self, run, inline=inline)
        finally:
            sys.setprofile(None)
            counts.append(n)

    monkeypatch.setattr(OutcomeRecorder, "report", counted)

    def step(task: Task, tomb: Tomb) -> None:
        pass

    o.task_runner.add_handler("step", step)
    chg = chain_change(o.state, 12)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    middle = sorted(counts[2:-2])  # (the first steps meet a cold cache, the last one claims nothing)
    # The median step: a step now and then also writes what waits for any commit (the timings' batch, once its
    # second has passed on a loaded machine); a cut undone adds its calls to every step.
    assert middle and middle[len(middle) // 2] <= STEP_CALLS, counts
