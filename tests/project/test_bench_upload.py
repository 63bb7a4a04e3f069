# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of bench/upload.py: on a tiny upload it runs a real daemon and reports every phase (no timing)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from bench.api import ROOT
from bench.upload import hostile_snap, measure


def test_the_hostile_snap_is_a_zip_the_check_reads(tmp_path: Path) -> None:
    path = tmp_path / "h.snap"
    size = hostile_snap(path, 2, links=3)
    assert path.stat().st_size == size
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.getinfo("big").file_size == 2 * 1024 * 1024
        assert z.read("l0") == b"l1/l1"


def test_upload_benchmark_reports_every_phase(tmp_path: Path) -> None:
    r = measure(4, 0, 5, tmp_path, ROOT)
    assert r["answer"]["status"] == 400 and "no snap-revision assertion" in r["answer"]["message"]
    assert len(r["phases"]["idle"]) == 20
    assert all(v > 0 for values in r["phases"].values() for v in values)
    assert r["receive_s"] >= 0 and r["check_s"] >= 0
