# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of bench/pg.py: the PostgreSQL benchmarks produce every figure on tiny sizes (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pg import main
from tests.support import pgcluster


@pytest.mark.heavy
def test_quick_run_produces_every_figure(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    # pg_cluster: skipped (or, in CI, failed) like every PostgreSQL test where no server can be had.
    out = tmp_path / "pg.json"
    assert main(["--quick", "--procs", "1,2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    expected = {"baseline.commits_per_s"} | {
        f"{w}.procs{n}.{f}" for w in ("w1", "w1x", "w2") for n in (1, 2) for f in ("tasks_per_s", "submit_s")
    } | {f"{w}.procs2.vs_one" for w in ("w1", "w1x", "w2")}
    assert expected <= set(figures)
    assert all(figures[k] > 0 for k in expected)


def test_the_process_counts_take_turns_round_by_round(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    """Each round runs the baseline and every process count once, and their ratios are kept beside the ratio of
    the medians."""
    out = tmp_path / "pg.json"
    assert main(["--runs", "2", "--only", "w2", "--procs", "1,2", "--sizes", "40,5,20", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    rounds = figures["w2.procs2.vs_first_rounds"]
    assert len(rounds) == 2 and all(r > 0 for r in rounds)
    to_base = figures["w2.procs1.vs_round_baseline"]
    assert len(to_base) == 2 and all(r > 0 for r in to_base)
