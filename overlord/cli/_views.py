# SPDX-License-Identifier: GPL-3.0-or-later
"""Tables of changes, tasks and warnings, from the API's JSON (the daemon's, or read from a database file).

Each view is a pure function of the JSON and of "now", so that what a user
sees can be checked at a fixed terminal width.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.text import Text

from ._output import FitTable, amount, one_line, plain, status_text, when

_COLUMNS = ("ID", "Status", "Spawn", "Ready", "Summary")
#: What goes first when the terminal is narrow: the spawn time, then the ready time.
_DROP = ("Spawn", "Ready")
#: Tasks whose why-not the tasks table leaves out: their log and the change's error say it.
_SAID = ("Done", "Undone", "Error")


def changes_table(changes: list[dict[str, Any]], now: datetime | None = None, abs_time: bool = False) -> FitTable:
    """changes_table lists changes like `snap changes`: id, status, spawn, ready, summary."""
    rows = [[plain(chg["id"]), status_text(chg["status"]), plain(when(chg.get("spawn-time"), now, abs_time)),
             plain(when(chg.get("ready-time"), now, abs_time)), plain(chg["summary"])] for chg in changes]
    return FitTable(_COLUMNS, rows, flex="Summary", drop=_DROP)


def tasks_table(change: dict[str, Any], now: datetime | None = None, abs_time: bool = False) -> FitTable:
    """tasks_table lists a change's tasks like `snap tasks`, with each task's id and progress.

    Under the summary of a task that is not running, it says why (the daemon's "why"), unless the task is
    Done, Undone or Error (its log and the change's error say it).
    """
    rows = []
    for task in change["tasks"]:
        summary = plain(task["summary"])
        progress = task.get("progress") or {}
        if task["status"] in ("Doing", "Undoing") and progress.get("total", 1) > 1:
            summary.append(plain(f" ({amount(progress['done'], progress['total'], progress.get('label') or '')})",
                                 "dim"))
        why = task.get("why")
        if isinstance(why, dict) and task["status"] not in _SAID:
            summary.append("\n")
            summary.append(plain(f"{why.get('reason', '?')}: {why.get('message', '')}", "dim"))
        rows.append([plain(task["id"]), status_text(task["status"]), plain(when(task.get("spawn-time"), now, abs_time)),
                     plain(when(task.get("ready-time"), now, abs_time)), summary])
    return FitTable(_COLUMNS, rows, flex="Summary", drop=_DROP)


def change_view(change: dict[str, Any], now: datetime | None = None, abs_time: bool = False) -> RenderableType:
    """change_view is the tasks table, then the log of each task that has one, then the change's error."""
    parts: list[RenderableType] = [tasks_table(change, now, abs_time)]
    for task in change["tasks"]:
        if not task.get("log"):
            continue
        parts.append(Rule(characters="."))
        parts.append(plain(task["summary"]))
        parts.append(Text(""))
        parts.extend(plain(line) for line in task["log"])
    if change.get("err"):
        parts.append(Rule(characters="."))
        parts.extend(Text(line) for line in error_lines(change))
    return Group(*parts)


def error_lines(change: dict[str, Any]) -> list[str]:
    """error_lines is a failed change's error as lines safe to print: "cannot perform the following tasks:", then
    "- SUMMARY (ERROR)" for each error of a task, each on one line whatever its text holds (newlines, escape
    sequences: one_line). From the change's "errors"; a daemon without them: each line of its "err"."""
    errors = change.get("errors")
    if isinstance(errors, list):
        lines = ["cannot perform the following tasks:"]
        for e in errors:
            e = e if isinstance(e, dict) else {}
            lines.append(f"- {one_line(e.get('summary', ''))} ({one_line(e.get('error', ''))})")
        if len(lines) > 1:
            return lines
    return [one_line(line) for line in str(change.get("err") or "").splitlines()]


def why_table(tasks: list[dict[str, Any]]) -> FitTable:
    """why_table lists tasks with why each is not running: id, status, kind, reason and message."""
    rows = []
    for task in tasks:
        why = task.get("why")
        text = "running" if not isinstance(why, dict) else f"{why.get('reason', '?')}: {why.get('message', '')}"
        rows.append([plain(task["id"]), status_text(task["status"]), plain(task["kind"]), plain(text)])
    return FitTable(("ID", "Status", "Kind", "Why"), rows, flex="Why")


def timings_table(runs: list[dict[str, Any]], now: datetime | None = None, abs_time: bool = False) -> FitTable:
    """timings_table lists the runs of a change's tasks (`debug timings ID`): task, kind, phase, attempt,
    outcome, start and duration."""
    rows = [[plain(r["task-id"]), plain(r["kind"]), plain(r["phase"]), plain(r["attempt"]), plain(r["outcome"]),
             plain(when(r.get("started"), now, abs_time)), plain(seconds(r["duration"]))] for r in runs]
    return FitTable(("Task", "Kind", "Phase", "Attempt", "Outcome", "Started", "Duration"), rows, flex="Kind",
                    drop=("Started",))


def ensure_table(passes: list[dict[str, Any]], manager: str | None, now: datetime | None = None,
                 abs_time: bool = False) -> FitTable:
    """ensure_table lists kept ensure passes (`debug timings --ensure NAME`): when, the pass's duration, and the
    duration of each manager (of NAME only, unless it is None)."""
    rows = []
    for p in passes:
        shown = [m for m in p["managers"] if manager is None or m["name"].lower() == manager.lower()]
        managers = ", ".join(f"{m['name']} {seconds(m['duration'])}" for m in shown)
        rows.append([plain(when(p.get("started"), now, abs_time)), plain(seconds(p["duration"])), plain(managers)])
    return FitTable(("Started", "Pass", "Managers"), rows, flex="Managers")


def seconds(value: float) -> str:
    """seconds shows a duration in seconds as snapd's debug timings do: "12ms", "1.5s", "45us"."""
    if value >= 1:
        return f"{value:.3g}s"
    if value >= 0.001:
        return f"{value * 1000:.3g}ms"
    return f"{value * 1_000_000:.0f}us"


def warnings_table(warnings: list[dict[str, Any]], now: datetime | None = None,
                   abs_time: bool = False) -> FitTable:
    """warnings_table lists warnings: when each last happened, and its message."""
    rows = [[plain(when(w.get("last-added"), now, abs_time)), plain(w["message"])] for w in warnings]
    return FitTable(("Last occurrence", "Warning"), rows, flex="Warning")


def render(renderable: RenderableType, width: int) -> str:
    """render returns what a renderable prints at a given width, without colours (for tests and files)."""
    buf = io.StringIO()
    Console(width=width, color_system=None, markup=False, emoji=False, highlight=False, file=buf).print(renderable)
    return buf.getvalue()
