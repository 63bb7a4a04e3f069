# SPDX-License-Identifier: GPL-3.0-or-later
"""The results: the machine they ran on, one table with the targets, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from .common import Config
from .suite import Figure, Suite


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str:
    """_filesystem names the mount holding path (device, type, mount point)."""
    target = str(path.resolve())
    best: tuple[str, str, str] | None = None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype, *_ = line.split()
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and (best is None or len(mnt) > len(best[1])):
                best = (dev, mnt, fstype)
    except OSError:
        return "unknown"
    return f"{best[2]} on {best[0]} (mounted at {best[1]})" if best else "unknown"


def machine_info(cfg: Config) -> dict[str, Any]:
    """machine_info describes where the figures come from."""
    import sqlalchemy

    cfg.tmp_dir.mkdir(parents=True, exist_ok=True)
    mem = _memory_gib()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "database_dir": str(cfg.tmp_dir),
        "filesystem": _filesystem(cfg.tmp_dir),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _num(value: float, unit: str) -> str:
    """_num formats a value in its unit, without the unit's name."""
    if unit in ("tasks/s", "commits/s", "updates/s", "snaps/s"):
        return f"{value:,.0f}"
    if unit in ("s", "ms"):
        ms = value * 1000 if unit == "s" else value
        return f"{ms:,.3f}" if ms < 10 else f"{ms:,.1f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    if unit == "x":
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.0f}"
    return f"{value:g}"


def _unit(unit: str) -> str:
    return {"s": "ms", "x": "x", "%": "%"}.get(unit, unit)


def _fmt(value: float, unit: str) -> str:
    u = _unit(unit)
    return f"{_num(value, unit)}{u}" if u in ("x", "%") else f"{_num(value, unit)} {u}"


def _spread(fig: Figure) -> str:
    if len(fig.values) < 2:
        return ""
    return f"{_num(min(fig.values), fig.unit)} .. {_num(max(fig.values), fig.unit)}"


def _verdict(fig: Figure) -> str:
    ok = fig.ok
    return "" if ok is None else ("ok" if ok else "MISSED")


LEGEND = """\
W1/W2: one change submitted in one `with st:` block, then o.loop() until chg.wait_ready(); tasks/s counts
submit + run. W3: a copy of a database of finished 10-task chained changes, opened by Overlord() (State.open
included), then one 10-task chain submitted and run the same way; the target ratio is the median of the ratios of
back-to-back pairs (synced-commit latency drifts on this VM), the other ratios are of medians. Ensure: one
TaskRunner.ensure() over 10 runnable tasks whose handlers block, so the pass only claims and starts them; "running
runner" passes reuse one State and runner (worker threads exist; the State rereads the database because the tasks
were put back to Do by another connection), "fresh State" passes open a new State and TaskRunner each time.
Snaps: a SystemOverlord on a file database installs N small snaps from a local store, then refreshes them to a
new revision, in one change (a lane per snap) or one change each (waited for in turn); the baseline is the
install's file work done by the snap backend alone in the same process (no state, no tasks)."""


def grouped(figures: list[Figure]) -> list[tuple[str, list[Figure]]]:
    """grouped orders figures by group (first appearance), keeping their order within a group."""
    groups: dict[str, list[Figure]] = {}
    for fig in figures:
        groups.setdefault(fig.group, []).append(fig)
    return list(groups.items())


def render(suite: Suite, machine: dict[str, Any]) -> None:
    """render prints the machine, the table of figures and targets, and any errors."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width), highlight=False)
    cfg = suite.cfg
    more = " (W3: 15 runs per scenario, in back-to-back pairs; ensure: 7 passes)" if cfg.runs >= 3 else ""
    console.print(
        f"[bold]Machine:[/] {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM; "
        f"{machine['os']}; Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"SQLAlchemy {machine['sqlalchemy']}\n"
        f"[bold]Databases:[/] files under {machine['database_dir']}, {machine['filesystem']}; "
        + ("the engine's default durability (WAL, synchronous=FULL)\n" if suite.cfg.synchronous == "FULL" else
           f"WAL, synchronous={suite.cfg.synchronous} (opt-in: may lose the last commits on power loss; "
           "W3, ensure and snaps keep FULL)\n")
        + f"[bold]Runs:[/] each figure is the median of {cfg.runs} run(s){more}, each run in a fresh process; "
        f"load average at start {machine['load_average']}"
    )
    if cfg.sizes != type(cfg.sizes)():
        console.print("[yellow]Sizes differ from issue 5's (--quick/--scale): the targets are for the full sizes.[/]")
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("Figure", no_wrap=True)
    table.add_column("Median", justify="right", no_wrap=True)
    table.add_column("Runs: min .. max", justify="right", no_wrap=True)
    table.add_column("Target", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("Note", overflow="fold")
    for i, (group, figs) in enumerate(grouped(list(suite.figures.values()))):
        if i:
            table.add_section()
        table.add_row(f"[bold]{group}[/]", "", "", "", "", "")
        for fig in figs:
            verdict = _verdict(fig)
            style = {"ok": "green", "MISSED": "bold red"}.get(verdict, "")
            table.add_row(f"  {fig.label}", _fmt(fig.median, fig.unit), _spread(fig), fig.target,
                          f"[{style}]{verdict}[/]" if style else verdict, fig.note)
    console.print(table)
    console.print(LEGEND)
    missed = [f for f in suite.figures.values() if f.ok is False]
    met = [f for f in suite.figures.values() if f.ok]
    console.print(f"targets met: {len(met)}, missed: {len(missed)}"
                  + ("".join(f"\n  missed: {f.group}: {f.label} = {_fmt(f.median, f.unit)} (target {f.target})"
                             for f in missed)))
    for err in suite.errors:
        console.print(f"[bold red]error:[/] {err}")


def write_json(path: Path, suite: Suite, machine: dict[str, Any]) -> None:
    """write_json saves the machine, the configuration and every run of every figure."""
    data = {
        "machine": machine,
        "config": suite.cfg.as_json(),
        "figures": {k: f.as_json() for k, f in suite.figures.items()},
        "errors": suite.errors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
