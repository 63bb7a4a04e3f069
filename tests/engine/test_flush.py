# SPDX-License-Identifier: GPL-3.0-or-later
"""The flush: a unit of work's change set goes to the store as one write, its statements in a fixed order."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine import DatabaseBusyError, State, Status, Task, changeset
from engine.session import session_of
from engine.store.base import ChangeSetWrite


class Spy:
    """Spy records the store's writes of one State: each write's rows, and the statements' names in order."""

    def __init__(self, st: State, monkeypatch: pytest.MonkeyPatch) -> None:
        store: Any = session_of(st).store
        self.writes: list[ChangeSetWrite] = []
        self.statements: list[str] = []

        def wrap(verb: str) -> None:
            real = getattr(store, verb)

            def spied(c: Any, *args: Any) -> Any:
                self.statements.append(c.name)
                return real(c, *args)

            monkeypatch.setattr(store, verb, spied)

        for verb in ("execute", "executemany", "execute_in"):
            wrap(verb)
        write = store.write

        def spied_write(changes: ChangeSetWrite) -> None:
            self.writes.append(changes)
            write(changes)

        monkeypatch.setattr(store, "write", spied_write)


def test_a_commit_writes_its_change_set_with_one_store_verb_in_a_fixed_order(
        st: State, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(st, monkeypatch)
    with st:
        chg = st.new_change("install", "install a")
        first, second = st.new_task("download", "get a"), st.new_task("link", "link a")
        second.wait_for(first)
        chg.add_task(first)
        chg.add_task(second)
        first.join_lane(st.new_lane())
        first.logf("fetched %d bytes", 3)
        st.set("seeded", True)
        cid, second_id = chg.id, int(second.id)
    assert len(spy.writes) == 1
    w = spy.writes[0]
    # (a task as new_task made it goes in new_tasks, the shorter insert: its edges, lanes and log are rows apart;
    # on SQLite, one that waits goes in counted_tasks, with its blockers count, and is not recounted)
    assert [len(w.changes), len(w.tasks) + len(w.new_tasks) + len(w.counted_tasks), len(w.edges), len(w.lanes),
            len(w.log)] == [1, 2, 1, 1, 1]
    counted = backend == "sqlite"
    assert [r[0] for r in w.counted_tasks] == ([second_id] if counted else [])
    assert w.recount == ([] if counted else [second_id]) and "seeded" in w.values
    # Foreign keys and recounts depend on this order; the books (notices, here) come after the write.
    # (PostgreSQL writes no sequence row: it hands out ids from the database.)
    order = ["insert_changes", "insert_new_tasks",
             *(["insert_counted_tasks", "insert_edges"] if counted else ["insert_edges", "recount_blockers"]),
             "insert_lanes", "insert_log", "trim_log", "upsert_state_value",
             *(["upsert_sequence"] if backend == "sqlite" else [])]
    assert [name for name in spy.statements if name in order] == order
    assert spy.statements.index(order[-1]) < spy.statements.index("upsert_notice")
    with st:
        again = st.change(cid)
        assert again is not None and again.status is Status.DO
        assert [t.kind for t in again.tasks()] == ["download", "link"]
        assert st.get("seeded") is True


def test_the_changes_statuses_are_computed_after_their_tasks_are_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # (SQLite: PostgreSQL settles the changes at commit, under their row locks, engine.shared.)
    st = State.open()
    with st:
        chg = st.new_change("install", "install a")
        task = st.new_task("download", "get a")
        chg.add_task(task)
        chg.add_task(st.new_task("link", "link a"))
        cid = int(chg.id)
    spy = Spy(st, monkeypatch)
    with st:
        task.set_status(Status.DOING)
    assert len(spy.writes) == 1
    w = spy.writes[0]
    assert w.statuses == [(Status.DOING.value, cid)]
    assert spy.statements.index("update_tasks") < spy.statements.index("update_change_status")
    st.close()


# -- a single writer rewrites only what changed in a task's row ---------------------------------------------


def _stored(db_path: Path, tid: int) -> tuple[Any, ...]:
    con = sqlite3.connect(db_path)
    try:
        return tuple(con.execute("SELECT status, summary, attempts FROM tasks WHERE id = ?", (tid,)).fetchone())
    finally:
        con.close()


def _task(st: State) -> tuple[Task, int]:
    with st:
        chg = st.new_change("install", "install a")
        task = st.new_task("download", "get a")
        chg.add_task(task)
        return task, int(task.id)


def test_a_task_rewritten_writes_only_the_columns_that_changed(file_st: State) -> None:
    task, _ = _task(file_st)
    updates: list[str] = []
    session_of(file_st).store.raw.set_trace_callback(
        lambda sql: updates.append(sql) if sql.startswith("UPDATE tasks SET") and "blockers" not in sql else None)
    with file_st:
        task.set_status(Status.DOING)
    with file_st:
        task.set_status(Status.DONE)
    sets = [u.split(" WHERE")[0] for u in updates]
    assert len(sets) == 2 and sets[0] == "UPDATE tasks SET status='Doing'"
    assert sets[1].startswith("UPDATE tasks SET status='Done', ready_time='") and sets[1].count("=") == 2


def test_the_rows_of_a_big_fan_out_are_not_kept_but_rewritten_in_part(
        file_st: State, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # More than KEEP_INSERTED new tasks in one commit: no row is kept per task, but a task inserted as new_task
    # made it, in its change, is known to be stored so (its claim rewrites its status alone); any other is
    # rewritten whole the first time.
    monkeypatch.setattr(changeset, "KEEP_INSERTED", 2)
    with file_st:
        orphan = file_st.new_task("download", "get the orphan")  # inserted in no change
    with file_st:
        chg = file_st.new_change("install", "install a")
        tasks = [file_st.new_task("download", f"get {i}") for i in range(3)]
        tasks[2].set("url", "https://example.com/a")  # not as new_task made it: inserted whole
        for task in tasks:
            chg.add_task(task)
        chg.add_task(orphan)  # its row holds no change yet
        cid, oid, tids = int(chg.id), int(orphan.id), [int(t.id) for t in tasks]
    updates: list[str] = []
    session_of(file_st).store.raw.set_trace_callback(
        lambda sql: updates.append(sql.split(" WHERE")[0])
        if sql.startswith("UPDATE tasks SET") and "blockers" not in sql else None)
    with file_st:
        tasks[0].set_status(Status.DOING)
    with file_st:
        tasks[0].set_status(Status.DONE)
        tasks[1].set_status(Status.DOING)
        tasks[2].set_status(Status.DOING)
    assert updates[0] == "UPDATE tasks SET status='Doing'"
    assert updates[1].startswith("UPDATE tasks SET status='Done', ready_time='") and updates[1].count("=") == 2
    assert "UPDATE tasks SET status='Doing'" in updates[2:]  # tasks[1], in part
    assert sum(u.startswith("UPDATE tasks SET change_id=") for u in updates[2:]) == 1  # tasks[2], whole
    assert [_stored(db_path, tid)[0] for tid in tids] == ["Done", "Doing", "Doing"]
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT id, change_id, status, data FROM tasks ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == [(oid, cid, "Do", "{}"), (tids[0], cid, "Done", "{}"), (tids[1], cid, "Doing", "{}"),
                    (tids[2], cid, "Doing", '{"url":"https://example.com/a"}')]


def test_a_column_changed_and_changed_back_in_one_unit_is_stored_as_last_set(file_st: State, db_path: Path) -> None:
    task, tid = _task(file_st)
    with file_st:
        task.set_status(Status.DOING)  # (a row rewritten is kept as the database's: the next rewrites are in part)
    with file_st:
        task.set_status(Status.DO)
        session_of(file_st).uow.flush()  # (as a hand-on does, between an outcome and the claim)
        task.set_status(Status.DOING)  # back to what the database held before the unit
    assert _stored(db_path, tid)[0] == "Doing"


def test_rows_written_by_a_refused_commit_are_written_again_by_the_next(
        file_st: State, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task, tid = _task(file_st)
    store: Any = session_of(file_st).store
    commit = store.commit

    def refused() -> None:
        monkeypatch.setattr(store, "commit", commit)
        raise DatabaseBusyError("cannot write: locked (the test's)")

    with file_st:
        task.set_status(Status.DOING)
    monkeypatch.setattr(store, "commit", refused)
    with pytest.raises(DatabaseBusyError), file_st:
        task.set_status(Status.DO)  # written in the transaction, then rolled back and kept
    assert _stored(db_path, tid)[0] == "Doing"
    with file_st:
        pass
    assert _stored(db_path, tid)[0] == "Do"
