# SPDX-License-Identifier: GPL-3.0-or-later
"""What python -m bench.timings prints: the figure the goal is about (primary), then the tables (tables)."""

from __future__ import annotations

import statistics
from typing import Any


def _quartiles(values: list[float]) -> str:
    """_quartiles shows the middle half of values (how much the rounds' ratios spread)."""
    if len(values) < 4:
        return ""
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.3f}-{q[2]:.3f}"


def _spread(values: list[float]) -> tuple[float, float]:
    """_spread is how far the pairs' ratios spread: the middle half of them (first to third quartile) from 4 pairs
    on, else the lowest and highest."""
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        return q[0], q[2]
    return min(values), max(values)


def _verdict(low: float, high: float, goal: float, above: bool) -> str:
    """_verdict says whether the spread of ratios meets the goal: met when all of it does, not met when none of it
    does, else unsure (the machine's noise is larger than the cost)."""
    ok_low, ok_high = (low >= goal, high >= goal) if above else (low <= goal, high <= goal)
    return "met" if ok_low and ok_high else "NOT met" if not (ok_low or ok_high) else "unsure"


def primary(runs: int, workloads: list[tuple[str, int, bool, int]], modes: list[str], all_cpus: Any,
             all_ratios: Any, rates: Any, rate_ratios: Any) -> None:
    """_primary prints the figure the goal is about: the CPU time of every process of ours (the engine's; with the
    helper, its too) per task, each run over the run of "without" paired with it, and tasks/s beside it."""
    others = [m for m in modes if m != "without"]
    med = statistics.median
    spread = "middle half" if runs >= 4 else "lowest-highest"
    print(f"PRIMARY: CPU us/task of every process of ours (engine; helper: engine + helper process), {runs} pairs "
          f"a mode; a ratio is a run over the 'without' run paired with it; median [{spread}] and the goal "
          "(CPU <= 1.05, tasks/s >= 0.95)")
    print(f"{'':20}{'without':>10}" + "".join(f"{m:>33}" for m in others))
    for name, _, _, _ in workloads:
        print(f"{f'{name[:2]} CPU us/task':20}{med(all_cpus[(name, 'without')]):10.1f}"
              + "".join(_cell(f"{med(all_cpus[(name, m)]):7.1f}", all_ratios[(name, m)], 1.05, False) for m in others))
        print(f"{f'{name[:2]} tasks/s':20}{med(rates[(name, 'without')]):10,.0f}"
              + "".join(_cell(f"{med(rates[(name, m)]):7,.0f}", rate_ratios[(name, m)], 0.95, True) for m in others))


def _cell(value: str, ratios: list[float], goal: float, above: bool) -> str:
    """_cell is a mode's value, the median of its ratios, their spread, and whether they meet the goal."""
    low, high = _spread(ratios)
    return f"{value} {statistics.median(ratios):6.3f} [{low:.3f}-{high:.3f}]{_verdict(low, high, goal, above):>8}"


def tables(runs: int, workloads: list[tuple[str, int, bool, int]], modes: list[str], *figures: Any) -> None:
    (rates, cpus, rate_ratios, cpu_ratios, tracer_cpus, helper_cpus, directs, ready_rates, ready_ratios, lags,
     ready_cpus, ready_cpu_ratios) = figures
    others = [m for m in modes if m != "without"]
    med = statistics.median
    print(f"median of {runs} rounds; ratios: to the 'without' run paired with each run, the median of the pairs' "
          "ratios (and the middle half of them); helper: the engine's process (helper+: with the helper process's CPU)")
    helper_plus = ["helper+"] if "helper" in modes else []
    for title, values, ratios, fmt, extra in (
            ("tasks/s, all spans exported", rates, rate_ratios, "12,.0f", []),
            ("tasks/s, until tasks ready", ready_rates, ready_ratios, "12,.0f", []),
            ("CPU us/task, until ready", ready_cpus, ready_cpu_ratios, "12,.1f", []),
            ("CPU us/task, until quiet", cpus, cpu_ratios, "12,.1f", helper_plus)):
        print(f"{title:28}" + "".join(f"{m:>12}" for m in [*modes, *extra])
              + "".join(f"{m + ' /':>14}" for m in [*others, *extra]))
        for name, tasks, _, _ in workloads:
            print(f"{f'{name} ({tasks:,})':28}" + "".join(format(med(values[(name, m)]), fmt) for m in [*modes, *extra])
                  + "".join(f"{med(ratios[(name, m)]):14.3f}" for m in [*others, *extra]))
            if runs >= 4:
                pad = " " * (28 + 12 * len([*modes, *extra]))
                print(pad + "".join(f"{_quartiles(ratios[(name, m)]):>14}" for m in [*others, *extra]))
    traced = [m for m in modes if m.startswith("traced") or m == "helper"]
    if traced:
        print(f"{'tracing thread, share of CPU':28}" + "".join(f"{m:>12}" for m in traced))
        for name, tasks, _, _ in workloads:
            print(f"{f'{name} ({tasks:,})':28}" + "".join(f"{med(tracer_cpus[(name, m)]):12.3f}" for m in traced))
    if traced:
        print(f"{'export lag after ready, ms':28}" + "".join(f"{m:>12}" for m in traced))
        for name, tasks, _, _ in workloads:
            print(f"{f'{name} ({tasks:,})':28}" + "".join(f"{med(lags[(name, m)]):12.0f}" for m in traced))
    if "helper" in modes:
        print(f"{'helper process, CPU us/task':28}{'helper':>12}")
        for name, tasks, _, _ in workloads:
            print(f"{f'{name} ({tasks:,})':28}{med(helper_cpus[(name, 'helper')]):12.1f}")
    direct_modes = [m for m in ("timings", "traced", "helper", "helper-process") if (workloads[0][0], m) in directs]
    shares = [m for m in direct_modes if m != "helper-process"] + (["helper+"] if "helper" in direct_modes else [])
    print(f"{'direct CPU us per run':28}" + "".join(f"{m:>15}" for m in direct_modes)
          + "".join(f"{m + ' / W':>14}" for m in shares))
    for name, _, _, per_commit in workloads:
        base = med(cpus[(name, "without")])
        cost = {m: med(directs[(name, m)]) for m in direct_modes}
        if "helper" in cost:
            both = [a + b for a, b in zip(directs[(name, "helper")], directs[(name, "helper-process")], strict=True)]
            cost["helper+"] = med(both)
        print(f"{f'{name[:2]} ({per_commit} a commit)':28}" + "".join(f"{cost[m]:15.2f}" for m in direct_modes)
              + "".join(f"{1 + cost[m] / base:14.3f}" for m in shares))
    print("goal: tasks/s ratio >= 0.95 and CPU ratio <= 1.05 (timings, and tracing when enabled, cost W1 and W2 "
          "no more than 5%); direct: the instrumentation's CPU per run, in one process, modes alternated "
          "every batch of runs, over W's 'without' CPU per task (helper: the engine's process; helper-process: the "
          "helper's own; helper+: both)")
