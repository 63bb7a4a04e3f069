# SPDX-License-Identifier: GPL-3.0-or-later
"""The pg_url fixture hands each test a database as the template holds it, also when it reuses one.

A test's database is the one of the test before, emptied back to the template's rows
(tests/support/pgcluster.py, Cluster.reset_database), unless that test changed its schema.
"""

from __future__ import annotations

from typing import Any

import psycopg

from engine import State
from tests.support import pgcluster


def _used_database(cluster: Any) -> str:
    """_used_database is a copy of the template that a test wrote to, through the engine."""
    name = cluster.new_database(template=cluster.template)
    st = State.open(url=cluster.url(name))
    try:
        with st:
            chg = st.new_change("install", "Install x")
            t = st.new_task("download", "Download x")
            t.logf("a line of its log")
            chg.add_task(t)
            st.set("key", {"a": 1})
            st.add_warning("a warning")
            st.add_notice("change-update", "1")
    finally:
        st.close()
    return name


def test_a_reused_database_holds_what_the_template_holds(pg_cluster: pgcluster.Cluster) -> None:
    cluster: Any = pg_cluster
    name = _used_database(cluster)
    try:
        # A session the test left behind, holding an advisory lock and listening: it is ended.
        left = psycopg.connect(cluster.dsn(name), autocommit=True)
        left.execute("SELECT pg_advisory_lock(42)")
        left.execute("LISTEN anything")
        assert cluster.contents(name) != cluster.template_contents
        assert cluster.reset_database(name, cluster.template_contents)
        assert _backend_gone(cluster, name)
        left.close()
        assert cluster.contents(name) == cluster.template_contents  # rows, sequences and schema
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
        st = State.open(url=cluster.url(name))
        try:
            with st:
                assert st.changes() == [] and st.all_warnings() == [] and st.notices() == []
                assert st.new_change("install", "Install y").id == "1"  # the ids start over
        finally:
            st.close()
    finally:
        cluster.drop_database(name)


def _backend_gone(cluster: Any, name: str) -> bool:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    return row == (0,)


def test_a_database_whose_schema_changed_is_not_reused(pg_cluster: pgcluster.Cluster) -> None:
    cluster: Any = pg_cluster
    for change in ("DROP INDEX {index}", "ALTER TABLE tasks ADD COLUMN extra integer",
                   "CREATE TABLE notes (id integer)", "ALTER TABLE changes ALTER COLUMN summary DROP NOT NULL"):
        name = cluster.new_database(template=cluster.template)
        try:
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                index = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks' "
                                     "AND indexname NOT LIKE '%pkey' ORDER BY indexname LIMIT 1").fetchone()
                assert index is not None
                conn.execute(change.format(index=index[0]))  # type: ignore[arg-type]
            assert not cluster.reset_database(name, cluster.template_contents), change
        finally:
            cluster.drop_database(name)
