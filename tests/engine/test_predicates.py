# SPDX-License-Identifier: GPL-3.0-or-later
"""A blocked predicate or an optional-handler matcher that raises concerns only the task it was asked about.

That task is held back (as if blocked), a warning names the task and the
function (its qualified name, not a repr) once, and every other task runs,
pass after pass and after a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine import Overlord, Status, Task
from engine.tomb import Tomb

TIMEOUT = 30.0


def _noop(task: Task, tomb: Tomb) -> None:
    pass


class Gate:
    """Gate's predicates raise about the task named "victim" only."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def blocked(self, task: Task, running: list[Task]) -> bool:
        if task.summary == "victim":
            raise self.exc
        return False

    def matches(self, task: Task) -> bool:
        if task.summary == "victim":
            raise self.exc
        return task.kind == "optional"


def _add_work(o: Overlord, kind: str, summaries: list[str]) -> dict[str, str]:
    ids = {}
    with o.state:
        for summary in summaries:
            chg = o.state.new_change("c", summary)
            t = o.state.new_task(kind, summary)
            chg.add_task(t)
            ids[summary] = t.id
    return ids


def _statuses(o: Overlord, ids: dict[str, str]) -> dict[str, Status]:
    with o.state:
        return {s: o.state.task(tid).status for s, tid in ids.items()}  # type: ignore[union-attr]


@pytest.mark.parametrize("exc", [RuntimeError("predicate bug"), SystemExit(2)], ids=["RuntimeError", "SystemExit"])
@pytest.mark.parametrize("what", ["blocked predicate", "optional-handler matcher"])
def test_a_raising_predicate_holds_back_only_its_task(
        what: str, exc: BaseException, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "engine")
    gate = Gate(exc)
    name = "Gate.blocked" if what == "blocked predicate" else "Gate.matches"
    kind = "work" if what == "blocked predicate" else "optional"

    def start(o: Overlord) -> None:
        if what == "blocked predicate":
            o.task_runner.add_handler("work", _noop)
            o.task_runner.add_blocked(gate.blocked)
        else:
            o.task_runner.add_optional_handler(gate.matches, _noop)

    ids: dict[str, str] = {}
    for life in range(2):  # and again after a restart
        o = Overlord(db_path)
        start(o)
        try:
            if life == 0:
                ids = _add_work(o, kind, ["victim", "first"])
            for round_ in range(2):  # several passes: still said once
                ids.update(_add_work(o, kind, [f"later {life}.{round_}"]))
                o.settle(TIMEOUT)
            got = _statuses(o, ids)
        finally:
            o.stop()
        assert got.pop("victim") is Status.DO
        assert set(got.values()) == {Status.DONE}, got
        said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(said) == life + 1, said  # once per runner
        assert ids["victim"] in said[-1] and what in said[-1], said
        assert all("object at 0x" not in r.getMessage() for r in caplog.records)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
