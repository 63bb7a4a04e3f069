# SPDX-License-Identifier: GPL-3.0-or-later
"""engine.testing: the kit users test their handlers with (fake time, settle, run_change, check_idempotent)."""

from __future__ import annotations

import os
import types
from datetime import timedelta
from pathlib import Path

import pytest

from engine import Overlord, Retry, State, Status, Task, Tomb
from engine.testing import FakeClock, IdempotenceError, check_idempotent, run_change, settle, temp_state


def test_settle_skips_time_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    start = clock()
    o = Overlord(root=tmp_path, clock=clock)
    calls: list[object] = []

    def later(task: Task, tomb: Tomb) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Retry(after=timedelta(hours=6))

    o.task_runner.add_handler("later", later)
    with o.state:
        chg = o.state.new_change("c", "C")
        chg.add_task(o.state.new_task("later", "Later"))
    try:
        assert run_change(o, chg, clock=clock, timeout=30) == [("later", Status.DONE)]
        assert len(calls) == 2
        assert clock() - start >= timedelta(hours=6)
    finally:
        o.stop()


def test_run_change_says_what_is_left_unready(tmp_path: Path) -> None:
    o = Overlord(root=tmp_path, clock=FakeClock())
    o.task_runner.add_handler("ok", lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("c", "C")
        a, b = o.state.new_task("ok", "A"), o.state.new_task("nobody-handles-this", "B")
        b.wait_for(a)
        chg.add_task(a)
        chg.add_task(b)
        cid = chg.id
    try:
        assert run_change(o, cid, timeout=30) == [("ok", Status.DONE), ("nobody-handles-this", Status.DO)]
    finally:
        o.stop()


def test_temp_state_is_a_real_file_removed_afterwards() -> None:
    with temp_state() as st:
        path = Path(st.path)
        with st:
            st.set("k", 1)
        assert path.is_file()
    assert not path.parent.exists()


def _one_task(kind: str, **data: object) -> object:
    def setup(st: State) -> Task:
        chg = st.new_change("c", "C")
        t = st.new_task(kind, "T")
        for k, v in data.items():
            t.set(k, v)
        chg.add_task(t)
        return t
    return setup


def test_an_idempotent_handler_passes_at_every_point(tmp_path: Path) -> None:
    target = tmp_path / "out"

    def setup(st: State) -> Task:
        target.unlink(missing_ok=True)
        return _one_task("deploy", content="hello")(st)  # type: ignore[operator,no-any-return]

    def deploy(task: Task, tomb: Tomb) -> None:
        with task.state:
            content = task.get("content")
            task.set("stage", "writing")
        tmp = target.with_suffix(".tmp")
        tmp.write_text(content)
        os.replace(tmp, target)
        with task.state:
            task.set("stage", "written")
            task.state.set("deployed", [content])

    report = check_idempotent(deploy, setup, side_effects=[(os, "replace")],
                              snapshot=lambda: target.read_text() if target.exists() else None,
                              state_keys=["deployed"])
    assert report.points == ["a commit", "a call of replace", "a commit"]
    assert report.clean["world"] == "hello"
    assert report.clean["state"] == {"deployed": ["hello"]}
    assert report.clean["tasks"][0]["status"] == "Done"


def test_a_handler_that_counts_twice_is_caught_at_the_point_it_breaks() -> None:
    def bump(task: Task, tomb: Tomb) -> None:
        with task.state:
            task.state.set("installs", task.state.get("installs", 0) + 1)
        with task.state:
            task.set("done", True)

    broken = r"cut short after a commit \(point 1 of 2\).*'installs': 2.*'installs': 1"
    with pytest.raises(IdempotenceError, match=broken):
        check_idempotent(bump, _one_task("bump"), state_keys=["installs"])  # type: ignore[arg-type]


def test_a_side_effect_repeated_by_the_rerun_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "log"
    world = types.SimpleNamespace()

    def append(line: str) -> None:
        with log.open("a") as f:
            f.write(line + "\n")

    world.append = append

    def setup(st: State) -> Task:
        log.write_text("")
        return _one_task("notify")(st)  # type: ignore[operator,no-any-return]

    def notify(task: Task, tomb: Tomb) -> None:
        world.append("sent")
        with task.state:
            task.set("sent", True)

    with pytest.raises(IdempotenceError, match=r"cut short after a call of append \(point 1 of 2\)"):
        check_idempotent(notify, setup, side_effects=[(world, "append")], snapshot=log.read_text)
    assert world.append is append  # put back


def test_retries_are_followed_and_count_as_points() -> None:
    def flaky(task: Task, tomb: Tomb) -> None:
        with task.state:
            n = task.get("tries", 0)
            task.set("tries", n + 1 if n < 2 else n)
        if n < 2:
            raise Retry(after=60)

    report = check_idempotent(flaky, _one_task("flaky"))  # type: ignore[arg-type]
    assert report.points == ["a commit"] * 3
    assert report.clean["tasks"][0]["data"] == {"tries": 2}


def test_the_plugin_gives_a_state_and_an_overlord_on_the_fake_clock(
        engine_state: State, engine_overlord: Overlord, engine_clock: FakeClock) -> None:
    with engine_state:
        chg = engine_state.new_change("c", "C")
        assert chg.spawn_time == engine_clock()
    assert Path(engine_state.path).is_file()
    engine_overlord.task_runner.add_handler("k", lambda task, tomb: None)
    with engine_overlord.state:
        chg = engine_overlord.state.new_change("c", "C")
        chg.add_task(engine_overlord.state.new_task("k", "K"))
    settle(engine_overlord, clock=engine_clock)
    with engine_overlord.state:
        assert chg.status == Status.DONE
