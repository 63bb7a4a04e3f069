# SPDX-License-Identifier: GPL-3.0-or-later
"""snapd's sequence table: one fixed graph, one line of setup, the handler calls expected.

Graph: (t11 | t12) -> t21 -> (t31 | t32); t12 has no undo handler.

Setup words:
    <task>:was-<status>     set the status before running
    <task>:(do|undo)-block  block the handler until its tomb dies
    <task>:(do|undo)-retry  raise Retry once
    <task>:(do|undo)-error  raise an error
    <task>:(do|undo)-set-ready  the handler sets its own status
    <task>:...:1,2          also join lanes 1 and 2
    chg:abort               abort the change before running
"""

from __future__ import annotations

import queue

import pytest

from engine import Retry, State, Status, Task, TaskRunner
from engine.testing import drive
from engine.tomb import Tomb
from tests.support.ensure import EnsureRecorder

SEQUENCES = [
    ("", "t11:do t12:do t21:do t31:do t32:do"),
    ("t11:was-done t12:was-doing", "t12:do t21:do t31:do t32:do"),
    ("t11:was-done t12:was-doing chg:abort", "t11:undo"),
    ("t12:do-retry", "t11:do t12:do t12:do-retry t12:do t21:do t31:do t32:do"),
    ("t11:do-block t12:do-error", "t11:do t11:do-block t12:do t12:do-error t11:do-unblock t11:undo"),
    ("t11:do-error t12:do-block", "t11:do t11:do-error t12:do t12:do-block t12:do-unblock"),
    ("t11:do-block t11:do-retry t12:do-error",
     "t11:do t11:do-block t12:do t12:do-error t11:do-unblock t11:do-retry t11:undo"),
    ("t11:do-error t12:do-block t12:do-retry", "t11:do t11:do-error t12:do t12:do-block t12:do-unblock t12:do-retry"),
    ("t31:do-error t21:undo-error",
     "t11:do t12:do t21:do t31:do t31:do-error t32:do t32:undo t21:undo t21:undo-error t11:undo"),
    ("t21:do-set-ready", "t11:do t12:do t21:do t31:do t32:do"),
    ("t31:do-error t21:undo-set-ready", "t11:do t12:do t21:do t31:do t31:do-error t32:do t32:undo t21:undo t11:undo"),
    ("t11:was-done:1 t12:was-done:2 t21:was-done:1,2 t31:was-done:1 t32:do-error:2",
     "t31:undo t32:do t32:do-error t21:undo t11:undo"),
    ("t11:was-done:1 t12:was-done:2 t21:was-done:2 t31:was-done:2 t32:do-error:2",
     "t31:undo t32:do t32:do-error t21:undo"),
]

NAMES = ["t11", "t12", "t21", "t31", "t32"]


@pytest.mark.parametrize(("setup", "expected"), SEQUENCES, ids=[s or "plain" for s, _ in SEQUENCES])
def test_sequence(st: State, ensures: EnsureRecorder, setup: str, expected: str) -> None:
    events: queue.SimpleQueue[str] = queue.SimpleQueue()

    def handler(label: str):  # type: ignore[no-untyped-def]
        def fn(task: Task, tomb: Tomb) -> None:
            with st:
                name = task.summary
                events.put(f"{name}:{label}")
                block = task.get(f"{label}-block", False)
            if block:
                events.put(f"{name}:{label}-block")
                assert tomb.wait_dying(30), "tomb never died"
                events.put(f"{name}:{label}-unblock")
            # Raise after leaving the block: an exception inside it rolls back.
            outcome: Exception | None = None
            with st:
                if task.get(f"{label}-retry", False):
                    task.set(f"{label}-retry", False)
                    events.put(f"{name}:{label}-retry")
                    outcome = Retry()
                elif task.get(f"{label}-error", False):
                    events.put(f"{name}:{label}-error")
                    outcome = RuntimeError("boom")
                elif task.get(f"{label}-set-ready", False):
                    if task.status is Status.DOING:
                        task.set_status(Status.DONE)
                    elif task.status is Status.UNDOING:
                        task.set_status(Status.UNDONE)
            if outcome is not None:
                raise outcome

        return fn

    runner = TaskRunner(st)
    runner.add_handler("do", handler("do"), None)
    runner.add_handler("do-undo", handler("do"), handler("undo"))
    try:
        with st:
            chg = st.new_change("install", "...")
            tasks = {name: st.new_task("do" if name == "t12" else "do-undo", name) for name in NAMES}
            for t in tasks.values():
                chg.add_task(t)
            tasks["t21"].wait_for(tasks["t11"])
            tasks["t21"].wait_for(tasks["t12"])
            tasks["t31"].wait_for(tasks["t21"])
            tasks["t32"].wait_for(tasks["t21"])
            for item in setup.split():
                parts = item.split(":")
                if parts[0] == "chg" and parts[1] == "abort":
                    chg.abort()
                elif parts[1].startswith("was-"):
                    tasks[parts[0]].set_status(Status(parts[1][4:].capitalize()))
                else:
                    tasks[parts[0]].set(parts[1], True)
                if len(parts) > 2:
                    for lane in parts[2].split(","):
                        tasks[parts[0]].join_lane(int(lane))
            chg_id = chg.id

        drive(runner, st, chg_id)  # ensure+wait until the change is ready, as snapd's ensureChange

        seen: list[str] = []
        while not events.empty():
            seen.append(events.get())
            # t11/t12 and t31/t32 show in a fixed order when next to each other.
            for i in range(len(seen) - 2, -1, -1):
                prev, nxt = seen[i], seen[i + 1]
                if nxt.split(":")[1] not in ("do-unblock", "undo-unblock") and prev[1] == nxt[1] and prev[2] > nxt[2]:
                    seen[i], seen[i + 1] = nxt, prev
                    continue
                break
        assert " ".join(seen) == expected

        final = {name: Status.HOLD for name in NAMES}
        for item in setup.split():
            parts = item.split(":")
            if parts[0] == "chg" and parts[1] == "abort" and "t12:was-doing" in setup:
                final["t12"] = Status.HOLD
            if not parts[1].startswith("was-"):
                continue
            was = parts[1][4:]
            if was in ("do", "doing", "done"):
                final[parts[0]] = Status.DONE
            elif was in ("abort", "undo", "undoing", "undone"):
                final[parts[0]] = Status.DONE if parts[0] == "t12" else Status.UNDONE
        for ev in seen:
            name, what = ev.split(":")
            if what == "do":
                final[name] = Status.DONE
            elif what == "undo":
                final[name] = Status.UNDONE
            elif what in ("do-error", "undo-error"):
                final[name] = Status.ERROR
            elif what == "do-retry" and name == "t12" and final["t11"] is Status.ERROR:
                final["t12"] = Status.HOLD
        with st:
            got = {t.summary: t.status for t in st.change(chg_id).tasks()}  # type: ignore[union-attr]
        assert got == final
    finally:
        runner.stop()
