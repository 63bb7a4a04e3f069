# SPDX-License-Identifier: GPL-3.0-or-later
"""What independent tasks (W1's shape) cost the PostgreSQL server in rows and statements: claims, leases, outcomes.

Each test runs one Overlord on a fresh database, counts what its store sends
(never how long anything takes), and checks what the rows say at the end.
docs/performance.md, "## W1 and two hosts on PostgreSQL (issue 25, hpg7, 2026-12-08)".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from engine import Overlord, State, Status, Task
from engine.store.postgresql_writes import UPDATE_TASKS_UNLEASED
from engine.tomb import Tomb
from tests.support.pgcluster import connect

WAIT = 60.0  # generous: a bound for a loaded machine, never a timing assertion
END_LEASES = "UPDATE tasks SET runner = NULL, lease_until = NULL WHERE id = ANY (%s) AND lease_until IS NOT NULL"


@pytest.fixture
def runner4(pg_url: str) -> Iterator[Overlord]:
    """runner4 is an Overlord of 4 workers on a fresh PostgreSQL database (outcomes recorded a few at a time)."""
    o = Overlord(url=pg_url, workers=4)
    yield o
    o.stop()
    o.state.close()


def _independent(st: State, n: int) -> Any:
    with st:
        chg = st.new_change("w1", f"{n} independent tasks")
        for i in range(n):
            chg.add_task(st.new_task("noop", f"task {i}"))
    return chg


def _row_writes(store: Any) -> tuple[Counter[int], Counter[int]]:
    """_row_writes counts, per task, the full-row UPDATEs the store sends and the lease-ending UPDATEs of its own."""
    rows: Counter[int] = Counter()
    ended: Counter[int] = Counter()
    executemany, send = store.executemany, store.send

    def spy_many(c: Any, batch: Any) -> None:
        if c.name in ("update_tasks", UPDATE_TASKS_UNLEASED.name):
            rows.update(int(r[-1]) for r in batch)
        executemany(c, batch)

    def spy_send(sql: str, args: Any = ()) -> None:
        if sql == END_LEASES:
            ended.update(int(t) for t in args[0])
        send(sql, args)

    store.executemany, store.send = spy_many, spy_send
    return rows, ended


def test_an_outcome_ends_its_lease_in_the_update_of_its_row(runner4: Overlord, pg_url: str) -> None:
    """A task's Done and the end of its lease are one UPDATE of its row: no second UPDATE (a row version with
    its index entries, lease_until being indexed) clears the lease apart. Every lease is still ended."""
    o = runner4
    o.task_runner.add_handler("noop", lambda task, tomb: None)
    chg = _independent(o.state, 40)
    rows, ended = _row_writes(o.state._uow.store)
    o.loop()
    assert chg.wait_ready(WAIT)
    o.stop()
    with o.state:
        assert chg.status is Status.DONE
    with o.state:
        ids = [int(t.id) for t in chg.tasks()]
    assert not any(ended[t] for t in ids), "a lease ended in an UPDATE of its own"
    # Doing (the claim's unit), Done with the lease cleared; a third only where the cleanup pass came (clean).
    assert all(2 <= rows[t] <= 3 for t in ids), sorted(rows[t] for t in ids)
    with connect(pg_url) as conn:
        left = conn.execute("SELECT count(*) FROM tasks WHERE runner IS NOT NULL OR lease_until IS NOT NULL")
        assert left.fetchone()[0] == 0


def test_a_flush_writes_its_task_rows_in_one_statement(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of the tasks a unit of work changed go to the server as one UPDATE (their columns as arrays), not one
    statement a row; each row reads back as written, whatever its columns hold."""
    from engine.store.postgresql_link import PostgresLink
    from engine.store.postgresql_writes import UPDATE_TASKS_BATCH

    st = State.open(url=pg_url)
    try:
        with st:
            chg = st.new_change("c", "ten tasks")
            tasks = [st.new_task("k", f"task {i}") for i in range(10)]
            for t in tasks:
                chg.add_task(t)
            cid = chg.id
        single: list[int] = []
        batches: list[int] = []
        executemany, send = PostgresLink.executemany, PostgresLink.send

        def spy_many(self: Any, c: Any, rows: Any) -> None:
            if c.name in ("update_tasks", UPDATE_TASKS_UNLEASED.name):
                single.extend(int(r[-1]) for r in rows)
            executemany(self, c, rows)

        def spy_send(self: Any, sql: str, args: Any = ()) -> None:
            if sql == UPDATE_TASKS_BATCH:
                batches.append(len(args[-1]))
            send(self, sql, args)

        monkeypatch.setattr(PostgresLink, "executemany", spy_many)
        monkeypatch.setattr(PostgresLink, "send", spy_send)
        with st:
            for i, t in enumerate(tasks):
                t.set("n", i)
                t.set("text", "it's \"quoted\", {braced} and ünïcode" if i % 2 else None)
                t.set_progress(f"step {i}", i, 10)
            tasks[3].set_status(Status.HOLD)
        assert batches == [10] and not single, (batches, single)
    finally:
        st.close()
    again = State.open(url=pg_url)
    try:
        with again:
            for i, t in enumerate(again.change(cid).tasks()):
                assert t.get("n") == i
                assert t.get("text", None) == ("it's \"quoted\", {braced} and ünïcode" if i % 2 else None)
                assert t.progress() == (f"step {i}", i, 10)
                assert t.status is (Status.HOLD if i == 3 else Status.DO)
    finally:
        again.close()


def test_rows_with_no_exact_json_form_are_written_one_by_one(pg_url: str) -> None:
    """A value JSON cannot carry exactly (a float that is not finite) sends the flush's rows one statement each,
    so that every row reads back as written."""
    from engine.store.statements import TASK_COLUMNS

    st = State.open(url=pg_url)
    try:
        with st:
            chg = st.new_change("c", "two tasks")
            for i in range(2):
                chg.add_task(st.new_task("k", f"task {i}"))
            ids = [int(t.id) for t in chg.tasks()]
        store = st._uow.store
        at = TASK_COLUMNS.index("doing_time") - 1  # (an update's row: the columns but the id, then the id)
        with st:
            rows = [[*r[1:], r[0]] for r in store.task_rows(ids)]
            rows[0][at], rows[1][at] = float("inf"), 2.5
            store.executemany(store.sql["update_tasks"], rows)
    finally:
        st.close()
    with connect(pg_url) as conn:
        got = dict(conn.execute("SELECT id, doing_time FROM tasks WHERE id = ANY (%s)", (ids,)).fetchall())
    assert got == {ids[0]: float("inf"), ids[1]: 2.5}


def test_a_claim_starts_the_oldest_runnable_task_first_whatever_row_was_written_last(pg_url: str) -> None:
    """Of two runnable tasks and one worker, the older one (the lower id) starts first, as on SQLite, also when
    the older task's row was written after the newer one's: UPDATE ... RETURNING gives the claimed rows in the
    heap's order, which a row's later version changes."""
    o = Overlord(url=pg_url, workers=1)
    st = o.state
    started: list[str] = []

    def note(task: Task, tomb: Tomb) -> None:
        with task.state:
            started.append(task.summary)

    o.task_runner.add_handler("k", note)
    try:
        with st:
            chg = st.new_change("order", "two independent tasks")
            older, newer = st.new_task("k", "older"), st.new_task("k", "newer")
            chg.add_task(older)
            chg.add_task(newer)
        with st:
            older.set("touched", True)  # the older task's row is written again: its version is now the newer
        o.loop()
        assert chg.wait_ready(WAIT)
        assert started == ["older", "newer"]
    finally:
        o.stop()
        st.close()
