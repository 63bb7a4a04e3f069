# SPDX-License-Identifier: GPL-3.0-or-later
"""The benchmark suite: runs the children, collects every run, derives the figures and verdicts."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .build import HistoryCache
from .common import BenchError, Config, copy_db, median, run_child

#: The benchmarks in the order they run.
BENCHMARKS = ("baseline", "w1", "w2", "w3", "ensure", "dispatch", "snaps")


@dataclass
class Figure:
    """Figure is one reported number: the median of its runs, and its target if it has one."""

    key: str
    group: str
    label: str
    unit: str
    values: list[float]
    target: str = ""
    check: Callable[[float], bool] | None = field(default=None, repr=False)
    note: str = ""

    @property
    def median(self) -> float:
        """median is the reported value."""
        return median(self.values)

    @property
    def ok(self) -> bool | None:
        """ok is whether the median meets the target (None: no target)."""
        return None if self.check is None else bool(self.check(self.median))

    def as_json(self) -> dict[str, Any]:
        """as_json is the figure as saved with --json."""
        return {"key": self.key, "group": self.group, "label": self.label, "unit": self.unit,
                "median": self.median, "values": self.values, "target": self.target, "ok": self.ok,
                "note": self.note}


def at_least(x: float) -> Callable[[float], bool]:
    """at_least is the check median >= x."""
    return lambda v: v >= x


def at_most(x: float) -> Callable[[float], bool]:
    """at_most is the check median <= x."""
    return lambda v: v <= x


def _size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def _percentile(sorted_values: list[float], pct: float) -> float:
    """_percentile is the nearest-rank percentile of already sorted values."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


class Suite:
    """Suite runs the selected benchmarks with one Config and keeps their figures."""

    def __init__(self, cfg: Config, selected: list[str]) -> None:
        self.cfg = cfg
        self.selected = [b for b in BENCHMARKS if b in selected]
        self.figures: dict[str, Figure] = {}
        self.errors: list[str] = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = cfg.tmp_dir / f"run-{stamp}-{os.getpid()}"
        self.history = HistoryCache(cfg.cache_dir, self.run_dir / "build", log=self.log)
        self.started = time.time()

    def log(self, message: str) -> None:
        """log prints progress on stderr."""
        if self.cfg.verbose:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def add(self, key: str, group: str, label: str, unit: str, values: list[float], target: str = "",
            check: Callable[[float], bool] | None = None, note: str = "") -> Figure:
        """add records a figure."""
        fig = Figure(key, group, label, unit, list(values), target, check, note)
        self.figures[key] = fig
        return fig

    def child(self, kind: str, **params: Any) -> dict[str, Any]:
        """child runs one measurement in a fresh process."""
        return run_child(kind, params, timeout=self.cfg.child_timeout)

    def run(self) -> None:
        """run runs the selected benchmarks; a failing one is reported and the others still run."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in self.selected:
                t0 = time.perf_counter()
                try:
                    getattr(self, f"run_{name}")()
                except BenchError as e:
                    self.errors.append(str(e))
                    self.log(f"{name} FAILED: {e}")
                self.log(f"{name} took {time.perf_counter() - t0:.1f} s")
            self.derive()
        finally:
            if not self.cfg.keep:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- the benchmarks ------------------------------------------------------------

    def run_baseline(self) -> None:
        """run_baseline: raw sqlite3 commits with the engine's pragmas, on the same disk."""
        s = self.cfg.sizes
        commits, updates = [], []
        for i in range(self.cfg.runs):
            db = self.run_dir / f"baseline-{i}.db"
            r = self.child("baseline", db=str(db), rows=s.base_rows, single=s.base_single,
                           batches=s.base_batches, per_batch=s.base_per_batch, synchronous=self.cfg.synchronous)
            _remove_db(db)
            commits.append(r["commits_per_s"])
            updates.append(r["batch_updates_per_s"])
            self.log(f"baseline run {i + 1}/{self.cfg.runs}: {r['commits_per_s']:,.0f} commits/s, "
                     f"{r['batch_updates_per_s']:,.0f} updates/s in batches of {s.base_per_batch}")
        g = f"Baseline sqlite3 (WAL, {self.cfg.synchronous})"
        self.add("baseline.commits_per_s", g, "single-row UPDATE+COMMIT", "commits/s", commits,
                 note=f"{s.base_single:,} transactions per run")
        self.add("baseline.batch_updates_per_s", g, f"row updates, {s.base_per_batch} per transaction",
                 "updates/s", updates, note=f"{s.base_batches:,} transactions per run")

    def _one_change(self, name: str, tasks: int, *, paired: bool = False) -> list[dict[str, Any]]:
        """_one_change runs a workload of one change cfg.runs times; paired: each run between two baseline runs.

        A paired run's result has "paired_commits_per_s": the raw single-row commits a second of the baseline
        runs made just before and just after it on the same disk (their harmonic mean: the mean time of a
        commit), whose sync latency drifts 2 to 4 times over a minute on this kind of VM: a ratio of two
        medians measured a minute apart follows the drift, a bracketed run's much less.
        """
        results = []
        for i in range(self.cfg.runs):
            base = self._paired_baseline(name, f"{i}-before") if paired else None
            db = self.run_dir / f"{name}-{i}.db"
            r = self.child(name, db=str(db), tasks=tasks, ready_timeout=self.cfg.ready_timeout,
                           synchronous=self.cfg.synchronous)
            _remove_db(db)
            if base is not None:
                after = self._paired_baseline(name, f"{i}-after")
                r["paired_commits_per_s"] = 2 / (1 / base + 1 / after)
            results.append(r)
            self.log(f"{name} run {i + 1}/{self.cfg.runs}: {r['tasks_per_s']:,.0f} tasks/s "
                     f"(submit {r['submit_s']:.3f} s, run {r['run_s']:.3f} s), peak RSS {r['rss_mib']:.1f} MiB")
        return results

    def _paired_baseline(self, name: str, i: str) -> float:
        """_paired_baseline is the raw single-row commits per second of a baseline run made now (run_baseline's)."""
        s = self.cfg.sizes
        db = self.run_dir / f"{name}-baseline-{i}.db"
        r = self.child("baseline", db=str(db), rows=s.base_rows, single=s.base_single, batches=1, per_batch=1,
                       synchronous=self.cfg.synchronous)
        _remove_db(db)
        return float(r["commits_per_s"])

    def run_w1(self) -> None:
        """run_w1: one change of independent no-op tasks, submitted at once, run by o.loop()."""
        n = self.cfg.sizes.w1_tasks
        rs = self._one_change("w1", n)
        g = f"W1 fan-out ({n:,} tasks)"
        self.add("w1.tasks_per_s", g, "tasks/s (submit + run)", "tasks/s", [r["tasks_per_s"] for r in rs],
                 ">= 5,000", at_least(5_000))
        self.add("w1.submit_s", g, "submit (one unit of work)", "s", [r["submit_s"] for r in rs])
        self.add("w1.run_s", g, "run (o.loop() until ready)", "s", [r["run_s"] for r in rs])
        self.add("w1.rss_mib", g, "peak RSS", "MiB", [r["rss_mib"] for r in rs], "<= 150 MiB", at_most(150),
                 note=f"{median([r['rss_start_mib'] for r in rs]):.0f} MiB after imports")

    def run_w2(self) -> None:
        """run_w2: one change of chained no-op tasks (each waits for the previous one)."""
        n = self.cfg.sizes.w2_tasks
        rs = self._one_change("w2", n, paired=True)
        g = f"W2 chain ({n:,} tasks)"
        self.add("w2.tasks_per_s", g, "tasks/s (submit + run)", "tasks/s", [r["tasks_per_s"] for r in rs],
                 ">= 1,000", at_least(1_000))
        self.add("w2.latency_ms", g, "per-task dispatch latency (inverse)", "ms",
                 [1000.0 / r["tasks_per_s"] for r in rs], note="1 / tasks/s")
        self.add("w2.run_s", g, "run (o.loop() until ready)", "s", [r["run_s"] for r in rs])
        self.add("w2.rss_mib", g, "peak RSS", "MiB", [r["rss_mib"] for r in rs])
        self.add("w2.vs_baseline_paired", g, "tasks/s / baseline commits/s, median of paired runs", "x",
                 [r["tasks_per_s"] / r["paired_commits_per_s"] for r in rs], ">= 0.5x", at_least(0.5),
                 note="each run between two baseline runs")

    def run_w3(self) -> None:
        """run_w3: open a database with history and run one chained change; the same with no history."""
        s = self.cfg.sizes
        hist = self.history.get(s.w3_history)
        empty = self.history.get(0)
        # One 10-task change is ~10 synced commits and thread hand-offs (10-20 ms): its run time varies by
        # +-30% between processes, so W3 takes more runs than the others for its ratio to mean something.
        runs = max(self.cfg.runs, 15) if self.cfg.runs >= 3 else self.cfg.runs
        out: dict[str, list[dict[str, Any]]] = {"0": [], "h": []}
        for i in range(runs):
            # Interleaved, in both orders: the disk's sync latency drifts over minutes on this kind of VM
            # (0.3 to 1 ms per synced commit), so each pair runs under the same conditions.
            pair = (("0", empty), ("h", hist)) if i % 2 else (("h", hist), ("0", empty))
            for which, src in pair:
                db = copy_db(src, self.run_dir / f"w3-{which}-{i}.db")
                r = self.child("w3", db=str(db), chain=s.w3_chain, ready_timeout=self.cfg.ready_timeout)
                _remove_db(db)
                out[which].append(r)
                label = "no history" if which == "0" else f"{s.w3_history:,} finished tasks"
                self.log(f"w3 run {i + 1}/{runs} ({label}): open {r['open_s'] * 1000:.1f} ms, "
                         f"run {r['run_s'] * 1000:.1f} ms, peak RSS {r['rss_mib']:.1f} MiB")
        h = _size(s.w3_history)
        g = f"W3 history ({s.w3_chain}-task chain)"
        self.add("w3.open_s.0", g, "open (Overlord construction), history 0", "s",
                 [r["open_s"] for r in out["0"]])
        self.add("w3.open_s.h", g, f"open (Overlord construction), history {h}", "s",
                 [r["open_s"] for r in out["h"]], "<= 0.5 s", at_most(0.5))
        self.add("w3.run_s.0", g, "run one change (submit + run), history 0", "s", [r["total_s"] for r in out["0"]])
        self.add("w3.run_s.h", g, f"run one change (submit + run), history {h}", "s", [r["total_s"] for r in out["h"]])
        self.add("w3.run_ratio_paired", g, "run-time ratio, median of paired runs", "x",
                 [h["total_s"] / z["total_s"] for h, z in zip(out["h"], out["0"], strict=True)], "<= 1.2",
                 at_most(1.2), note="each pair ran back to back")
        self.add("w3.rss_mib.0", g, "peak RSS, history 0", "MiB", [r["rss_mib"] for r in out["0"]])
        self.add("w3.rss_mib.h", g, f"peak RSS, history {h}", "MiB", [r["rss_mib"] for r in out["h"]])

    def run_ensure(self) -> None:
        """run_ensure: one ensure pass over 10 runnable tasks beside 0..1M finished ones."""
        s = self.cfg.sizes
        reps = max(self.cfg.runs, 7) if self.cfg.runs >= 3 else self.cfg.runs
        g = f"Ensure pass ({s.ensure_runnable} runnable tasks; {reps} pass{'es' if reps != 1 else ''} after a warm-up)"
        fresh: dict[int, list[float]] = {}
        for n in s.ensure_history:
            src = self.history.get(n)
            db = copy_db(src, self.run_dir / f"ensure-{n}.db")
            try:
                r = self.child("ensure", db=str(db), runnable=s.ensure_runnable, reps=reps, warmup=1,
                               timeout=min(self.cfg.ready_timeout, 120.0))
            finally:
                _remove_db(db)
            if r["history"] != n:
                raise BenchError(f"ensure: the database holds {r['history']} finished tasks, expected {n}")
            ms = [t * 1000 for t in r["times_s"]]
            fresh[n] = [t * 1000 for t in r["fresh_times_s"]]
            self.log(f"ensure with {n:,} finished tasks: running runner " + ", ".join(f"{t:.2f}" for t in ms)
                     + " ms; fresh State " + ", ".join(f"{t:.2f}" for t in fresh[n]) + " ms")
            self.add(f"ensure.ms.{n}", g, f"one pass of a running runner, history {_size(n)}", "ms", ms)
        for n, ms in fresh.items():
            self.add(f"ensure.fresh_ms.{n}", g, f"first pass of a fresh State, history {_size(n)}", "ms", ms,
                     note="spawns the worker threads" if n == s.ensure_history[0] else "")

    def run_dispatch(self) -> None:
        """run_dispatch: commit of a 1-task change to its handler starting, under o.loop(), no ensure_before."""
        n = self.cfg.sizes.dispatch_changes
        p50, p99, floor = [], [], []
        for i in range(self.cfg.runs):
            db = self.run_dir / f"dispatch-{i}.db"
            r = self.child("dispatch", db=str(db), changes=n, timeout=min(self.cfg.ready_timeout, 60.0),
                           synchronous=self.cfg.synchronous)
            _remove_db(db)
            ms = sorted(x * 1000 for x in r["latencies_s"])
            p50.append(_percentile(ms, 50))
            p99.append(_percentile(ms, 99))
            floor.append(_percentile(sorted(x * 1000 for x in r["handoff_s"]), 50))
            self.log(f"dispatch run {i + 1}/{self.cfg.runs}: median {p50[-1]:.2f} ms, p99 {p99[-1]:.2f} ms "
                     f"(thread hand-off {floor[-1]:.3f} ms)")
        g = f"Dispatch latency ({n:,} one-task changes, commit to handler start)"
        self.add("dispatch.p50_ms", g, "median", "ms", p50)
        self.add("dispatch.p99_ms", g, "99th percentile", "ms", p99, "<= 2 ms", at_most(2.0))
        self.add("dispatch.handoff_ms", g, "floor: one thread waking another (median)", "ms", floor)

    def run_snaps(self) -> None:
        """run_snaps: install and refresh small snaps through the SystemOverlord, both modes (bench/snaps.py)."""
        n = self.cfg.sizes.snaps
        out: dict[str, list[dict[str, Any]]] = {"one-change": [], "one-by-one": []}
        for i in range(self.cfg.runs):
            for mode in out:
                r = self.child("snaps", tmp=str(self.run_dir / f"snaps-{mode}-{i}"), n=n, mode=mode,
                               ready_timeout=self.cfg.ready_timeout)
                out[mode].append(r)
                self.log(f"snaps {mode} run {i + 1}/{self.cfg.runs}: install {r['install_s']:.2f} s, refresh "
                         f"{r['refresh_s']:.2f} s; backend alone {r['raw_s']:.2f} s; peak RSS {r['rss_mib']:.0f} MiB")
        g = f"Snaps ({n} small snaps, install then refresh)"
        raw = [r["raw_s"] for rs in out.values() for r in rs]
        self.add("snaps.raw_s", g, "baseline: the install's file work, backend alone", "s", raw)
        for mode, label in (("one-change", "in one change"), ("one-by-one", "one change each")):
            rs = out[mode]
            self.add(f"snaps.{mode}.install_s", g, f"install, {label}", "s", [r["install_s"] for r in rs])
            self.add(f"snaps.{mode}.refresh_s", g, f"refresh, {label}", "s", [r["refresh_s"] for r in rs])
            self.add(f"snaps.{mode}.install_per_s", g, f"installs/s, {label}", "snaps/s",
                     [n / r["install_s"] for r in rs])
            self.add(f"snaps.{mode}.vs_raw", g, f"install {label} / baseline", "x",
                     [r["install_s"] / r["raw_s"] for r in rs], note="paired in the same process")
        self.add("snaps.rss_mib", g, "peak RSS", "MiB", [r["rss_mib"] for rs in out.values() for r in rs])

    # -- derived figures -------------------------------------------------------------

    def derive(self) -> None:
        """derive adds the ratios between figures that ran."""
        f = self.figures
        base = f.get("baseline.commits_per_s")
        if base is not None and "w1.tasks_per_s" in f:
            self.add("w1.vs_baseline", f["w1.tasks_per_s"].group, "tasks/s / baseline commits/s", "x",
                     [f["w1.tasks_per_s"].median / base.median], ">= 2x", at_least(2.0))
        if base is not None and "w2.tasks_per_s" in f:
            self.add("w2.vs_baseline", f["w2.tasks_per_s"].group, "tasks/s / baseline commits/s", "x",
                     [f["w2.tasks_per_s"].median / base.median], ">= 0.5x", at_least(0.5))
        if "w3.run_s.h" in f:
            g = f["w3.run_s.h"].group
            self.add("w3.run_ratio", g, "run-time ratio of the medians (history / none)", "x",
                     [f["w3.run_s.h"].median / f["w3.run_s.0"].median])
            self.add("w3.rss_ratio", g, "peak RSS ratio (history / none)", "x",
                     [f["w3.rss_mib.h"].median / f["w3.rss_mib.0"].median], "<= 1.2", at_most(1.2),
                     )
        sizes = self.cfg.sizes.ensure_history
        if f"ensure.ms.{sizes[0]}" in f and len(sizes) > 1 and f"ensure.ms.{sizes[-1]}" in f:
            lo, hi = f[f"ensure.ms.{sizes[0]}"], f[f"ensure.ms.{sizes[-1]}"]
            what = f"history {_size(sizes[-1])} / history {_size(sizes[0])}"
            self.add("ensure.ratio", lo.group, f"running runner: {what}", "x", [hi.median / lo.median], "<= 1.5",
                     at_most(1.5))
            lo, hi = f[f"ensure.fresh_ms.{sizes[0]}"], f[f"ensure.fresh_ms.{sizes[-1]}"]
            self.add("ensure.fresh_ratio", lo.group, f"first pass of a fresh State: {what}", "x",
                     [hi.median / lo.median])
