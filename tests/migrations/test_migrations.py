# SPDX-License-Identifier: GPL-3.0-or-later
"""Alembic migrations: one head, `alembic check` clean, round trips, and the fast create path.

A new database is created by State.open straight from the models (no
migration runs); these tests prove that the schema the migrations build is
the same, that the alembic CLI works from the checkout (alembic.ini,
-x db=PATH), and that databases of unknown or older revisions are handled.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from engine import Overlord, State, StateEngine, Status, TaskRunner
from engine import metadata as engine_metadata
from engine.db import SCHEMA_HEAD, alembic_config
from engine.errors import DatabaseError, EngineError, SchemaVersionError
from engine.models import made_on
from engine.testing import FakeClock
from managers.assertstate import AssertionBook
from tests.fixtures.make_database import (
    FixedClock,
    close,
    compare,
    describe,
    fixture_path,
    load_description,
    missing,
)
from tests.support.schema import (
    REPO,
    Dump,
    alembic,
    copy_db,
    downgrade,
    dump,
    normalised_schema,
    project,
    revision_of,
    revisions,
    rows,
    tables,
    upgrade,
)

#: The tables of 0007_coordination (events, concurrency slots, schedules).
COORDINATION_TABLES = {"events", "event_waits", "concurrency_slots", "schedules", "schedule_runs"}
ENGINE_TABLES = {"changes", "tasks", "task_dependencies", "task_lanes", "task_log", "state_data", "warnings",
                 "sequences", "assertions", "notices", "change_keys", "change_affects", *COORDINATION_TABLES,
                 "task_timing_batches", "ensure_timings"}


@pytest.fixture(scope="module")
def cli_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cli_head is a database the alembic CLI upgraded to head (copy it before use)."""
    db = tmp_path_factory.mktemp("cli") / "head.db"
    alembic(db, "upgrade", "head")
    return db


def metadata_diffs(db: Path) -> list[object]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "render_as_batch": True,
                # (An index of PostgreSQL's own, ddl_if, is not made on SQLite.)
                "include_object": lambda obj, name, type_, reflected, to: reflected or made_on(obj, "sqlite"),
            })
            with warnings.catch_warnings():  # (that index's expression key cannot be reflected on SQLite either)
                warnings.filterwarnings("ignore", message="autogenerate skipping metadata-specified expression-based"
                                        " index 'ix_tasks_change_unready'", category=UserWarning)
                return list(compare_metadata(ctx, engine_metadata))
    finally:
        engine.dispose()


def fill(st: State, clock: FakeClock) -> None:
    """fill writes one of everything through the engine."""
    with st:
        chg = st.new_change("install", "Install foo", key="request-1", affects=["snap:foo"])
        lane = st.new_lane()
        t1 = st.new_task("download", "Download foo")
        t2 = st.new_task("install", "Install foo")
        t2.wait_for(t1)
        t1.join_lane(lane)
        t2.join_lane(lane)
        t1.set("url", "https://example.com/foo")
        t1.logf("fetching %s", "foo")
        t2.at(clock() + timedelta(hours=1))
        chg.add_task(t1)
        chg.add_task(t2)
        chg.set("origin", "test")
        st.set("config", {"retries": 3})
        st.add_warning("disk almost full")
        st.new_task("orphan", "Left over")
        AssertionBook(st).put("account", ["acme"], 2, "type: account\naccount-id: acme\n\nSIG",
                          {"type": "account", "account-id": "acme", "authority-id": "root"})
        st.emit("approval", {"ok": True})
    # t1 done by its handler: one run, and one ensure pass kept (engine.timings), written by the next commit.
    runner = TaskRunner(st)
    runner.add_handler("download", lambda task, tomb: None)
    engine = StateEngine(st)
    engine.add_manager(runner)
    engine.ensure_threshold = 0
    engine.start_up()
    engine.ensure()
    runner.wait()
    runner.stop()
    with st:
        st.set("timed", True)


def filled_copy(src: Path, dst: Path, clock: FakeClock) -> Path:
    """filled_copy copies a database to dst and fills it through the engine (fill)."""
    db = copy_db(src, dst)
    st = State.open(db, clock=clock)
    try:
        fill(st, clock)
    finally:
        st.close()
    with sqlite3.connect(db) as conn:  # what only a runner or a schedule writes: by hand
        conn.execute("INSERT INTO event_waits (task_id, key, deadline) VALUES (2, 'approval', NULL)")
        conn.execute("INSERT INTO concurrency_slots (task_id, key, started) VALUES (1, 'downloads', "
                     "'2026-01-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO schedules (name, spec, template, created) VALUES ('nightly', '0 3 * * *', "
                     "'{\"kind\": \"refresh\"}', '2026-01-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO schedule_runs (name, slot, change_id, time) VALUES ('nightly', "
                     "'2026-01-01T03:00:00.000000Z', 1, '2026-01-01T03:00:00.000000Z')")
    return db


def counts(db: Path, without: str | set[str] = "") -> dict[str, int]:
    gone = {without} if isinstance(without, str) else without
    return {t: int(rows(db, f"SELECT count(*) FROM {t}")[0][0])  # type: ignore[arg-type]
            for t in sorted(ENGINE_TABLES - gone)}


# -- heads and alembic check ---------------------------------------------------------


def test_single_head_is_schema_head() -> None:
    runtime = ScriptDirectory.from_config(alembic_config())
    assert runtime.get_heads() == [SCHEMA_HEAD]
    checkout = ScriptDirectory.from_config(Config(str(REPO / "alembic.ini")))
    assert checkout.get_heads() == [SCHEMA_HEAD]
    assert {r.revision for r in checkout.walk_revisions()} == {r.revision for r in runtime.walk_revisions()}


def test_alembic_check_is_clean(cli_head: Path, tmp_path: Path) -> None:
    db = copy_db(cli_head, tmp_path / "check.db")
    assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
    out = alembic(db, "check")
    assert "No new upgrade operations detected" in out


# -- the fast create path equals the migrations ---------------------------------------


def test_migrated_schema_equals_the_schema_state_open_creates(cli_head: Path, tmp_path: Path) -> None:
    migrated = copy_db(cli_head, tmp_path / "migrated.db")
    fresh = tmp_path / "fresh.db"
    State.open(fresh).close()
    a, b = normalised_schema(migrated), normalised_schema(fresh)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], f"{key} differs between the migration and State.open"
    assert tables(fresh) == ENGINE_TABLES | {"alembic_version"}
    for db in (migrated, fresh):
        assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
        assert sorted(rows(db, "SELECT name, last_id FROM sequences")) == [("change", 0), ("lane", 0), ("task", 0)]
        assert metadata_diffs(db) == [], f"{db.name} differs from the models"


# -- round trip with rows -----------------------------------------------------------


def test_upgrade_downgrade_round_trip_with_rows(cli_head: Path, tmp_path: Path, clock: FakeClock) -> None:
    db = filled_copy(cli_head, tmp_path / "trip.db", clock)
    assert all(n > 0 for n in counts(db).values()), counts(db)

    alembic(db, "downgrade", "base")
    assert tables(db) == {"alembic_version"}
    assert rows(db, "SELECT version_num FROM alembic_version") == []

    alembic(db, "upgrade", "head")
    assert tables(db) == ENGINE_TABLES | {"alembic_version"}
    assert normalised_schema(db) == normalised_schema(_fresh(tmp_path))
    st = State.open(db, clock=clock)
    try:
        with st:
            assert st.changes() == []
            chg = st.new_change("install", "Install again")
            t = st.new_task("download", "Download again")
            chg.add_task(t)
        with st:
            assert [c.id for c in st.changes()] == ["1"]
            assert st.task("1") == t
    finally:
        st.close()
    assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]


def _fresh(tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh-for-compare.db"
    if not fresh.exists():
        State.open(fresh).close()
    return fresh


# -- databases of other revisions --------------------------------------------------------


def test_unknown_revision_is_refused_and_the_file_left_untouched(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "future.db"
    st = State.open(db, clock=clock)
    try:
        fill(st, clock)
    finally:
        st.close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.close()
    before = db.read_bytes()
    siblings = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(SchemaVersionError) as excinfo:
        State.open(db, clock=clock)
    message = str(excinfo.value)
    assert "9999_future" in message
    assert SCHEMA_HEAD in message
    assert str(db) in message
    assert isinstance(excinfo.value, DatabaseError)
    assert isinstance(excinfo.value, EngineError)

    assert db.read_bytes() == before, "refusing the database changed the file"
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings
    assert rows(db, "SELECT version_num FROM alembic_version") == [("9999_future",)]
    # Refused again, the same way: nothing was half done the first time.
    with pytest.raises(SchemaVersionError):
        State.open(db, clock=clock)
    assert db.read_bytes() == before


def test_database_built_by_the_alembic_cli_is_accepted_and_keeps_its_rows(
        cli_head: Path, tmp_path: Path, clock: FakeClock) -> None:
    db = filled_copy(cli_head, tmp_path / "cli.db", clock)
    before = counts(db)

    st = State.open(db, clock=clock)
    try:
        with st:
            chg = st.change("1")
            assert chg is not None
            assert (chg.kind, chg.summary, chg.get("origin")) == ("install", "Install foo", "test")
            t1, t2 = chg.tasks()
            assert (t1.status, t2.status) == (Status.DONE, Status.DO)
            assert t2.wait_tasks() == [t1]
            assert t1.lanes() == t2.lanes() == [1]
            assert t1.get("url") == "https://example.com/foo"
            assert t1.log()[-1].endswith(" INFO fetching foo")
            assert t2.at_time == clock() + timedelta(hours=1)
            assert st.get("config") == {"retries": 3}
            assert [str(w) for w in st.warnings()] == ["disk almost full"]
            assert st.task_count() == 3
            # The sequences go on where they were.
            assert st.new_change("next", "Next").id == "2"
            assert st.new_lane() == 2
    finally:
        st.close()
    after = counts(db)
    # The new change, and its change-update notice.
    assert after == {**before, "changes": before["changes"] + 1, "notices": before["notices"] + 1}
    assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]


def test_database_at_alembic_base_is_upgraded_by_open(cli_head: Path, tmp_path: Path, clock: FakeClock) -> None:
    """An older database: Alembic's base revision (an empty alembic_version) is upgraded to head."""
    db = copy_db(cli_head, tmp_path / "base.db")
    alembic(db, "downgrade", "base")
    assert tables(db) == {"alembic_version"}
    st = State.open(db, clock=clock)
    try:
        fill(st, clock)
        with st:
            assert [c.id for c in st.changes()] == ["1"]
    finally:
        st.close()
    assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
    assert normalised_schema(db) == normalised_schema(_fresh(tmp_path))


# -- each migration, one step down and up again, with rows present ------------------------

#: The migrations that cannot be downgraded, with the reason their docstring gives on a line
#: "Downgrade: impossible (...)"; their downgrade() raises. Naming one here is a decision.
IRREVERSIBLE: dict[str, str] = {}
_IRREVERSIBLE = re.compile(r"^Downgrade: impossible\b", re.MULTILINE)


def _durations_to_the_microsecond(d: Dump) -> Dump:
    columns, data = d["task_timings"]
    i = columns.index("duration")
    rounded = [(*row[:i], round(cast(float, row[i]), 6), *row[i + 1:]) for row in data]
    return {**d, "task_timings": (columns, sorted(rounded, key=repr))}


#: The migrations whose round trip keeps less than the older revision held: the older rows pass through what
#: they keep before being compared with those the downgrade gives back. Naming one here is a decision.
LOSSY: dict[str, Callable[[Dump], Dump]] = {
    # A run's duration is kept to the microsecond (as every reader showed it: a TaskTiming's timedelta).
    "0011_h27pack_timing_batches": _durations_to_the_microsecond,
}


def test_irreversible_migrations_say_so_and_are_named_here() -> None:
    marked = {s.revision for s in revisions() if _IRREVERSIBLE.search(s.module.__doc__ or "")}
    assert marked == set(IRREVERSIBLE), "a migration's docstring and IRREVERSIBLE disagree"


def _fixture_copy(revision: str, dst: Path) -> Path:
    src = fixture_path(revision)
    if not src.exists():
        pytest.fail(missing(revision))
    shutil.copyfile(src, dst)
    return dst


def _reference(tmp_path: Path, revision: str) -> Path:
    """_reference is an empty database that Alembic upgraded to revision."""
    db = tmp_path / f"reference-{revision}.db"
    if not db.exists():
        upgrade(db, revision)
    return db


@pytest.mark.parametrize("revision", [s.revision for s in revisions()])
def test_migration_upgrades_downgrades_and_upgrades_again_with_rows(revision: str, tmp_path: Path) -> None:
    """Upgrade the fixture of the revision before to this one, one step down, up again: the rows stay.

    The first revision has nothing before it: its downgrade drops every
    table (the rows go with them), starting from its own fixture.
    """
    script = next(s for s in revisions() if s.revision == revision)
    down = script.down_revision
    assert down is None or isinstance(down, str), f"{revision} merges revisions {down}: test it by hand"
    db = tmp_path / "state.db"
    if down is None:
        _fixture_copy(revision, db)
        assert dump(db)["changes"][1], "the fixture has no rows"
        downgrade(db, "-1")
        assert tables(db) == {"alembic_version"} and revision_of(db) == []
        upgrade(db, revision)
        assert revision_of(db) == [revision]
        assert normalised_schema(db) == normalised_schema(_reference(tmp_path, revision))
        assert dump(db) == dump(_reference(tmp_path, revision))
        return

    _fixture_copy(down, db)
    old = dump(db)
    upgrade(db, revision)
    first = dump(db)
    assert normalised_schema(db) == normalised_schema(_reference(tmp_path, revision))
    for table, (columns, _) in old.items():  # the upgrade kept what the older revision wrote
        if table in first:
            kept = tuple(c for c in columns if c in first[table][0])
            assert project(first, table, kept) == project(old, table, kept), table
    if revision in IRREVERSIBLE:
        with pytest.raises(Exception, match=f"cannot downgrade.*{re.escape(revision)}"):
            downgrade(db, "-1")
        assert revision_of(db) == [revision] and dump(db) == first
        return
    downgrade(db, "-1")
    assert revision_of(db) == [down]
    assert normalised_schema(db) == normalised_schema(_reference(tmp_path, down))
    lossy = LOSSY.get(revision)
    assert dump(db) == (lossy(old) if lossy else old), "the downgrade lost or changed rows of the older revision"
    upgrade(db, revision)
    assert dump(db) == first, "upgrading again gave other rows"
    # And through the engine (at head): everything reads as it was made.
    stored = load_description(down)
    o = Overlord(db, clock=FixedClock(datetime.fromisoformat(stored["clock"])))
    try:
        assert compare(stored["before"], describe(o.state, stored["vocabulary"])) == []
    finally:
        close(o)


def test_assertions_revision_downgrades_and_upgrades_with_rows_present(
        cli_head: Path, tmp_path: Path, clock: FakeClock) -> None:
    """0002 (assertions) goes down one step and up again; the rows of the other tables stay."""
    db = filled_copy(cli_head, tmp_path / "one-step.db", clock)
    before = counts(db)
    assert before["assertions"] == 1

    alembic(db, "downgrade", "0001_initial")
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0001_initial",)]
    # (0005's notices table goes too on the way down, 0006's change keys, 0007's tables, 0008's timings and
    # 0011's batches of them.)
    later = {"assertions", "notices", "change_keys", "change_affects", *COORDINATION_TABLES, "task_timing_batches",
             "ensure_timings"}
    assert tables(db) == (ENGINE_TABLES - later) | {"alembic_version"}
    # (and the sequence of notice ids with it).
    assert counts(db, without=later) == {
        t: n - (t == "sequences") for t, n in before.items() if t not in later}

    # Opening the 0001 file upgrades it; the assertions table is back, empty, usable.
    st = State.open(db, clock=clock)
    try:
        with st:
            assert AssertionBook(st).get("account", ["acme"]) is None
            AssertionBook(st).put("account", ["acme"], 3, "text", {"authority-id": "root"})
            assert [c.kind for c in st.changes()] == ["install"]
        with st:
            stored = AssertionBook(st).get("account", ["acme"])
            assert stored is not None and stored.revision == 3
    finally:
        st.close()
    assert rows(db, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
    assert rows(db, "SELECT type, primary_key, revision, authority_id FROM assertions") == [
        ("account", "acme", 3, "root")]
    assert normalised_schema(db) == normalised_schema(_fresh(tmp_path))

