# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/schema.md: every table is described, and every documented query works.

A database file is built through the engine (a change with failed tasks and
log lines, lanes, edges, at-times, state keys, warnings), then each ```sql
block of the page runs with the sqlite3 module, as a user would run it in the
sqlite3 shell, and must return the rows expected for its heading.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import State, Status, Task, TaskRunner, TaskSet
from engine.db import SCHEMA_HEAD
from engine.testing import FakeClock
from engine.tomb import Tomb
from managers.assertstate import AssertionBook

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
MIN_QUERIES = 5


def doc_queries(text: str) -> list[tuple[str, str]]:
    """doc_queries returns (heading, sql) for every ```sql block, under the nearest heading."""
    out: list[tuple[str, str]] = []
    heading: str | None = None
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip() == "```sql":
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner)
            else:
                raise AssertionError(f"unterminated ```sql block under {heading!r}")
            assert heading is not None, "a ```sql block comes before any heading"
            out.append((heading, "\n".join(body)))
    return out


QUERIES = doc_queries(DOC.read_text(encoding="utf-8"))


def iso(when: datetime | None) -> str | None:
    """iso formats a time as the schema stores it: fixed-width ISO-8601 UTC with Z."""
    return None if when is None else f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"


@dataclass
class Built:
    """Built is the database the queries run on, with what the API said about it."""

    path: Path
    ids: dict[str, int] = field(default_factory=dict)
    changes: list[tuple[int, str, str]] = field(default_factory=list)
    spawn: dict[str, str | None] = field(default_factory=dict)
    ready: dict[str, str | None] = field(default_factory=dict)
    at: dict[str, str | None] = field(default_factory=dict)
    log: dict[str, list[str]] = field(default_factory=dict)
    times: dict[int, tuple[str, str, float, float, int]] = field(default_factory=dict)
    pending_warnings: list[str] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)
    notices: list[tuple[int, str, str, int, str]] = field(default_factory=list)
    #: The runs of change 1's handlers, as chg.timings() shows them: task, phase, attempt, outcome, started, seconds.
    runs: list[tuple[int, str, int, str, str, float]] = field(default_factory=list)
    #: Per change id: its tasks' statuses and log lines, as the API reads them.
    change_tasks: dict[int, list[tuple[int, str, str, list[str]]]] = field(default_factory=dict)


def _work(task: Task, tomb: Tomb) -> None:
    with task.state:
        fail = task.get("fail", None)
        task.logf("working on %s", task.summary)
    if fail:
        raise RuntimeError(fail)


def _undo(task: Task, tomb: Tomb) -> None:
    return None


def build(path: Path) -> Built:
    """build makes the database through the engine API; times are anchored at the real now."""
    now = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(now - timedelta(days=40))
    b = Built(path)
    st = State.open(path, clock=clock)
    try:
        # Warnings: one expired, one shown long ago (due again), one shown
        # recently with a long repeat (not due), one never shown (due).
        with st:
            st.add_warning("old warning")
        clock.set(now - timedelta(days=25))
        with st:
            st.add_warning("recently shown", repeat_after=timedelta(days=30))
            st.okay_warnings(clock())
        clock.set(now - timedelta(days=2))
        with st:
            st.add_warning("mirror slow")
            st.okay_warnings(clock())
        clock.set(now - timedelta(minutes=10))
        with st:
            st.add_warning("disk almost full")
            st.set("settings", {"refresh": {"retries": 3, "hold": "forever"}})
            st.set("seeded", True)
            for snap_id, name in (("id-world", "world"), ("id-hello", "hello")):
                AssertionBook(st).put("snap-declaration", ["16", snap_id], 1,
                                  f"type: snap-declaration\nsnap-name: {name}\n\nSIG",
                                  {"type": "snap-declaration", "authority-id": "root", "series": "16",
                                   "snap-id": snap_id, "snap-name": name})
            AssertionBook(st).put("account", ["acme"], 0, "type: account\n\nSIG", {"authority-id": "root"})

            # Change 1: three lanes; a download and a configure step fail.
            chg = st.new_change("install", "Install foo")
            l1, l2, l3 = st.new_lane(), st.new_lane(), st.new_lane()
            t1 = st.new_task("download", "Download foo")
            t1.set("url", "https://example.com/foo")
            t2 = st.new_task("install", "Install foo")
            t2.wait_for(t1)
            t3 = st.new_task("download", "Download bar")
            t3.set("url", "https://example.com/bar")
            t3.set("fail", "connection refused")
            t4 = st.new_task("install", "Install bar")
            t4.wait_for(t3)
            t5 = st.new_task("configure", "Configure foo")
            t5.set("fail", "bad config")
            TaskSet(t1, t2).join_lane(l1)
            TaskSet(t3, t4).join_lane(l2)
            t5.join_lane(l3)
            for t in (t1, t2, t3, t4, t5):
                chg.add_task(t)
            # Change 2: two tasks in no lane, both succeed.
            chg2 = st.new_change("refresh", "Refresh bar")
            t6 = st.new_task("download", "Download bar again")
            t7 = st.new_task("install", "Install bar again")
            t7.wait_for(t6)
            chg2.add_all(TaskSet(t6, t7))
        runner = TaskRunner(st)
        for kind in ("download", "install", "configure"):
            runner.add_handler(kind, _work, _undo)
        try:
            for _ in range(20):
                runner.ensure()
                runner.wait()
                with st:
                    if all(c.is_ready() and c.is_clean() for c in st.changes()):
                        break
        finally:
            runner.stop()
        with st:
            statuses = {t.summary: t.status for t in st.tasks()}
        assert statuses == {
            "Download foo": Status.DONE, "Install foo": Status.DONE, "Download bar": Status.ERROR,
            "Install bar": Status.HOLD, "Configure foo": Status.ERROR,
            "Download bar again": Status.DONE, "Install bar again": Status.DONE,
        }, "the runner did not bring the changes where the test expects them"

        with st:
            # Change 3: not run; scheduled tasks and a task in Wait.
            chg3 = st.new_change("remodel", "Remodel device", affects=["device"])
            t8 = st.new_task("prepare", "Prepare remodel")
            t8.at(clock() - timedelta(hours=1))
            t9 = st.new_task("request-reboot", "Request reboot")
            t9.wait_for(t8)
            t9.at(clock() + timedelta(hours=1))
            t10 = st.new_task("finish-remodel", "Finish remodel")
            t10.wait_for(t9)
            t10.at(clock() + timedelta(hours=2))
            t11 = st.new_task("confirm", "Confirm with the admin")
            t11.set_to_wait(Status.DONE)
            t11.logf("waiting for %s", "the admin")
            chg3.add_all(TaskSet(t8, t9, t10, t11))
            # Change 4: status set by hand to Done while its task is still Do.
            chg4 = st.new_change("seed", "Mark seeded")
            t12 = st.new_task("mark-seeded", "Mark the system seeded")
            chg4.add_task(t12)
            chg4.set_status(Status.DONE)
            # A task never added to a change.
            t13 = st.new_task("orphan", "Left over")

        # What the API says, to compare the rows with.
        clock.set(datetime.now(UTC))
        with st:
            tasks = {"t1": t1, "t2": t2, "t3": t3, "t4": t4, "t5": t5, "t6": t6, "t7": t7, "t8": t8,
                     "t9": t9, "t10": t10, "t11": t11, "t12": t12, "t13": t13}
            b.ids = {name: int(t.id) for name, t in tasks.items()}
            b.ids.update(c1=int(chg.id), c2=int(chg2.id), c3=int(chg3.id), c4=int(chg4.id))
            b.changes = [(int(c.id), c.kind, c.status.value) for c in st.changes()]
            for name, obj in [*tasks.items(), ("c1", chg), ("c2", chg2), ("c3", chg3), ("c4", chg4)]:
                b.spawn[name] = iso(obj.spawn_time)
                b.ready[name] = iso(obj.ready_time)
            b.at = {name: iso(t.at_time) for name, t in tasks.items()}
            b.log = {name: t.log() for name, t in tasks.items()}
            b.times = {int(t.id): (t.kind, t.status.value, t.doing_time.total_seconds(),
                                   t.undoing_time.total_seconds(), t.attempts) for t in chg.tasks()}
            b.runs = [(int(r.task_id), r.phase, r.attempt, r.outcome, f"{r.started:%Y-%m-%dT%H:%M:%S.%f}Z",
                       r.duration.total_seconds()) for r in chg.timings()]
            b.pending_warnings = [str(w) for w in st.warnings()]
            b.notices = [(int(n.id), n.type, n.key, n.occurrences, n.last_data.get("kind"))
                         for n in st.notices()]
            b.sequences = {"change": 4, "task": int(t13.id), "lane": l3,
                           "notice": max(int(n.id) for n in st.notices())}
            b.change_tasks = {int(c.id): [(int(t.id), t.kind, t.status.value, t.log()) for t in c.tasks()]
                              for c in st.changes()}
    finally:
        st.close()
    return b


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("schema-doc") / "state.db")


@pytest.fixture
def conn(built: Built) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(f"file:{built.path}?mode=ro", uri=True)
    yield c
    c.close()


# -- what each documented query must return --------------------------------------

Expect = Callable[[Built, list[tuple[Any, ...]]], None]


def rows_equal(fn: Callable[[Built], list[tuple[Any, ...]]]) -> Expect:
    def check(b: Built, rows: list[tuple[Any, ...]]) -> None:
        assert rows == fn(b)
    return check


def _log_rows(b: Built, rows: list[tuple[Any, ...]]) -> None:
    # t.log() shows "<time to the second>Z LEVEL message"; the table holds the parts.
    assert [(lv, msg) for _, lv, msg in rows] == [("INFO", "working on Download bar"), ("ERROR", "connection refused")]
    assert [f"{t[:19]}Z {lv} {msg}" for t, lv, msg in rows] == b.log["t3"]
    for t, _, _ in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t), t


def _handler_times(b: Built, rows: list[tuple[Any, ...]]) -> None:
    # The API shows the seconds as a timedelta (to the microsecond).
    assert sorted(r[0] for r in rows) == sorted(b.times)
    for tid, kind, status, doing, undoing, attempts in rows:
        api_kind, api_status, api_doing, api_undoing, api_attempts = b.times[tid]
        assert (kind, status, attempts) == (api_kind, api_status, api_attempts)
        assert doing == pytest.approx(api_doing, abs=1e-6)
        assert undoing == pytest.approx(api_undoing, abs=1e-6)
    assert rows == sorted(rows, key=lambda r: (-(r[3] + r[4]), r[0])), "slowest first"
    ran = {r[0] for r in rows if r[3] > 0}
    assert ran == {b.ids[n] for n in ("t1", "t2", "t3", "t5")}, "the tasks whose handlers ran have a doing_time"


def _state_keys(b: Built, rows: list[tuple[Any, ...]]) -> None:
    assert [k for k, _ in rows] == ["seeded", "settings"]
    assert [json.loads(v) for _, v in rows] == [True, {"refresh": {"retries": 3, "hold": "forever"}}]


def _pending_warnings(b: Built, rows: list[tuple[Any, ...]]) -> None:
    assert [r[0] for r in rows] == ["mirror slow", "disk almost full"]
    assert [r[0] for r in rows] == b.pending_warnings, "the query disagrees with st.warnings()"


STATUSES = ("Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Hold", "Error", "Wait")


def _split(line: str) -> tuple[str, str]:
    """_split reads a t.log() line, "<time> LEVEL message", as (level, message)."""
    _, level, message = line.split(" ", 2)
    return level, message


def _changes_at_a_glance(b: Built, rows: list[tuple[Any, ...]]) -> None:
    expected = []
    for cid, kind, status in b.changes:
        tasks = b.change_tasks[cid]
        count = {s: sum(1 for t in tasks if t[2] == s) for s in STATUSES}
        errors = sum(1 for t in tasks for line in t[3] if _split(line)[0] == "ERROR")
        expected.append((cid, kind, status, len(tasks), count["Done"], count["Error"], errors))
    assert rows == expected
    assert [r[3] for r in rows] == [5, 2, 4, 1] and rows[0][4:] == (2, 2, 2), "the fixture is not what the test expects"


def _left(b: Built, rows: list[tuple[Any, ...]]) -> None:
    unready = [(cid, kind) for cid, kind, _ in b.changes if b.ready[f"c{cid}"] is None]
    expected = [(cid, kind, sum(1 for t in b.change_tasks[cid] if t[2] not in ("Done", "Undone", "Hold", "Error")))
                for cid, kind in unready]
    assert [(r[0], r[1], r[3]) for r in rows] == expected == [(3, "remodel", 4)]
    assert rows[0][2] == "Remodel device"


def _why_failed(b: Built, rows: list[tuple[Any, ...]]) -> None:
    expected = [(cid, tid, kind, _split(log[-1])[1]) for cid, tasks in sorted(b.change_tasks.items())
                for tid, kind, status, log in tasks if status == "Error"]
    assert rows == expected == [(1, _i(b, "t3"), "download", "connection refused"),
                                (1, _i(b, "t5"), "configure", "bad config")]


def _said_last(b: Built, rows: list[tuple[Any, ...]]) -> None:
    expected = [(tid, status, *_split(log[-1])) for tid, _, status, log in b.change_tasks[1] if log]
    assert rows == expected
    assert {r[0] for r in rows} >= {_i(b, "t1"), _i(b, "t3"), _i(b, "t5")}


def _notices(b: Built, rows: list[tuple[Any, ...]]) -> None:
    assert rows == b.notices
    # Every change has one; the expired "old warning" is not there, the others are.
    assert {r[2] for r in rows if r[1] == "change-update"} == {"1", "2", "3", "4"}
    assert {r[2] for r in rows if r[1] == "warning"} == {"recently shown", "mirror slow", "disk almost full"}


def _i(b: Built, name: str) -> int:
    return b.ids[name]


EXPECTED: dict[str, Expect] = {
    "What is going on": rows_equal(lambda b: [
        (1, "install", "Error"), (2, "refresh", "Done"), (3, "remodel", "Do"), (4, "seed", "Done"),
    ]),
    "Changes not ready yet": rows_equal(lambda b: [
        (3, "remodel", "Remodel device", "Do", b.spawn["c3"]),
    ]),
    "How many tasks of a change are in each status": rows_equal(lambda b: [
        ("Done", 2), ("Error", 2), ("Hold", 1),
    ]),
    "The failed tasks of a change, with their last log line": rows_equal(lambda b: [
        (_i(b, "t3"), "download", "Download bar", "ERROR connection refused"),
        (_i(b, "t5"), "configure", "Configure foo", "ERROR bad config"),
    ]),
    "The log of a task": _log_rows,
    "What a task waits for": rows_equal(lambda b: [(_i(b, "t3"), "download", "Error")]),
    "Tasks waiting for a given task": rows_equal(lambda b: [(_i(b, "t4"), "install", "Hold")]),
    "The lanes of a change": rows_equal(lambda b: [
        (1, _i(b, "t1"), "Download foo", "Done"), (1, _i(b, "t2"), "Install foo", "Done"),
        (2, _i(b, "t3"), "Download bar", "Error"), (2, _i(b, "t4"), "Install bar", "Hold"),
        (3, _i(b, "t5"), "Configure foo", "Error"),
    ]),
    "Do tasks that may start now": rows_equal(lambda b: [
        (_i(b, "t8"), 3, "prepare"), (_i(b, "t12"), 4, "mark-seeded"),
    ]),
    "Tasks scheduled for later": rows_equal(lambda b: [
        (_i(b, "t9"), 3, "request-reboot", "Do", b.at["t9"]),
        (_i(b, "t10"), 3, "finish-remodel", "Do", b.at["t10"]),
    ]),
    "Tasks in Wait, and what they become afterwards": rows_equal(lambda b: [(_i(b, "t11"), 3, "confirm", "Done")]),
    "How long each task spent in its handlers": _handler_times,
    "Each run of a change's handlers": rows_equal(lambda b: b.runs),
    "A state key's value": rows_equal(lambda b: [(3,)]),
    "Every state key": _state_keys,
    "A value in the data of tasks": rows_equal(lambda b: [
        (_i(b, "t1"), "https://example.com/foo"), (_i(b, "t3"), "https://example.com/bar"),
    ]),
    "Pending warnings": _pending_warnings,
    "Changes whose status was set by hand": rows_equal(lambda b: [(4, "seed", "Done", "Done")]),
    "Ready changes with tasks left to clean": rows_equal(lambda b: [(4, "seed", "Done", b.ready["c4"])]),
    "Tasks in no change": rows_equal(lambda b: [(_i(b, "t13"), "orphan", "Left over", b.spawn["t13"])]),
    "The last ids handed out": rows_equal(lambda b: [
        ("change", b.sequences["change"]), ("lane", b.sequences["lane"]), ("notice", b.sequences["notice"]),
        ("task", b.sequences["task"]),
    ]),
    "What affects a key, and which changes wait": rows_equal(lambda b: [("device", 3, "remodel", "Do", 0)]),
    "Notices, in the order waiters see them": _notices,
    "The assertions of a type, with a header": rows_equal(lambda b: [
        ("16/id-hello", 1, "root", "hello"), ("16/id-world", 1, "root", "world"),
    ]),
    "Changes at a glance": _changes_at_a_glance,
    "Changes in progress, and how many tasks they have left": _left,
    "Why tasks failed": _why_failed,
    "What each task of a change said last": _said_last,
    "The schema revision": rows_equal(lambda b: [(SCHEMA_HEAD,)]),
}


# -- the tests ---------------------------------------------------------------------


def test_doc_has_enough_queries() -> None:
    assert len(QUERIES) >= MIN_QUERIES, f"docs/schema.md has {len(QUERIES)} ```sql blocks, expected {MIN_QUERIES}+"


def test_every_query_has_its_own_heading_and_expectation() -> None:
    headings = [h for h, _ in QUERIES]
    assert len(headings) == len(set(headings)), f"two queries share a heading: {headings}"
    assert set(headings) - set(EXPECTED) == set(), "documented queries this test does not check"
    assert set(EXPECTED) - set(headings) == set(), "expected queries missing from docs/schema.md"


@pytest.mark.parametrize(("heading", "sql"), QUERIES, ids=[h for h, _ in QUERIES])
def test_documented_query(built: Built, conn: sqlite3.Connection, heading: str, sql: str) -> None:
    try:
        rows = conn.execute(sql).fetchall()
    except sqlite3.Error as e:
        pytest.fail(f"query {heading!r} does not run: {e}\n{sql}")
    check = EXPECTED.get(heading)
    assert check is not None, f"no expected rows for query {heading!r}"
    check(built, rows)


def test_change_status_column_is_what_the_api_says(built: Built, conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT id, kind, status FROM changes ORDER BY id").fetchall()
    assert rows == built.changes


def test_every_table_column_and_index_is_documented(built: Built, conn: sqlite3.Connection) -> None:
    doc = DOC.read_text(encoding="utf-8")
    sections = re.split(r"^### ", doc, flags=re.M)
    by_table = {}
    for sec in sections[1:]:
        m = re.match(r"`(\w+)`", sec)
        if m:
            by_table[m.group(1)] = sec
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    assert "alembic_version" in tables
    for table in tables:
        assert table in by_table, f"docs/schema.md has no '### `{table}`' section"
        section = by_table[table]
        for (col,) in conn.execute(f"SELECT name FROM pragma_table_info('{table}')"):
            assert f"`{col}`" in section, f"column {table}.{col} is not described in docs/schema.md"
    views = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")]
    assert views == ["task_timings", "v_changes", "v_task_last_log"]
    for view in views:
        assert view in by_table, f"docs/schema.md has no '### `{view}`' section"
        for (col,) in conn.execute(f"SELECT name FROM pragma_table_info('{view}')"):
            assert f"`{col}`" in by_table[view], f"column {view}.{col} is not described in docs/schema.md"
    for name, table in conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"):
        assert f"`{name}`" in by_table[table], f"index {name} is not described under {table} in docs/schema.md"
