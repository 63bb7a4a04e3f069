# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of bench/installs.py: the snap-install-shaped workload runs on toy sizes (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.installs import LANES, STEPS, main
from tests.support import pgcluster


def test_sqlite_and_postgresql_with_one_and_two_processes(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    out = tmp_path / "installs.json"
    assert main(["--quick", "--changes", "4", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["tasks_per_change"] == LANES * len(STEPS) == 12
    for key in ("sqlite", "postgresql.procs1", "postgresql.procs2"):
        assert figures[f"{key}.changes_per_s"] > 0
    assert figures["postgresql.procs2.vs_one"] > 0
