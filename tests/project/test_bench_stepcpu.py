# SPDX-License-Identifier: GPL-3.0-or-later
"""bench.stepcpu measures a tiny chain's CPU a task, thread by thread (no timing asserted)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.stepcpu import line, run_chain
from engine.outcomes import OutcomeRecorder


def test_a_chain_s_cpu_is_told_thread_by_thread(tmp_path: Path) -> None:
    report = OutcomeRecorder.report
    r = run_chain(str(tmp_path / "state.db"), 20, "NORMAL", 0.0003)
    assert OutcomeRecorder.report is report  # the step's timer is taken off again
    assert r["cpu_us"] > 0 and r["step_p5_us"] > 0 and r["step_p25_us"] >= r["step_p5_us"]
    worker = r["threads"]["engine-worker"]
    assert worker[0] > 0 and worker[1] >= 0.5  # its CPU, and a voluntary switch a step at least (the sleep)
    shown = line(1, "NORMAL", 0.0003, r)
    assert shown.startswith("round 1 NORMAL + sleep 0.3 ms")
    assert re.search(r"engine-worker [\d.]+ us \([\d.]+ vol, [\d.]+ invol\)", shown)
