# SPDX-License-Identifier: GPL-3.0-or-later
"""A self-finishing handler's next steps from the cache: its outcome claims them without asking the store.

A handler that adds the next steps of its change and sets its own task Done
in one block (docs/runner.md, "Handlers that finish their own task") leaves
the hand-on to its outcome. On SQLite that outcome knows what the Done made
runnable from the records the cache holds, as for a Done the runner records
itself: no query of runnable tasks, and every blockers count in the file
exact at every step (the peers' chain, `python -m bench.peers`,
engine-spawn-done).
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

from engine import Overlord, Status, Task
from engine.session import session_of
from engine.tomb import Tomb
from tests.support.helpers import spawn_first, spawn_next

TIMEOUT = 30.0

#: Tasks whose stored blockers count is not the number of their wait tasks not Done.
STALE = """SELECT t.id, t.blockers FROM tasks t WHERE t.blockers != (
    SELECT count(*) FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id
    WHERE d.task_id = t.id AND w.status != 'Done')"""


def _self_finishing(o: Overlord, tmp_path: Path, n: int, width: int) -> tuple[list[str], list[list[str]]]:
    """_self_finishing runs a chain of n levels, each handler adding width tasks waiting for it and finishing itself.

    It returns the summaries in the order they ran and, for each level after
    the first, the statements the overlord's connection ran between the
    start of that level's first handler and the next level's.
    """
    reader = sqlite3.connect(tmp_path / "state.db", check_same_thread=False)
    seen: list[str] = []
    session_of(o.state).uow.store.raw.set_trace_callback(seen.append)
    ran: list[str] = []
    marks: list[int] = []
    stale: list[list[tuple[int, int]]] = []

    def step(task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            level = task.get("level")
            if not ran or ran[-1].split(".")[0] != str(level):
                marks.append(len(seen))
            ran.append(task.summary)
            stale.append(reader.execute(STALE).fetchall())
            chg = task.change()
            assert chg is not None
            if level + 1 < n and task.summary.endswith(".0"):  # the first task of a level adds the next
                for k in range(width):
                    nxt = st.new_task("step", f"{level + 1}.{k}")
                    nxt.set("level", level + 1)
                    for waited in chg.tasks():
                        if waited.get("level") == level:
                            nxt.wait_for(waited)
                    chg.add_task(nxt)
            task.set_status(Status.DONE)

    o.task_runner.add_handler("step", step)
    st = o.state
    with st:
        chg = st.new_change("spawn", "a chain its handlers build")
        first = st.new_task("step", "0.0")
        first.set("level", 0)
        chg.add_task(first)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with st:
        assert chg.status is Status.DONE
        assert all(t.status is Status.DONE for t in chg.tasks())
    reader.close()
    assert stale == [[]] * len(ran)  # every handler saw every blockers count right
    assert sqlite3.connect(tmp_path / "state.db").execute(STALE).fetchall() == []
    return ran, [seen[a:b] for a, b in itertools.pairwise(marks)]


def _runnable_queries(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("SELECT") and "blockers = 0" in s]


def test_a_self_finishing_handlers_next_step_is_claimed_without_a_runnable_query(overlord: Overlord,
                                                                                  tmp_path: Path) -> None:
    """Each step adds the next and finishes itself: its outcome claims the next step with no query of runnable tasks."""
    ran, levels = _self_finishing(overlord, tmp_path, 12, 1)
    assert ran == [f"{i}.0" for i in range(12)]
    for statements in levels[1:-1]:
        assert _runnable_queries(statements) == [], " | ".join(statements)


def test_a_self_finishing_handler_adding_two_steps_hands_both_on(overlord: Overlord, tmp_path: Path) -> None:
    """A step adds two, both waiting for it; the next level waits for both: each level is handed on, counts exact."""
    ran, levels = _self_finishing(overlord, tmp_path, 6, 2)
    assert [s.split(".")[0] for s in ran] == ["0"] + [str(i) for i in range(1, 6) for _ in range(2)]
    for statements in levels[1:-1]:
        assert _runnable_queries(statements) == [], " | ".join(statements)


def test_a_self_finishing_chain_never_shows_its_change_between_two_steps(overlord: Overlord) -> None:
    """The stored change goes Do -> Doing -> Done as for a chain the runner finishes: a notice each way.

    A handler's block that finishes its task and adds the next (waiting for
    it) leaves the change with no task Doing until its outcome claims the
    next: that status is not stored, nor noticed, in between.
    """
    o = overlord
    ran: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        ran.append(spawn_next(task, 20))

    o.task_runner.add_handler("step", step)
    st = o.state
    chg = spawn_first(st)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with st:
        assert chg.status is Status.DONE
        (notice,) = st.notices(types=["change-update"], keys=[chg.id])
    assert ran == list(range(20))
    assert notice.occurrences == 3  # spawned, Doing, Done
