# SPDX-License-Identifier: GPL-3.0-or-later
"""Overlord: the ensure loop, settle, stop and the one-overlord-per-database lock.

After snapd's overlord/overlord_test.go. Loop tests use the real clock; they
wait on events and chg.wait_ready with generous timeouts, never on timings.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import DatabaseInUseError, EngineError, Overlord, Retry, State, Status, Task, TaskRunner
from engine.tomb import Tomb

TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def overlords() -> Iterator[list[Overlord]]:
    """overlords collects Overlords to stop after the test."""
    made: list[Overlord] = []
    yield made
    for o in made:
        o.stop()


def new_overlord(made: list[Overlord], *args: object, **kw: object) -> Overlord:
    o = Overlord(*args, **kw)  # type: ignore[arg-type]
    made.append(o)
    return o


def noop(task: Task, tomb: Tomb) -> None:
    return None


class Counter:
    """Counter is a manager that counts its ensure calls."""

    def __init__(self) -> None:
        self.ensures = 0

    def ensure(self) -> None:
        self.ensures += 1

    def wait(self) -> None:
        pass

    def stop(self) -> None:
        pass


# -- construction and managers ------------------------------------------------------------


def test_new_with_root_creates_database(tmp_path: Path, overlords: list[Overlord]) -> None:
    root = tmp_path / "var" / "lib" / "app"
    o = new_overlord(overlords, root=root)
    assert (root / "state.db").is_file()
    assert isinstance(o.state, State)
    assert o.state_engine.state is o.state
    assert isinstance(o.task_runner, TaskRunner)
    with o.state:
        chg = o.state.new_change("kind", "summary")
        chg_id = chg.id
    o.stop()
    st = State.open(root / "state.db")
    try:
        with st:
            assert st.change(chg_id) is not None  # it was written to that file
    finally:
        st.close()


def test_task_runner_ensures_last(tmp_path: Path, overlords: list[Overlord]) -> None:
    """Managers added after construction still run before the TaskRunner in each pass."""
    o = new_overlord(overlords, root=tmp_path)
    o.task_runner.add_handler("made", noop)
    st = o.state

    class Maker:
        def __init__(self, name: str) -> None:
            self.name = name
            self.made: str | None = None

        def ensure(self) -> None:
            if self.made is None:
                with st:
                    chg = st.new_change("made", self.name)
                    chg.add_task(st.new_task("made", self.name))
                    self.made = chg.id

        def wait(self) -> None:
            pass

        def stop(self) -> None:
            pass

    m1, m2 = Maker("m1"), Maker("m2")
    o.add_manager(m1)
    o.add_manager(m2)
    o.state_engine.start_up()
    o.state_engine.ensure()  # one pass: the managers make tasks, then the runner starts them
    o.state_engine.wait()
    with st:
        for m in (m1, m2):
            assert m.made is not None
            chg = st.change(m.made)
            assert chg is not None
            assert chg.status is Status.DONE, m.name


# -- settle -----------------------------------------------------------------------------------


def test_settle_runs_a_chain_and_cleans_it(tmp_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, root=tmp_path)
    st = o.state

    def mark(name: str):  # type: ignore[no-untyped-def]
        def fn(task: Task, tomb: Tomb) -> None:
            with st:
                st.set(name, 1)

        return fn

    o.task_runner.add_handler("run1", mark("run1-mark"))
    o.task_runner.add_handler("run2", mark("run2-mark"))
    o.task_runner.add_cleanup("run1", mark("run1-cleaned"))
    with st:
        chg = st.new_change("chg", "...")
        t1 = st.new_task("run1", "1...")
        t2 = st.new_task("run2", "2...")
        t2.wait_for(t1)
        chg.add_task(t1)
        chg.add_task(t2)
    o.settle(TIMEOUT)
    with st:
        assert t1.status is Status.DONE
        assert t2.status is Status.DONE
        assert st.get("run1-mark") == 1
        assert st.get("run2-mark") == 1
        assert st.get("run1-cleaned") == 1
        assert chg.is_ready()
        assert chg.is_clean()


def test_settle_explicit_ensure_before(tmp_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, root=tmp_path)
    st = o.state
    counter = Counter()
    o.add_manager(counter)

    def ask(task: Task, tomb: Tomb) -> None:
        with st:
            st.ensure_before(0)

    o.task_runner.add_handler("ensure-before", ask)
    with st:
        chg = st.new_change("chg", "...")
        t = st.new_task("ensure-before", "...")
        chg.add_task(t)
    o.settle(TIMEOUT)
    with st:
        assert t.status is Status.DONE
    assert counter.ensures == 2  # the pass that ran the task, and the one it asked for


def test_settle_not_converging(tmp_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, root=tmp_path)
    st = o.state

    def forever(task: Task, tomb: Tomb) -> None:
        with st:
            st.ensure_before(0)
        raise Retry()

    o.task_runner.add_handler("forever", forever)
    with st:
        chg = st.new_change("chg", "...")
        chg.add_task(st.new_task("forever", "1..."))
    with pytest.raises(TimeoutError, match=r"^Settle is not converging$"):
        o.settle(0.5)


def test_settle_refuses_while_looping(tmp_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, root=tmp_path)
    o.loop()
    with pytest.raises(EngineError):
        o.settle(1)


# -- the loop ----------------------------------------------------------------------------------


def test_loop_wakes_on_ensure_before(tmp_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, root=tmp_path)
    st = o.state
    o.task_runner.add_handler("step", noop)
    o.loop()
    with st:
        chg = st.new_change("chg", "...")
        prev: Task | None = None
        for i in range(3):
            t = st.new_task("step", f"step {i}")
            if prev is not None:
                t.wait_for(prev)
            chg.add_task(t)
            prev = t
        st.ensure_before(0)
    # Without the wake-up the loop sleeps for minutes.
    assert chg.wait_ready(TIMEOUT)
    with st:
        assert chg.status is Status.DONE


def test_loop_ensure_before_outside_ensure(tmp_path: Path, overlords: list[Overlord]) -> None:
    """snapd's TestEnsureLoopMediatedEnsureBeforeOutsideEnsure: a request between passes wakes the loop."""
    o = new_overlord(overlords, root=tmp_path)
    passes: queue.SimpleQueue[int] = queue.SimpleQueue()

    class Witness(Counter):
        def ensure(self) -> None:
            super().ensure()
            passes.put(self.ensures)

    o.add_manager(Witness())
    o.loop()
    assert passes.get(timeout=TIMEOUT) == 1
    with o.state:
        o.state.ensure_before(0)
    assert passes.get(timeout=TIMEOUT) == 2


def test_loop_with_scarce_workers_never_stalls(tmp_path: Path, overlords: list[Overlord]) -> None:
    """A handler freeing a worker asks for a pass, and that pass must find the worker free.

    The thread switch interval is shortened to let the loop's pass run right
    after the outcome's commit, as it may on a busy machine.
    """
    o = new_overlord(overlords, root=tmp_path, workers=1)
    st = o.state
    o.task_runner.add_handler("quick", noop)
    o.loop()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(40):
            with st:
                chg = st.new_change("chg", f"round {round_}")
                for i in range(20):
                    chg.add_task(st.new_task("quick", str(i)))
                st.ensure_before(0)
            if not chg.wait_ready(TIMEOUT):
                with st:
                    counts: dict[str, int] = {}
                    for t in chg.tasks():
                        counts[str(t.status)] = counts.get(str(t.status), 0) + 1
                pytest.fail(f"round {round_}: the loop stalled with {counts}")
    finally:
        sys.setswitchinterval(old)


# -- stop ------------------------------------------------------------------------------------


def test_stop_is_bounded_and_leaves_database_consistent(db_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, db_path)
    st = o.state
    started: queue.SimpleQueue[str] = queue.SimpleQueue()

    def block(task: Task, tomb: Tomb) -> None:
        with st:
            name = task.summary
        started.put(name)
        assert tomb.wait_dying(TIMEOUT * 2), "tomb never died"
        raise Retry()

    o.task_runner.add_handler("first", noop)
    o.task_runner.add_handler("block", block)
    o.loop()
    with st:
        chg = st.new_change("chg", "...")
        first = st.new_task("first", "first")
        chg.add_task(first)
        for i in range(3):
            t = st.new_task("block", f"b{i}")
            t.wait_for(first)
            chg.add_task(t)
        chg_id = chg.id
        st.ensure_before(0)
    assert sorted(started.get(timeout=TIMEOUT) for _ in range(3)) == ["b0", "b1", "b2"]

    stopper = threading.Thread(target=o.stop, daemon=True)
    stopper.start()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive(), "stop() did not return"

    st2 = State.open(db_path)
    try:
        with st2:
            chg2 = st2.change(chg_id)
            assert chg2 is not None
            got = {t.summary: t.status for t in chg2.tasks()}
            assert got == {"first": Status.DONE, "b0": Status.DOING, "b1": Status.DOING, "b2": Status.DOING}
            assert not chg2.is_ready()
            assert chg2.err() is None
    finally:
        st2.close()

    # The next overlord runs them again (at least once) and finishes the change.
    o2 = new_overlord(overlords, db_path)
    o2.task_runner.add_handler("first", noop)
    o2.task_runner.add_handler("block", noop)
    o2.settle(TIMEOUT)
    with o2.state:
        chg3 = o2.state.change(chg_id)
        assert chg3 is not None
        assert chg3.status is Status.DONE


def test_stop_is_bounded_when_handler_ignores_its_tomb(db_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, db_path, stop_timeout=0.5)
    started = threading.Event()
    release = threading.Event()

    def stubborn(task: Task, tomb: Tomb) -> None:
        started.set()
        release.wait(TIMEOUT * 2)

    o.task_runner.add_handler("stubborn", stubborn)
    o.loop()
    with o.state:
        chg = o.state.new_change("chg", "...")
        t = o.state.new_task("stubborn", "...")
        chg.add_task(t)
        tid = t.id
        o.state.ensure_before(0)
    try:
        assert started.wait(TIMEOUT)
        stopper = threading.Thread(target=o.stop, daemon=True)
        stopper.start()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive(), "stop() did not return within its bound"
        st2 = State.open(db_path)
        try:
            with st2:
                t2 = st2.task(tid)
                assert t2 is not None
                assert t2.status is Status.DOING  # it runs again at the next start
        finally:
            st2.close()
    finally:
        release.set()


# -- one overlord per database -----------------------------------------------------------------

HOLDER = """
import sys, threading, time
from engine import Overlord
o = Overlord(root=sys.argv[1])
started = threading.Event()
def hang(task, tomb):
    started.set()
    time.sleep(3600)
o.task_runner.add_handler("hang", hang)
o.loop()
with o.state:
    chg = o.state.new_change("held", "...")
    chg.add_task(o.state.new_task("hang", "..."))
    o.state.ensure_before(0)
started.wait(60)
print("ready", flush=True)
time.sleep(3600)
"""

SECOND = """
import sys
from engine import DatabaseInUseError, Overlord
try:
    Overlord(root=sys.argv[1])
except DatabaseInUseError as e:
    print(e, flush=True)
    sys.exit(3)
print("started", flush=True)
"""


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_second_overlord_in_another_process(tmp_path: Path, overlords: list[Overlord]) -> None:
    root = tmp_path / "root"
    holder = subprocess.Popen(_python(HOLDER, str(root)), cwd=REPO, env=_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        assert holder.stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in holder.stdout], daemon=True).start()  # type: ignore[union-attr]
        try:
            assert lines.get(timeout=TIMEOUT * 2).strip() == "ready"
        except queue.Empty:
            holder.kill()
            pytest.fail(f"the holder did not start: {holder.communicate()[1]}")
        db = root / "state.db"

        # Another process fails at once, naming the database and the holder.
        second = subprocess.run(_python(SECOND, str(root)), cwd=REPO, env=_env(), text=True,
                                capture_output=True, timeout=TIMEOUT * 2)
        assert second.returncode == 3, (second.stdout, second.stderr)
        assert str(db) in second.stdout
        assert str(holder.pid) in second.stdout

        # So does this one.
        with pytest.raises(DatabaseInUseError) as info:
            new_overlord(overlords, root=root)
        assert str(db) in str(info.value)
        assert str(holder.pid) in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(TIMEOUT)

    # The holder died without stopping: a new overlord starts fine and finishes its work.
    o = new_overlord(overlords, root=root)
    o.task_runner.add_handler("hang", noop)
    with o.state:
        held = [c for c in o.state.changes() if c.kind == "held"]
        assert len(held) == 1
        assert [t.status for t in held[0].tasks()] == [Status.DOING]
    o.settle(TIMEOUT)
    with o.state:
        assert held[0].status is Status.DONE


def test_second_overlord_in_this_process(db_path: Path, overlords: list[Overlord]) -> None:
    o = new_overlord(overlords, db_path)
    with pytest.raises(DatabaseInUseError) as info:
        Overlord(db_path)
    assert str(db_path) in str(info.value)
    assert str(os.getpid()) in str(info.value)
    o.stop()
    # Once stopped, the database is free again.
    new_overlord(overlords, db_path).settle(TIMEOUT)
