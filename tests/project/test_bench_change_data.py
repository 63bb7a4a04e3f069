# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of bench/change_data.py: on tiny sizes it reports every figure (no timing asserted)."""

from __future__ import annotations

import pytest

from bench.change_data import main


def test_change_data_benchmark_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--keys", "10", "2000", "--runs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "raw UPDATE ms" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["10", "2,000"]
    assert all(len(line.split()) == 7 for line in lines[1:])
