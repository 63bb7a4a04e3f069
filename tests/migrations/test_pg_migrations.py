# SPDX-License-Identifier: GPL-3.0-or-later
"""Migrations on PostgreSQL: the migrated schema equals the one a first start creates, and upgrades keep rows.

The SQLite side of the same promises is tests/migrations/test_migrations.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, pool

from engine import State, Status
from engine.db import SCHEMA_HEAD, alembic_config

# The migrations create the assert manager's table (0002): a first start has it when the table is declared,
# as it is wherever the snap system runs. Declared here, whatever other tests this process ran before.
from managers.assertstate import book as _assertions_table  # noqa: F401
from tests.support import pgcluster


def _schema(cluster: pgcluster.Cluster, name: str) -> dict[str, Any]:
    """_schema is what PostgreSQL's catalog says of a database's tables, columns, indexes, constraints, views."""
    with psycopg.connect(cluster.dsn(name)) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()
        indexes = conn.execute("SELECT tablename, indexname, indexdef FROM pg_indexes "
                               "WHERE schemaname = 'public' ORDER BY 1, 2").fetchall()
        constraints = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public' ORDER BY 1, 2").fetchall()
        views = conn.execute("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' "
                             "ORDER BY 1").fetchall()
    return {"columns": cols, "indexes": indexes, "constraints": constraints, "views": views}


def _alembic(cluster: pgcluster.Cluster, name: str, revision: str, verb: str = "upgrade") -> None:
    """_alembic runs alembic upgrade (or downgrade) to revision on one database of the cluster."""
    engine = create_engine(cluster.url(name), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            getattr(command, verb)(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


def _migrate(cluster: pgcluster.Cluster, name: str, revision: str = "head") -> None:
    _alembic(cluster, name, revision)


def _downgrade(cluster: pgcluster.Cluster, name: str, revision: str) -> None:
    _alembic(cluster, name, revision, "downgrade")


@pytest.fixture
def two_databases(pg_cluster: pgcluster.Cluster) -> Any:
    names = [pg_cluster.new_database(), pg_cluster.new_database()]
    yield names
    for n in names:
        pg_cluster.drop_database(n)


def test_migrated_schema_equals_the_schema_a_first_start_creates(pg_cluster: pgcluster.Cluster,
                                                                  two_databases: list[str]) -> None:
    fresh, migrated = two_databases
    State.open(url=pg_cluster.url(fresh)).close()
    _migrate(pg_cluster, migrated)
    a, b = _schema(pg_cluster, fresh), _schema(pg_cluster, migrated)
    alembic_table = [c for c in b["columns"] if c[0] == "alembic_version"]
    assert alembic_table, "the migrated database records its revision"
    for part in ("columns", "indexes", "constraints", "views"):
        assert a[part] == b[part], f"the {part} of the migrated schema differ from those a first start creates"
    with psycopg.connect(pg_cluster.dsn(migrated)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]


def test_alembic_check_is_clean_on_postgresql(pg_cluster: pgcluster.Cluster, two_databases: list[str]) -> None:
    name = two_databases[0]
    _migrate(pg_cluster, name)
    engine = create_engine(pg_cluster.url(name), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.check(cfg)  # raises if the models and the migrated schema differ
    finally:
        engine.dispose()


def test_an_older_postgresql_database_is_upgraded_by_open_and_keeps_its_rows(
        pg_cluster: pgcluster.Cluster, two_databases: list[str]) -> None:
    name = two_databases[0]
    _migrate(pg_cluster, name, "0003_views")
    with psycopg.connect(pg_cluster.dsn(name)) as conn:
        conn.execute("INSERT INTO changes (id, kind, summary, status, spawn_time) "
                     "VALUES (7, 'old', 'made at 0003', 'Hold', '2030-01-01T00:00:00.000000Z')")
        conn.execute("UPDATE sequences SET last_id = 7 WHERE name = 'change'")
    st = State.open(url=pg_cluster.url(name))
    try:
        with st:
            old = st.change("7")
            assert old is not None and old.summary == "made at 0003" and old.status is Status.HOLD
            assert int(st.new_change("new", "after the upgrade").id) > 7
    finally:
        st.close()
    # And back down and up again, with those rows present.
    _downgrade(pg_cluster, name, "0003_views")
    _migrate(pg_cluster, name)
    with psycopg.connect(pg_cluster.dsn(name)) as conn:
        assert conn.execute("SELECT count(*) FROM changes").fetchone() == (2,)


def test_a_read_only_state_on_postgresql_reads_and_refuses_writes(pg_url: str) -> None:
    from engine import ReadOnlyStateError

    st = State.open(url=pg_url)
    try:
        with st:
            st.new_change("c", "written")
    finally:
        st.close()
    ro = State.open(url=pg_url, read_only=True)
    try:
        with ro:
            assert [c.summary for c in ro.changes()] == ["written"]
        with pytest.raises(ReadOnlyStateError), ro:
            ro.new_change("c", "refused")
        with ro:
            assert len(ro.changes()) == 1
    finally:
        ro.close()


_MIGRATOR = """
import sys, time
import psycopg
conn = psycopg.connect(sys.argv[1])
conn.execute("SELECT pg_advisory_lock(%s)" % sys.argv[2])
conn.commit()
conn.execute("CREATE TABLE changes (id integer PRIMARY KEY)")  # half a schema, never committed
print("inside", flush=True)
time.sleep(600)
"""


def test_a_migrator_killed_midway_blocks_nothing_and_the_next_start_migrates(
        pg_cluster: pgcluster.Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from engine.errors import DatabaseError
    from engine.store import postgresql_open

    name = pg_cluster.new_database()
    migrator = subprocess.Popen([sys.executable, "-c", _MIGRATOR, pg_cluster.dsn(name),
                                 str(postgresql_open.MIGRATION_LOCK)], stdout=subprocess.PIPE)
    try:
        assert migrator.stdout is not None and migrator.stdout.readline().strip() == b"inside"
        # While it holds the migration lock, another start waits for it, within a bound, then says why.
        monkeypatch.setattr(postgresql_open, "MIGRATION_LOCK_TIMEOUT", 0.5)
        with pytest.raises(DatabaseError, match=r"held the schema migration lock for more than 0\.5 s"):
            State.open(url=pg_cluster.url(name))
        monkeypatch.undo()
    finally:
        migrator.kill()  # SIGKILL: its session ends, and with it its lock and its uncommitted DDL
        migrator.wait(60)
    st = State.open(url=pg_cluster.url(name))
    try:
        with st:
            chg = st.new_change("after", "a change after the crash")
            chg.add_task(st.new_task("k", "a task"))
            cid = chg.id
        with st:
            got = st.change(cid)
            assert got is not None and got.status is Status.DO
    finally:
        st.close()
    with psycopg.connect(pg_cluster.dsn(name)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
    pg_cluster.drop_database(name)
