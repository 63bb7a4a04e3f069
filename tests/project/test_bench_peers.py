# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke tests of bench/peers: each installed peer runs W1 and W2 on toy sizes beside the engine (no timing asserted).

The peers are optional (pip install -e '.[bench]'): a test whose peer is not
installed is skipped; the PostgreSQL ones also need a server (pg_cluster).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.peers import ADAPTERS, ENGINE, adapter
from bench.peers.__main__ import main
from tests.support import pgcluster

SIZES = ["--runs", "1", "--w1", "20", "--w2", "5", "--commits", "20", "--workers", "4"]


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


def test_the_engine_runs_its_own_chain_and_the_peers_chain_in_every_round(tmp_path: Path) -> None:
    """engine: W1 and W2 built up front; engine-spawn(-done) and engine-change: each task adds the next (W2 only)."""
    out = tmp_path / "peers.json"
    assert main([*SIZES, "--runs", "2", "--only", "engine", "--no-postgresql", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert len(figures["baseline.sqlite_runs"]) == 2  # a baseline in each round
    rows = figures["rows"]
    assert set(rows) == {"engine.sqlite", "engine-spawn.sqlite", "engine-spawn-done.sqlite", "engine-change.sqlite"}
    for key, row in rows.items():
        assert not any(k.endswith("_error") for k in row), row
        workloads = ("w1", "w2") if key == "engine.sqlite" else ("w2",)
        for w in workloads:
            assert len(row[f"{w}_runs"]) == 2 and row[w] > 0 and row[f"{w}_cpu_ms"] > 0
        assert "w1" not in row or key == "engine.sqlite"


@pytest.mark.parametrize("peer", ["huey", "dbos"])
def test_a_sqlite_peer_runs_w1_and_w2(peer: str, tmp_path: Path) -> None:
    pytest.importorskip(peer)
    rows = _figures(tmp_path, "--only", peer, "--no-postgresql")
    row = rows[f"{peer}.sqlite"]
    assert not any(k.endswith("_error") for k in row), row
    assert row["w1"] and row["w2"]


def test_each_engine_row_says_in_how_many_rounds_it_was_ahead_of_each_peer(tmp_path: Path) -> None:
    """The goal is "ahead of every peer in the same run": counted round by round, from the runs themselves."""
    pytest.importorskip("huey")
    out = tmp_path / "peers.json"
    assert main([*SIZES, "--runs", "2", "--only", "engine,huey", "--no-postgresql", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    ahead, rows = figures["ahead"], figures["rows"]
    assert set(ahead) == {"sqlite.w1.engine", "sqlite.w2.engine", "sqlite.w2.engine-spawn",
                          "sqlite.w2.engine-spawn-done", "sqlite.w2.engine-change"}
    for key, peers in ahead.items():
        backend, w, system = key.split(".")
        mine, theirs = rows[f"{system}.{backend}"][f"{w}_runs"], rows[f"huey.{backend}"][f"{w}_runs"]
        assert peers == {"huey": [sum(m > t for m, t in zip(mine, theirs, strict=True)), 2]}


def test_the_postgresql_peers_run_w1_and_w2_on_one_server(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    # pg_cluster: skipped (or, in CI, failed) where no PostgreSQL server can be had.
    peers = [p for p in ("dbos", "procrastinate") if importlib.util.find_spec(p) is not None]
    if not peers:
        pytest.skip("no PostgreSQL peer is installed (pip install -e '.[bench]')")
    rows = _figures(tmp_path, "--only", ",".join(peers))  # (the engine's side: tests/test_bench_pg.py)
    for system in peers:
        row = rows[f"{system}.postgresql"]
        assert not any(k.endswith("_error") for k in row), row
        assert row["w1"] and row["w2"]


def test_the_engine_runs_both_chains_on_postgresql_alone(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    """--no-sqlite: the PostgreSQL rounds alone; the engine's rows there include the self-finishing chain."""
    out = tmp_path / "peers.json"
    assert main([*SIZES, "--only", "engine", "--no-sqlite", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert "baseline.sqlite" not in figures and len(figures["baseline.postgresql_runs"]) == 1
    rows = figures["rows"]
    assert set(rows) == {"engine.postgresql", "engine-spawn.postgresql", "engine-spawn-done.postgresql"}
    for row in rows.values():
        assert not any(k.endswith("_error") for k in row), row
        assert row["w2"] > 0
