# SPDX-License-Identifier: GPL-3.0-or-later
"""What a task spawned as a handler runs costs on SQLite: no recount of its blockers, no cleanup of its own.

The peers chain by "each job defers the next" (`python -m bench.peers`,
engine-spawn and engine-change): a handler adds the next step, with its
arguments set, waiting for itself, or submits a new one-task change. A new
task with values is inserted as a whole row with its blockers count, not
recounted by a statement of its own (engine.changeset, ChangeSet.task_rows);
a change whose tasks have no cleanup handler is marked clean by the commit
that makes it ready (engine.runnerguards, RunnerGuards._clean_at_ready), not
by a commit of the next pass. The statements are read from the State's
connection (sqlite3's trace callback).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from engine import Overlord, State, Status, Task
from engine.session import session_of
from engine.tomb import Tomb
from tests.support.helpers import spawn_first, spawn_next

TIMEOUT = 30.0

#: Tasks whose stored blockers count is not the number of their wait tasks not Done.
STALE = """SELECT t.id, t.blockers FROM tasks t WHERE t.blockers != (
    SELECT count(*) FROM task_dependencies d JOIN tasks w ON w.id = d.wait_task_id
    WHERE d.task_id = t.id AND w.status != 'Done')"""


def _traced(st: State) -> list[str]:
    seen: list[str] = []
    session_of(st).uow.store.raw.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())))
    return seen


def _recounts(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("UPDATE tasks SET blockers=(SELECT count(*)")]


def _transactions(statements: list[str]) -> list[list[str]]:
    """_transactions are the statements of each write transaction, BEGIN to COMMIT (PRAGMAs left out)."""
    out: list[list[str]] = []
    cur: list[str] | None = None
    for s in statements:
        if s.startswith("BEGIN"):
            cur = []
        elif s.startswith("COMMIT"):
            if cur is not None:
                out.append(cur)
            cur = None
        elif cur is not None and not s.startswith("PRAGMA"):
            cur.append(s)
    return out


# -- a new task with values is inserted with its blockers count ---------------------------------------------------


def test_a_new_task_with_values_that_waits_is_inserted_counted(db_path: Path) -> None:
    """A new task with a value set, waiting for a cached task, gets its count in its INSERT: no recount statement."""
    st = State.open(db_path)
    try:
        with st:
            chg = st.new_change("install", "install a")
            first, done = st.new_task("download", "get a"), st.new_task("download", "get b")
            chg.add_task(first)
            chg.add_task(done)
            done.set_status(Status.DONE)
        seen = _traced(st)
        with st:
            nxt = st.new_task("link", "link a")
            nxt.set("args", {"name": "a"})
            nxt.wait_for(first)
            nxt.wait_for(done)
            chg.add_task(nxt)
            other = st.new_task("link", "link b")
            other.set("args", {"name": "b"})
            other.wait_for(done)
            chg.add_task(other)
            ids = (int(nxt.id), int(other.id))
        assert _recounts(seen) == [], seen
        assert any(s.startswith("INSERT INTO tasks") and "blockers" in s for s in seen), seen
        con = sqlite3.connect(db_path)
        try:
            got = dict(con.execute("SELECT id, blockers FROM tasks WHERE id IN (?, ?)", ids).fetchall())
            assert got == {ids[0]: 1, ids[1]: 0}
            assert con.execute(STALE).fetchall() == []
        finally:
            con.close()
        with st:
            assert nxt.get("args") == {"name": "a"} and other.get("args") == {"name": "b"}
    finally:
        st.close()


def test_a_chain_its_running_handlers_build_is_never_recounted(overlord: Overlord, db_path: Path) -> None:
    """engine-spawn: each running handler adds the next step (with its number) waiting for itself; no recount."""
    o = overlord
    ran: list[int] = []

    def step(task: Task, tomb: Tomb) -> None:
        ran.append(spawn_next(task, 20, finish=False))

    o.task_runner.add_handler("step", step)
    seen = _traced(o.state)
    chg = spawn_first(o.state)
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:
        assert chg.status is Status.DONE
    assert ran == list(range(20))
    assert _recounts(seen) == []
    con = sqlite3.connect(db_path)
    try:
        assert con.execute(STALE).fetchall() == []
    finally:
        con.close()


# -- a finished change is cleaned by the commit that finishes it ---------------------------------------------------


def _change_chain(o: Overlord, n: int, kind: str = "step") -> tuple[list[int], threading.Event]:
    """_change_chain registers a handler that submits a new one-task change (of kind) for the next step, up to n."""
    ran: list[int] = []
    done = threading.Event()

    def step(task: Task, tomb: Tomb) -> None:
        st = task.state
        with st:
            i: int = task.get("i")
            ran.append(i)
            if i + 1 >= n:
                done.set()
                return
            chg = st.new_change("step", f"step {i + 2}")
            nxt = st.new_task(kind, f"step {i + 2}")
            nxt.set("i", i + 1)
            chg.add_task(nxt)

    o.task_runner.add_handler("step", step)
    with o.state:
        chg = o.state.new_change("step", "step 1")
        first = o.state.new_task(kind, "step 1")
        first.set("i", 0)
        chg.add_task(first)
    return ran, done


def _all_clean(o: Overlord) -> bool:
    with o.state:
        return all(c.is_ready() and c.is_clean() and all(t.is_clean() for t in c.tasks()) for c in o.state.changes())


def test_a_change_without_cleanups_is_clean_once_the_commit_that_finishes_it_is(overlord: Overlord) -> None:
    """engine-change: each handler submits the next one-task change; no commit is spent on a change's clean flag.

    Each change becomes ready in the outcome's commit, which writes its
    row (ready, clean) and its task's (Done, clean): no later commit
    marks it clean, and no pass has a cleanup to do.
    """
    o = overlord
    seen = _traced(o.state)
    ran, done = _change_chain(o, 20)
    o.loop()
    assert done.wait(TIMEOUT)
    o.stop()
    assert ran == list(range(20))
    readies = [s for s in seen if s.startswith("UPDATE changes SET") and "ready_time='" in s]
    assert len(readies) == 20 and all("clean=1" in s for s in readies), readies
    cleanups = [t for t in _transactions(seen)
                if t and all(s.startswith(("UPDATE tasks SET", "UPDATE changes SET")) for s in t)
                and any("clean=1" in s for s in t) and not any("ready_time='" in s for s in t)]
    assert cleanups == []
    assert _all_clean(o)


def test_a_change_whose_task_has_a_cleanup_handler_is_cleaned_by_a_pass(overlord: Overlord) -> None:
    """A kind with a cleanup handler: the change is ready unclean, and a pass runs the cleanup, as before."""
    o = overlord
    cleaned: list[int] = []
    all_cleaned = threading.Event()

    def cleanup(task: Task, tomb: Tomb) -> None:
        with task.state:
            cleaned.append(task.get("i"))
            if len(cleaned) == 5:
                all_cleaned.set()

    ran, done = _change_chain(o, 5)
    o.task_runner.add_cleanup("step", cleanup)
    o.loop()
    assert done.wait(TIMEOUT)
    assert all_cleaned.wait(TIMEOUT)
    o.stop()
    assert ran == list(range(5)) and sorted(cleaned) == list(range(5))
    assert _all_clean(o)


def test_a_change_of_an_optional_handlers_kind_is_cleaned_by_a_pass(overlord: Overlord) -> None:
    """A kind only an optional handler's matcher takes: left to the pass (which asks the matcher), clean in the end."""
    o = overlord
    later = threading.Event()

    def opt(task: Task, tomb: Tomb) -> None:
        return None

    o.task_runner.add_optional_handler(lambda task: task.kind == "opt", opt)
    o.task_runner.add_handler("later", lambda task, tomb: later.set())
    seen = _traced(o.state)
    with o.state:
        chg = o.state.new_change("step", "one")
        chg.add_task(o.state.new_task("opt", "one"))
    o.loop()
    assert chg.wait_ready(TIMEOUT)
    with o.state:  # (a pass claims this one: by then it cleaned the first, in the same commit or before)
        chg2 = o.state.new_change("step", "two")
        chg2.add_task(o.state.new_task("later", "two"))
    assert later.wait(TIMEOUT)
    assert chg2.wait_ready(TIMEOUT)
    o.stop()
    with o.state:
        assert chg.is_clean()
    ready = [s for s in seen if s.startswith("UPDATE changes SET") and "ready_time='" in s and "summary='one'" in s]
    assert len(ready) == 2 and "clean=0" in ready[0] and "clean=1" in ready[1], ready  # ready, then cleaned


def test_a_change_made_ready_while_its_handler_still_runs_is_left_to_a_pass(overlord: Overlord) -> None:
    """A handler that finishes its own task, the last of its change, and runs on: not clean while it runs."""
    o = overlord
    finished, go, returned = threading.Event(), threading.Event(), threading.Event()

    def own(task: Task, tomb: Tomb) -> None:
        with task.state:
            task.set_status(Status.DONE)
        finished.set()
        try:
            assert go.wait(TIMEOUT)
        finally:
            returned.set()

    o.task_runner.add_handler("own", own)
    with o.state:
        chg = o.state.new_change("step", "one")
        chg.add_task(o.state.new_task("own", "one"))
    o.loop()
    try:
        assert finished.wait(TIMEOUT)
        assert chg.wait_ready(TIMEOUT)
        with o.state:
            assert chg.is_ready() and not chg.is_clean()
            assert not any(t.is_clean() for t in chg.tasks())
    finally:
        go.set()
    assert returned.wait(TIMEOUT)


def test_a_runner_driven_by_hand_cleans_at_its_next_pass_as_before(db_path: Path) -> None:
    """Without the loop (ensure and wait by hand, snapd's way), the change is ready unclean until the next pass."""
    st = State.open(db_path)
    from engine import TaskRunner

    runner = TaskRunner(st)
    runner.add_handler("noop", lambda task, tomb: None)
    try:
        with st:
            chg = st.new_change("install", "one")
            chg.add_task(st.new_task("noop", "one"))
        runner.ensure()
        runner.wait()
        with st:
            assert chg.is_ready() and not chg.is_clean()
        runner.ensure()
        runner.wait()
        with st:
            assert chg.is_clean()
    finally:
        runner.stop()
        st.close()
