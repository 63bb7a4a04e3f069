# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke tests of bench/peers: each installed peer runs W1 and W2 on toy sizes beside the engine (no timing asserted).

The peers are optional (pip install -e '.[bench]'): a test whose peer is not
installed is skipped; the PostgreSQL ones also need a server (pg_cluster).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from bench.peers import ADAPTERS, ENGINE, adapter
from bench.peers.__main__ import main
from tests.support import pgcluster

SIZES = ["--runs", "1", "--w1", "20", "--w2", "5", "--commits", "20", "--workers", "4"]

#: The PostgreSQL peers that are installed (the bench extra).
PG_PEERS = [p for p in ("dbos", "procrastinate") if importlib.util.find_spec(p) is not None]


@pytest.fixture(scope="module")
def sqlite_rounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sqlite_rounds is one two-round SQLite run of the engine and, where installed, huey: what three tests read.

    Each run starts the bench's processes afresh (tens of seconds on a busy
    machine), so the engine's own rows, the huey row and the rounds the engine
    was ahead are read from the same run instead of three.
    """
    out = tmp_path_factory.mktemp("peers-sqlite") / "peers.json"
    only = "engine,huey" if importlib.util.find_spec("huey") is not None else "engine"
    assert main([*SIZES, "--runs", "2", "--only", only, "--no-postgresql", "--json", str(out)]) == 0
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


@pytest.fixture(scope="module")
def postgresql_rounds(pg_cluster: pgcluster.Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """postgresql_rounds is one PostgreSQL-only run (--no-sqlite) of the engine and the installed PostgreSQL peers."""
    # pg_cluster: skipped (or, in CI, failed) where no PostgreSQL server can be had.
    out = tmp_path_factory.mktemp("peers-postgresql") / "peers.json"
    assert main([*SIZES, "--only", ",".join(["engine", *PG_PEERS]), "--no-sqlite", "--json", str(out)]) == 0
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def _figures(tmp_path: Path, *args: str) -> dict[str, dict[str, object]]:
    out = tmp_path / "peers.json"
    assert main([*SIZES, "--json", str(out), *args]) == 0
    rows: dict[str, dict[str, object]] = json.loads(out.read_text())["rows"]
    return rows


def test_every_adapter_says_what_it_needed_to_run_fairly() -> None:
    for name in (*ADAPTERS, ENGINE):
        mod = adapter(name)
        assert mod.NAME and mod.PACKAGE and "{workers}" in mod.SETTINGS
        assert set(mod.BACKEND.split(",")) <= {"sqlite", "postgresql"}


@pytest.mark.heavy  # its module runs first (tests/conftest.py): runs of the bench, tens of seconds each
def test_the_engine_runs_its_own_chain_and_the_peers_chain_in_every_round(sqlite_rounds: dict[str, Any]) -> None:
    """engine: W1 and W2 built up front; engine-spawn(-done) and engine-change: each task adds the next (W2 only)."""
    figures = sqlite_rounds
    assert len(figures["baseline.sqlite_runs"]) == 2  # a baseline in each round
    rows = {key: row for key, row in figures["rows"].items() if not key.startswith("huey.")}
    assert set(rows) == {"engine.sqlite", "engine-spawn.sqlite", "engine-spawn-done.sqlite", "engine-change.sqlite"}
    for key, row in rows.items():
        assert not any(k.endswith("_error") for k in row), row
        workloads = ("w1", "w2") if key == "engine.sqlite" else ("w2",)
        for w in workloads:
            assert len(row[f"{w}_runs"]) == 2 and row[w] > 0 and row[f"{w}_cpu_ms"] > 0
        assert "w1" not in row or key == "engine.sqlite"


@pytest.mark.parametrize("peer", ["huey", "dbos"])
def test_a_sqlite_peer_runs_w1_and_w2(peer: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pytest.importorskip(peer)
    # huey's row comes from the run the engine's SQLite tests read (the same peer, the same options but --runs 2).
    rows = (request.getfixturevalue("sqlite_rounds")["rows"] if peer == "huey"
            else _figures(tmp_path, "--only", peer, "--no-postgresql"))
    row = rows[f"{peer}.sqlite"]
    assert not any(k.endswith("_error") for k in row), row
    assert row["w1"] and row["w2"]


def test_each_engine_row_says_in_how_many_rounds_it_was_ahead_of_each_peer(sqlite_rounds: dict[str, Any]) -> None:
    """The goal is "ahead of every peer in the same run": counted round by round, from the runs themselves."""
    pytest.importorskip("huey")
    figures = sqlite_rounds
    ahead, rows = figures["ahead"], figures["rows"]
    assert set(ahead) == {"sqlite.w1.engine", "sqlite.w2.engine", "sqlite.w2.engine-spawn",
                          "sqlite.w2.engine-spawn-done", "sqlite.w2.engine-change"}
    for key, peers in ahead.items():
        backend, w, system = key.split(".")
        mine, theirs = rows[f"{system}.{backend}"][f"{w}_runs"], rows[f"huey.{backend}"][f"{w}_runs"]
        assert peers == {"huey": [sum(m > t for m, t in zip(mine, theirs, strict=True)), 2]}


def test_the_postgresql_peers_run_w1_and_w2_on_one_server(pg_cluster: pgcluster.Cluster,
                                                           request: pytest.FixtureRequest) -> None:
    # pg_cluster: skipped (or, in CI, failed) where no PostgreSQL server can be had.
    if not PG_PEERS:
        pytest.skip("no PostgreSQL peer is installed (pip install -e '.[bench]')")
    rows = request.getfixturevalue("postgresql_rounds")["rows"]  # (the engine's side: tests/test_bench_pg.py)
    for system in PG_PEERS:
        row = rows[f"{system}.postgresql"]
        assert not any(k.endswith("_error") for k in row), row
        assert row["w1"] and row["w2"]


def test_the_engine_runs_both_chains_on_postgresql_alone(postgresql_rounds: dict[str, Any]) -> None:
    """--no-sqlite: the PostgreSQL rounds alone; the engine's rows there include the self-finishing chain."""
    figures = postgresql_rounds
    assert "baseline.sqlite" not in figures and len(figures["baseline.postgresql_runs"]) == 1
    assert not any(key.endswith(".sqlite") for key in figures["rows"]), figures["rows"]
    rows = {key: row for key, row in figures["rows"].items() if key.split(".")[0] not in PG_PEERS}
    assert set(rows) == {"engine.postgresql", "engine-spawn.postgresql", "engine-spawn-done.postgresql"}
    for row in rows.values():
        assert not any(k.endswith("_error") for k in row), row
        assert row["w2"] > 0
