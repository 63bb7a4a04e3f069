# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke tests of the benchmarks (bench/): every benchmark produces its figures on tiny sizes.

No timing is asserted: the machine is shared. What is checked is that each
benchmark runs the engine to the end and reports positive numbers, that the
history databases it builds read, through the engine, as finished clean
chains with consistent id sequences, and that the profile reader works.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bench import main
from bench.build import HistoryCache
from bench.common import HISTORY_CHAIN, Sizes
from bench.profile import hotspots, parse_raw
from engine import State, Status, Task, TaskRunner

EXPECTED = {
    "baseline.commits_per_s", "baseline.batch_updates_per_s",
    "w1.tasks_per_s", "w1.submit_s", "w1.run_s", "w1.rss_mib", "w1.vs_baseline",
    "w2.tasks_per_s", "w2.latency_ms", "w2.run_s", "w2.rss_mib", "w2.vs_baseline", "w2.vs_baseline_paired",
    "w3.open_s.0", "w3.open_s.h", "w3.run_s.0", "w3.run_s.h", "w3.rss_mib.0", "w3.rss_mib.h",
    "w3.run_ratio", "w3.run_ratio_paired", "w3.rss_ratio", "ensure.ratio", "ensure.fresh_ratio",
    "dispatch.p50_ms", "dispatch.p99_ms", "dispatch.handoff_ms",
}


@pytest.mark.heavy
def test_quick_mode_produces_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    rc = main(["--quick", "--scale", "0.01", "-q", "--tmp-dir", str(tmp_path / "tmp"),
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["errors"] == []
    assert rc == 0
    figures = data["figures"]
    sizes = Sizes().scaled(0.01)
    expected = EXPECTED | {f"ensure.ms.{n}" for n in sizes.ensure_history} | {
        f"ensure.fresh_ms.{n}" for n in sizes.ensure_history}
    assert expected <= set(figures)
    for key, fig in figures.items():
        assert fig["values"], key
        assert all(v > 0 for v in fig["values"]), (key, fig["values"])
        assert fig["median"] > 0, key
    # Every target of issue 5 is shown with a verdict.
    targets = {k for k, f in figures.items() if f["target"]}
    assert {"w1.tasks_per_s", "w1.rss_mib", "w1.vs_baseline", "w2.tasks_per_s", "w2.vs_baseline",
            "w2.vs_baseline_paired", "w3.run_ratio_paired", "w3.rss_ratio", "w3.open_s.h", "ensure.ratio",
            "dispatch.p99_ms"} <= targets
    assert all(figures[k]["ok"] in (True, False) for k in targets)
    assert "W1 fan-out" in printed and "Ensure pass" in printed and "targets met" in printed
    # The run's databases are removed; the cache stays.
    assert not any((tmp_path / "tmp").glob("run-*"))
    assert any((tmp_path / "cache").glob("history-*.db"))


def test_selecting_benchmarks_runs_only_those_and_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    rc = main(["w2", "--quick", "--scale", "0.01", "-q", "--tmp-dir", str(tmp_path / "tmp"),
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    groups = {k.split(".")[0] for k in json.loads(out.read_text())["figures"]}
    assert groups == {"baseline", "w2"}


def test_the_snaps_benchmark_reports_both_modes_and_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    rc = main(["snaps", "--quick", "--scale", "0.02", "-q", "--tmp-dir", str(tmp_path / "tmp"),
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    figures = json.loads(out.read_text())["figures"]
    assert {k.split(".")[0] for k in figures} == {"snaps"}
    for mode in ("one-change", "one-by-one"):
        for what in ("install_s", "refresh_s", "install_per_s", "vs_raw"):
            assert figures[f"snaps.{mode}.{what}"]["median"] > 0
    assert figures["snaps.raw_s"]["median"] > 0


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["w9"])
    assert exc.value.code == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_history_database_reads_as_finished_clean_chains(tmp_path: Path) -> None:
    n = 3 * HISTORY_CHAIN
    cache = HistoryCache(tmp_path / "cache", tmp_path / "work", log=lambda _m: None)
    path = cache.get(n)
    assert cache.get(n) == path  # cached
    st = State.open(path)
    try:
        with st:
            assert st.task_count() == n
            changes = st.changes()
            assert [c.id for c in changes] == ["1", "2", "3"]
            for chg in changes:
                assert chg.status is Status.DONE and chg.is_ready() and chg.is_clean()
                tasks = chg.tasks()
                assert len(tasks) == HISTORY_CHAIN
                assert all(t.status is Status.DONE and t.is_clean() for t in tasks)
                for prev, t in itertools.pairwise(tasks):
                    assert t.wait_tasks() == [prev]
                # Each task's run, moved to the clone's tasks and time (the template's runs end at its time).
                timings = chg.timings()
                assert [x.task_id for x in timings] == [t.id for t in tasks]
                assert all(x.started + x.duration == chg.spawn_time for x in timings)
            assert changes[0].spawn_time < changes[-1].spawn_time
            # The id sequences continue after the cloned rows.
            chg = st.new_change("next", "a new change")
            t = st.new_task("noop", "a new task")
            chg.add_task(t)
            assert (chg.id, t.id) == ("4", str(n + 1))
        # A runner finds nothing to run or clean in the history, only the new task.
        seen: list[Task] = []
        runner = TaskRunner(st)
        runner.add_handler("noop", lambda task, tomb: seen.append(task))
        runner.ensure()
        runner.wait()
        runner.stop()
        with st:
            assert [t.id for t in seen] == [str(n + 1)]
    finally:
        st.close()


def test_profile_reader_counts_inclusive_and_self_samples() -> None:
    raw = (
        "thread (11): engine-recorder;run (threading.py:982);_commit_batch (engine/taskrunner.py:10);"
        "commit (engine/store.py:5) 6\n"
        "thread (12): engine-worker-3;run (threading.py:982);_execute (engine/taskrunner.py:20) 4\n"
    )
    samples = parse_raw(raw)
    assert [s[0] for s in samples] == ["engine-recorder", "engine-worker"]
    rows = {k: (inc, own) for k, inc, own in hotspots(samples)}
    assert rows["_commit_batch (engine/taskrunner.py)"] == (60.0, 0.0)
    assert rows["commit (engine/store.py)"] == (60.0, 60.0)
    assert rows["_execute (engine/taskrunner.py)"] == (40.0, 40.0)
