# SPDX-License-Identifier: GPL-3.0-or-later
"""The deployer's tests, written with engine.testing: copy them with the example."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import tenacity
from deployer import DeployManager, TargetBusyError, digest

from engine import ChangeConflictError, Overlord, State, Status, Task
from engine.testing import FakeClock, check_idempotent, run_change, settle


@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.fixture
def deployer(engine_overlord: Overlord, target: Path) -> DeployManager:
    return DeployManager(engine_overlord, target)


def test_a_deployment_puts_every_file_in_place(engine_overlord: Overlord, engine_clock: FakeClock,
                                               deployer: DeployManager, target: Path) -> None:
    (target / "index.html").write_text("old")
    with engine_overlord.state:
        chg = deployer.deploy({"index.html": "new", "app.js": "js"})
    assert run_change(engine_overlord, chg, clock=engine_clock) == [
        ("stage-file", Status.DONE), ("stage-file", Status.DONE),
        ("deploy-file", Status.DONE), ("deploy-file", Status.DONE)]
    assert (target / "index.html").read_text() == "new"
    assert (target / "app.js").read_text() == "js"
    with engine_overlord.state:
        assert engine_overlord.state.get("deployed") == {"index.html": digest("new"), "app.js": digest("js")}


def test_a_file_that_cannot_be_deployed_undoes_the_others(engine_overlord: Overlord, engine_clock: FakeClock,
                                                          deployer: DeployManager, target: Path) -> None:
    (target / "index.html").write_text("old")
    (target / "zz.txt").mkdir()  # a directory where the file should go: deploy-file fails
    (target / "zz.txt" / "x").write_text("")
    with engine_overlord.state:
        chg = deployer.deploy({"index.html": "new", "zz.txt": "text"})
    statuses = run_change(engine_overlord, chg, clock=engine_clock)
    assert ("deploy-file", Status.ERROR) in statuses
    assert (target / "index.html").read_text() == "old"  # put back by undo
    with engine_overlord.state:
        assert engine_overlord.state.get("deployed", {}).get("index.html") in (None, digest("old"))
        assert engine_overlord.state.change(chg.id).status == Status.ERROR  # type: ignore[union-attr]


def test_a_busy_target_is_retried_under_the_policy(engine_overlord: Overlord, engine_clock: FakeClock,
                                                   deployer: DeployManager, target: Path) -> None:
    (target / ".lock").write_text("")
    with engine_overlord.state:
        chg = deployer.deploy({"a.txt": "a"})
    start = engine_clock()
    assert run_change(engine_overlord, chg, clock=engine_clock)[-1] == ("deploy-file", Status.ERROR)
    assert engine_clock() - start >= timedelta(seconds=1 + 2 + 4 + 8)  # the policy's waits, skipped
    with engine_overlord.state:
        (task,) = [t for t in engine_overlord.state.change(chg.id).tasks()  # type: ignore[union-attr]
                   if t.kind == "deploy-file"]
        assert task.attempts == 5
        assert "locked by another tool" in task.log()[-1]


def test_a_busy_target_deploys_once_it_is_free(engine_overlord: Overlord, engine_clock: FakeClock,
                                              target: Path) -> None:
    tries: list[int] = []

    def free_after_two(retry_state: tenacity.RetryCallState) -> bool:
        tries.append(1)
        if len(tries) == 2:
            (target / ".lock").unlink()
        return isinstance(retry_state.outcome.exception(), TargetBusyError) if retry_state.outcome else False

    DeployManager(engine_overlord, target, retry=tenacity.Retrying(
        retry=free_after_two, wait=tenacity.wait_fixed(30), stop=tenacity.stop_after_attempt(5)))
    (target / ".lock").write_text("")
    with engine_overlord.state:
        chg = engine_overlord.state.new_change("deploy", "Deploy")  # the verb's graph, by hand
        stage = engine_overlord.state.new_task("stage-file", "Stage a.txt")
        stage.set("name", "a.txt")
        stage.set("content", "a")
        move = engine_overlord.state.new_task("deploy-file", "Deploy a.txt")
        move.set("name", "a.txt")
        move.set("digest", digest("a"))
        move.wait_for(stage)
        chg.add_task(stage)
        chg.add_task(move)
    assert run_change(engine_overlord, chg, clock=engine_clock)[-1] == ("deploy-file", Status.DONE)
    assert (target / "a.txt").read_text() == "a"


def test_a_second_deployment_of_the_same_file_conflicts(engine_overlord: Overlord, deployer: DeployManager) -> None:
    with engine_overlord.state:
        first = deployer.deploy({"a.txt": "a"})
        with pytest.raises(ChangeConflictError) as e:
            deployer.deploy({"a.txt": "b", "c.txt": "c"})
        assert e.value.change_id == first.id
        deployer.deploy({"c.txt": "c"})  # another file is fine
    with engine_overlord.state, pytest.raises(ValueError, match=r"cannot deploy '\.\./x'"):
        deployer.deploy({"../x": "no"})


def test_a_missing_file_is_warned_about(engine_overlord: Overlord, engine_clock: FakeClock,
                                        deployer: DeployManager, target: Path) -> None:
    with engine_overlord.state:
        chg = deployer.deploy({"a.txt": "a"})
    run_change(engine_overlord, chg, clock=engine_clock)
    (target / "a.txt").unlink()
    settle(engine_overlord, clock=engine_clock)
    with engine_overlord.state:
        assert [str(w) for w in engine_overlord.state.warnings()] == [f"deployed file a.txt is missing from {target}"]


# -- every handler is safe to run twice, wherever a crash cuts it ---------------------------


def _setup(tmp: Path, previous: str | None):
    def setup(st: State) -> Task:
        for d in (tmp, tmp / ".staging", tmp / ".backup"):
            d.mkdir(exist_ok=True)
        for f in [*tmp.iterdir(), *(tmp / ".staging").iterdir(), *(tmp / ".backup").iterdir()]:
            if f.is_file():
                f.unlink()
        if previous is not None:
            (tmp / "a.txt").write_text(previous)
        o = _FakeOverlord(st)
        m = DeployManager(o, tmp)  # type: ignore[arg-type]
        chg = m.deploy({"a.txt": "new"})
        stage, move = chg.tasks()
        (tmp / ".staging" / f"{chg.id}-a.txt").write_text("new")  # stage-file ran
        stage.set_status(Status.DONE)
        return move
    return setup


class _FakeOverlord:
    """_FakeOverlord lets the manager be built on a bare State, for check_idempotent's runs."""

    def __init__(self, st: State) -> None:
        self.state = st
        self.task_runner = self

    def add_handler(self, *a: object, **kw: object) -> None:
        pass

    def add_manager(self, m: object) -> None:
        pass


def _world(tmp: Path) -> dict[str, str]:
    return {str(p.relative_to(tmp)): p.read_text() for p in sorted(tmp.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("previous", [None, "old"])
def test_deploy_file_is_idempotent(tmp_path: Path, previous: str | None) -> None:
    m = DeployManager(_FakeOverlord(State.open(None)), tmp_path)  # type: ignore[arg-type]
    report = check_idempotent(m._do_deploy, _setup(tmp_path, previous), undo=m._undo_deploy,
                              side_effects=[(os, "replace")], snapshot=lambda: _world(tmp_path),
                              state_keys=["deployed"])
    assert report.clean["world"]["a.txt"] == "new"
    assert len(report.points) >= 2
