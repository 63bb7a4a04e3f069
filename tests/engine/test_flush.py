# SPDX-License-Identifier: GPL-3.0-or-later
"""The flush: a unit of work's change set goes to the store as one write, its statements in a fixed order."""

from __future__ import annotations

from typing import Any

import pytest

from engine import State, Status
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
    # (a task as new_task made it goes in new_tasks, the shorter insert: its edges, lanes and log are rows apart)
    assert [len(w.changes), len(w.tasks) + len(w.new_tasks), len(w.edges), len(w.lanes), len(w.log)] == [1, 2, 1, 1, 1]
    assert w.recount == [second_id] and "seeded" in w.values
    # Foreign keys and recounts depend on this order; the books (notices, here) come after the write.
    # (PostgreSQL writes no sequence row: it hands out ids from the database.)
    order = ["insert_changes", "insert_new_tasks", "insert_edges", "recount_blockers", "insert_lanes", "insert_log",
             "trim_log", "upsert_state_value", *(["upsert_sequence"] if backend == "sqlite" else [])]
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
