# SPDX-License-Identifier: GPL-3.0-or-later
"""What user code raises while outcomes are recorded never drops a batch.

An on_task_error callback, a status hook, or str() of a handler's exception
may raise anything, SystemExit and KeyboardInterrupt included: that is the
failure of that code, logged once with the task; the task ends in Error and
the other outcomes of its batch are recorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine import Change, State, Status, Task, TaskRunner, Wait
from engine.tomb import Tomb

TIMEOUT = 30.0


@pytest.fixture
def runner(st: State) -> Iterator[TaskRunner]:
    r = TaskRunner(st)
    yield r
    r.stop()


class _Unprintable(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def __str__(self) -> str:
        raise self.exc


def _on_error_raising(exc: BaseException) -> Callable[[BaseException], None]:
    def on_error_raising(error: BaseException) -> None:
        raise exc
    return on_error_raising


def _hook_raising(exc: BaseException) -> Callable[[Task, Status, Status], None]:
    def task_hook_raising(task: Task, old: Status, new: Status) -> None:
        if task.kind == "bad" and new is Status.DONE:
            raise exc
    return task_hook_raising


def _change_hook_raising(exc: BaseException) -> Callable[[Change, Status, Status], None]:
    def change_hook_raising(chg: Change, old: Status, new: Status) -> None:
        if chg.kind == "bad-change" and new is Status.DONE:
            raise exc
    return change_hook_raising


SOURCES = ["on_task_error", "task hook", "change hook", "str of the handler's error"]


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("source", SOURCES)
def test_user_code_raising_while_recording_fails_only_its_task(
        st: State, runner: TaskRunner, source: str, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "engine")
    started = threading.Barrier(3, timeout=TIMEOUT)

    def good(task: Task, tomb: Tomb) -> None:
        started.wait()  # the three finish together: their outcomes tend to share a batch

    def bad(task: Task, tomb: Tomb) -> None:
        started.wait()
        if source == "on_task_error":
            raise RuntimeError("boom")
        if source == "str of the handler's error":
            raise _Unprintable(exc)

    runner.add_handler("good", good)
    runner.add_handler("bad", bad)
    name: str
    if source == "on_task_error":
        runner.on_task_error(_on_error_raising(exc))
        name = "on_error_raising"
    elif source == "task hook":
        with st:
            st.add_task_status_changed_handler(_hook_raising(exc))
        name = "task_hook_raising"
    elif source == "change hook":
        with st:
            st.add_change_status_changed_handler(_change_hook_raising(exc))
        name = "change_hook_raising"
    else:
        name = "cannot be shown"
    with st:
        healthy = st.new_change("healthy", "two healthy tasks")
        goods = [st.new_task("good", f"good {i}") for i in range(2)]
        for t in goods:
            healthy.add_task(t)
        hurt = st.new_change("bad-change", "one task whose recording raises")
        bad_task = st.new_task("bad", "bad")
        hurt.add_task(bad_task)
        good_ids, bad_id = [t.id for t in goods], bad_task.id
    runner.ensure()
    runner.wait()
    with st:
        statuses = {tid: st.task(tid).status for tid in [*good_ids, bad_id]}  # type: ignore[union-attr]
        bad_log = st.task(bad_id).log()  # type: ignore[union-attr]
    assert statuses == {**{tid: Status.DONE for tid in good_ids}, bad_id: Status.ERROR}
    if source != "on_task_error":  # (there the task failed for its own reason, said in its log)
        assert any(name in line for line in bad_log), bad_log
    said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(said) == 1 and bad_id in said[0], said  # once, naming the task
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    # The runner goes on.
    with st:
        again = st.new_change("after", "after")
        later = st.new_task("good", "later")
        again.add_task(later)
    started = threading.Barrier(1, timeout=TIMEOUT)
    runner.ensure()
    runner.wait()
    with st:
        assert later.status is Status.DONE


def test_a_hook_raising_for_one_task_of_a_batch_leaves_the_others_recorded(
        st: State, runner: TaskRunner, caplog: pytest.LogCaptureFixture) -> None:
    """Many outcomes in flight at once: only the task the hook raised about ends in Error."""
    release = threading.Event()
    count = 12

    def work(task: Task, tomb: Tomb) -> None:
        assert release.wait(TIMEOUT)

    def hook(task: Task, old: Status, new: Status) -> Any:
        if task.summary == "w5" and new is Status.DONE:
            raise SystemExit(1)
        return None

    runner.add_handler("work", work)
    reported = threading.Event()
    seen: list[object] = []
    report = runner._recorder.report

    def counting_report(run: Any, **kw: Any) -> Any:
        # Counted as it reports: a worker may record its own outcome (and wait for the lock in report).
        seen.append(run)
        if len(seen) == count:
            reported.set()
        return report(run, **kw)

    runner._recorder.report = counting_report  # type: ignore[method-assign]
    with st:
        st.add_task_status_changed_handler(hook)
        ts = []
        for i in range(count):  # a change each: the error aborts no one else's lanes
            chg = st.new_change("one", f"one of many at once {i}")
            t = st.new_task("work", f"w{i}")
            chg.add_task(t)
            ts.append(t)
    runner.ensure()
    with st:  # every handler reports while the recorder waits for the lock: few batches
        release.set()
        assert reported.wait(TIMEOUT)
    runner.wait()
    with st:
        got = {t.summary: t.status for t in ts}
    assert got == {f"w{i}": Status.ERROR if i == 5 else Status.DONE for i in range(count)}


@pytest.mark.parametrize("exc", [RuntimeError("hook bug"), SystemExit(4)], ids=["RuntimeError", "SystemExit"])
def test_a_hook_raising_when_its_task_is_claimed_fails_only_that_task(
        st: State, runner: TaskRunner, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """The same in an ensure pass: the pass goes on, the task the hook raised about ends in Error."""
    caplog.set_level(logging.WARNING, "engine")

    def claim_hook_raising(task: Task, old: Status, new: Status) -> None:
        if task.summary == "victim" and new is Status.DOING:
            raise exc

    ran: list[str] = []

    def work(task: Task, tomb: Tomb) -> None:
        with st:
            ran.append(task.summary)

    runner.add_handler("work", work)
    with st:
        st.add_task_status_changed_handler(claim_hook_raising)
        ids = {}
        for summary in ("first", "victim", "last"):
            chg = st.new_change("c", summary)
            t = st.new_task("work", summary)
            chg.add_task(t)
            ids[summary] = t.id
    for _ in range(2):  # a second pass finds nothing left to claim
        runner.ensure()
        runner.wait()
    with st:
        got = {s: st.task(tid).status for s, tid in ids.items()}  # type: ignore[union-attr]
        victim_log = st.task(ids["victim"]).log()  # type: ignore[union-attr]
    assert got == {"first": Status.DONE, "victim": Status.ERROR, "last": Status.DONE}
    assert sorted(ran) == ["first", "last"]
    assert any("claim_hook_raising" in line for line in victim_log), victim_log
    said = [r.getMessage() for r in caplog.records if "claim_hook_raising" in r.getMessage()]
    assert len(said) == 1 and ids["victim"] in said[0], said


def test_an_outcome_that_cannot_be_recorded_counts_its_run_once(st: State, runner: TaskRunner) -> None:
    """A Wait whose waited status was made Wait fails its task midway through recording: the run counts once.

    The ledger (engine.ledger) records the run's time on the task before the
    status; the failure that follows must not record it again.
    """
    def parks_wrongly(task: Task, tomb: Tomb) -> None:
        wait = Wait("for nothing")
        wait.waited_status = Status.WAIT  # what the constructor refuses
        raise wait

    runner.add_handler("odd", parks_wrongly)
    with st:
        chg = st.new_change("odd", "a wait that cannot be recorded")
        task = st.new_task("odd", "odd")
        chg.add_task(task)
    runner.ensure()
    runner.wait()
    with st:
        assert task.status is Status.ERROR
        assert any("cannot set task" in line and "to wait for" in line for line in task.log()), task.log()
        runs = chg.timings()
        assert [(t.outcome, t.attempt) for t in runs] == [("error", 1)]
        assert task.doing_time == runs[0].duration
