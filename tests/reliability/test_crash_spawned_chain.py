# SPDX-License-Identifier: GPL-3.0-or-later
"""A chain whose every step adds the next one from its handler, SIGKILLed mid-way and resumed.

Such a step (in Do, waiting for its running predecessor) does not wake the
overlord's loop when it is added: the predecessor's outcome hands it on
(docs/runner.md, "Handing on"). Killed between the handler's commit and its
outcome's, the predecessor runs again in the next life and the step still
runs, once the predecessor is Done. The same with a self-finishing step,
which also sets its own task Done in that block: its commit wakes nobody
for the next step, its outcome hands it on; killed between the two, the
next life's first pass claims the step, and no step's block runs twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import State, Status

STEPS = 40

CHILD = """
import os, sys, time
from engine import Overlord, Status

db, journal, n, finish = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "finish"
o = Overlord(db, workers=4)

def note(what, i):
    with open(journal, "a") as f:
        f.write(f"{os.getpid()} {what} {i}\\n")

def step(task, tomb):
    st = task.state
    with st:
        i = task.get("i")
    note("start", i)
    time.sleep(0.01)
    with st:
        # Idempotent, as a handler that may run again must be: a step killed after this
        # commit and before its outcome's finds its next step already added.
        if i + 1 < n and not task.halt_tasks():
            nxt = st.new_task("step", f"step {i + 2}")
            nxt.set("i", i + 1)
            nxt.wait_for(task)
            task.change().add_task(nxt)
        if finish:
            # The step's own Done, with its writes: a step whose block committed never runs again.
            st.set("finished", st.get("finished", []) + [i])
            task.set_status(Status.DONE)
            note("end", i)  # (before the commit: the next step may start as soon as it is made)
    if not finish:
        note("end", i)

o.task_runner.add_handler("step", step)
with o.state:
    changes = o.state.changes()
    if changes:
        chg = changes[0]
    else:
        chg = o.state.new_change("chain", "each step adds the next")
        first = o.state.new_task("step", "step 1")
        first.set("i", 0)
        chg.add_task(first)
o.loop()
ok = chg.wait_ready(60)
o.stop()
sys.exit(0 if ok else 1)
"""


def _lines(journal: Path) -> list[tuple[int, str, int]]:
    if not journal.exists():
        return []
    out = []
    for line in journal.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # (a line torn by the kill is left out)
            out.append((int(parts[0]), parts[1], int(parts[2])))
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", ["spawn", "finish"])
def test_a_chain_of_spawned_steps_killed_mid_way_finishes_in_the_next_life(tmp_path: Path, shape: str) -> None:
    db, journal, script = tmp_path / "state.db", tmp_path / "journal", tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(db), str(journal), str(STEPS), shape]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while sum(1 for _, what, _ in _lines(journal) if what == "end") < 5:
        assert first.poll() is None, f"the first life exited {first.returncode} before the kill"
        assert time.monotonic() < deadline, "the first life did not run 5 steps in 60 s"
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before = {i for pid, what, i in _lines(journal) if what == "end"}
    assert len(done_before) < STEPS, "the first life finished before the kill"

    second = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True, timeout=90)
    assert second.returncode == 0, second.stderr[-3000:]

    st = State.open(db)
    try:
        with st:
            (chg,) = st.changes()
            assert chg.status is Status.DONE
            tasks = chg.tasks()
            assert sorted(t.get("i") for t in tasks) == list(range(STEPS))  # every step, once
            assert all(t.status is Status.DONE for t in tasks)
            if shape == "finish":
                assert st.get("finished") == list(range(STEPS))  # each step's block committed once, in order
    finally:
        st.close()
    # Each step started only after its predecessor's handler had ended (in this life or the one before).
    lines = _lines(journal)
    for i in range(1, STEPS):
        start = next(k for k, (_, what, j) in enumerate(lines) if what == "start" and j == i)
        assert any(what == "end" and j == i - 1 for _, what, j in lines[:start]), i
    assert any(pid != first.pid for pid, _, _ in lines), "the second life ran no step"
