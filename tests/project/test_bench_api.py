# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of bench/api.py: on tiny sizes it starts real daemons and reports every figure (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.api import main


def test_api_benchmark_reports_every_request(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    assert main(["--sizes", "3,12", "--runs", "3", "--tasks", "2", "--install-runs", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["history"], r["path"]) for r in rows] == [
        (n, p) for n in (3, 12) for p in ("/v2/system-info", "/v2/changes?select=all", "/v2/changes",
                                         f"/v2/changes/{max(1, n // 2)}")] + [
        ("-", f"POST hello {w}") for w in ("install answer", "install done", "remove answer", "remove done")]
    assert all(r["runs"] == 2 for r in rows[-4:])
    assert all(r["median_ms"] > 0 and r["bytes"] > 0 for r in rows)
    select_all = [r for r in rows if r["path"] == "/v2/changes?select=all"]
    assert select_all[1]["bytes"] > select_all[0]["bytes"]  # every change with its tasks is in the answer
