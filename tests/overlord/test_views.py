# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshot tests: what the tables and the watch display print, at fixed terminal widths.

The snapshots live in tests/overlord/snapshots/; after a deliberate change of
the output, rewrite them with UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from overlord.cli._views import change_view, changes_table, render, warnings_table, why_table
from overlord.cli.cmd_snaps import outcome, snaps_table
from overlord.cli.cmd_watch import watch_view

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)


def task(tid: str, kind: str, summary: str, status: str, done: int = 1, total: int = 1, log: list[str] | None = None,
         ready: str | None = "2030-01-02T11:59:30.000000Z", label: str = "") -> dict[str, Any]:
    return {"id": tid, "kind": kind, "summary": summary, "status": status, "log": log or [],
            "progress": {"label": label, "done": done, "total": total}, "spawn-time": "2030-01-02T11:58:00.000000Z",
            "ready-time": ready, "lanes": [], "wait-tasks": []}


CHANGE = {
    "id": "7", "kind": "install", "summary": 'Install "web-server" snap from [stable] channel', "status": "Doing",
    "ready": False, "spawn-time": "2030-01-02T11:58:00.000000Z", "ready-time": None,
    "tasks": [
        task("21", "prerequisites", 'Ensure prerequisites for "web-server" are available', "Done",
             log=["2030-01-02T11:58:01Z INFO prerequisites are [bold]fine[/]"]),
        task("22", "download-snap", 'Download snap "web-server" (42) from channel "stable"', "Doing", 3_500_000,
             10_000_000, ready=None, label="web-server"),
        task("23", "mount-snap", 'Mount snap "web-server" (42)', "Do", 0, 1, ready=None),
    ],
}
#: A change as the API reports it mid-way: a running task that reported no progress is 1/1 like a finished
#: one (snapd's shape); the watch tells them apart by their status.
RUNNING = {
    "id": "8", "kind": "install", "summary": 'Install "big" snap', "status": "Doing", "ready": False,
    "spawn-time": "2030-01-02T11:58:00.000000Z", "ready-time": None,
    "tasks": [
        task("31", "download-snap", 'Download snap "big" (3)', "Done", 5_000_000, 5_000_000, label="big"),
        task("32", "mount-snap", 'Mount snap "big" (3)', "Doing", 1, 1, ready=None),
        task("33", "run-hook", 'Run install hook of "big" snap', "Hold", 1, 1, ready=None),
        task("34", "copy-data", 'Copy snap "big" data', "Undoing", 2, 5, ready=None, label="files"),
        task("35", "link-snap", 'Make snap "big" available to the system', "Error", 1, 1),
        task("36", "start-snap-services", 'Start snap "big" services', "Do", 0, 1, ready=None),
    ],
}
#: A change of many tasks, for a terminal too short to show them all.
TALL = {**RUNNING, "id": "9", "summary": "Refresh 12 snaps", "tasks": [
    *(task(str(100 + i), "link-snap", f'Make snap "s{i}" available to the system', "Done") for i in range(12)),
    task("200", "download-snap", 'Download snap "s12" (7)', "Doing", 40, 100, ready=None),
    *(task(str(300 + i), "link-snap", f'Make snap "s{13 + i}" available to the system', "Do", 0, 1, ready=None)
      for i in range(12)),
]}
#: The same change as GET /v2/changes/{id} gives it: why each task is not running.
WHY = {**CHANGE, "tasks": [
    {**CHANGE["tasks"][0], "why": None},
    {**CHANGE["tasks"][1], "why": None},
    {**CHANGE["tasks"][2], "why": {
        "reason": "waiting-for-tasks", "message": "it waits for task 22 (download-snap, Doing)",
        "tasks": [{"id": "22", "kind": "download-snap", "status": "Doing", "change": "7"}]}},
]}
CHANGES = [
    {**CHANGE, "id": "5", "summary": "Remove \"old\" snap", "status": "Done",
     "spawn-time": "2029-12-30T08:00:00.000000Z", "ready-time": "2029-12-30T08:00:05.000000Z"},
    {**CHANGE, "id": "6", "summary": "Refresh \"db\" snap [/]", "status": "Error",
     "spawn-time": "2030-01-01T23:00:00.000000Z", "ready-time": "2030-01-01T23:10:00.000000Z"},
    CHANGE,
]
WARNINGS = [{"message": "the store is [red]unreachable[/]; retrying every 5 minutes while the network is down",
             "first-added": "2030-01-01T10:00:00.000000Z", "last-added": "2030-01-02T10:00:00.000000Z",
             "expire-after": "672h0m0s", "repeat-after": "24h0m0s"}]



def snap(name: str, version: str, revision: str, publisher: str | None, display: str | None = None,
         status: str = "active", dangerous: bool = False) -> dict[str, Any]:
    pub = None if publisher is None else {"id": publisher, "username": publisher, "display-name": display or publisher,
                                          "validation": "unproven"}
    return {"name": name, "version": version, "revision": revision, "publisher": pub, "status": status,
            "dangerous": dangerous, "summary": "s", "apps": []}


SNAPS = [
    {**snap("hello", "2.0", "2", "acme", "[bold]ACME[/] Corp"), "tracking-channel": "latest/stable"},
    {**snap("web-server-with-a-long-name", "1.22.3+git20300101", "7", "a-publisher-with-a-long-id", "[link=x]Long[/]"),
     "tracking-channel": "2.0/beta"},
    snap("tool", "0.1", "x3", None, dangerous=True),
]
SNAPS_ALL = [*SNAPS[:1], snap("hello", "1.0", "1", "acme", "[bold]ACME[/] Corp", status="installed"), *SNAPS[1:]]

VIEWS = {
    "changes": lambda: changes_table(CHANGES, NOW),
    "changes-abs": lambda: changes_table(CHANGES, NOW, abs_time=True),
    "tasks": lambda: change_view(CHANGE, NOW),
    "tasks-why": lambda: change_view(WHY, NOW),
    "why": lambda: why_table([{**t, "why": t["why"]} for t in WHY["tasks"][1:]]),
    "warnings": lambda: warnings_table(WARNINGS, NOW),
    "watch": lambda: watch_view(CHANGE),
    "list": lambda: snaps_table(SNAPS),
    "list-all": lambda: snaps_table(SNAPS_ALL),
    "watch-lost": lambda: watch_view(CHANGE, "the daemon is not answering; waiting for it to come back..."),
    "watch-running": lambda: watch_view(RUNNING, running={"32": 1000.0, "34": 990.0}, now=1072.0),
    "watch-tall": lambda: watch_view(TALL, "the daemon is not answering; waiting for it to come back...",
                                     running={"200": 1000.0}, now=1005.0, height=12),
}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("width", [60, 100])
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_snapshot(name: str, width: int) -> None:
    check_snapshot(VIEWS[name](), name, width)


def check_snapshot(renderable: Any, name: str, width: int) -> None:
    """check_snapshot compares what renderable prints at width with snapshots/NAME-WIDTH.txt."""
    text = render(renderable, width)
    assert all(len(line) <= width for line in text.splitlines()), "a line is wider than the terminal"
    path = SNAPSHOTS / f"{name}-{width}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(text)
    assert path.exists(), f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text()


def test_outcome_lines_print_stored_text_verbatim() -> None:
    assert render(outcome("install", SNAPS[0]), 100) == "hello 2.0 from [bold]ACME[/] Corp (acme) installed\n"
    assert render(outcome("refresh", SNAPS[2]), 100) == "tool 0.1 refreshed\n"
    assert render(outcome("revert", SNAPS_ALL[1]), 100) == "hello reverted to 1.0\n"
    assert render(outcome("disable", SNAPS[2]), 100) == "tool disabled\n"


def test_watch_tells_running_from_done_by_the_status() -> None:
    from overlord.cli.cmd_watch import elapsed

    text = render(watch_view(RUNNING, running={"32": 1000.0}, now=1072.0), 100)
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert lines["Done"].rstrip().endswith("━" * 20 + " 100% big")  # finished: a full bar
    assert "1m12s" in lines["Doing"] and "100%" not in lines["Doing"]  # 1/1 while running: no progress reported
    assert lines["Doing"].count("━") == 5  # a pulse, a quarter of the bar, never a full one
    for status in ("Hold", "Error", "Do"):  # not at work: no bar, the status says it
        assert "━" not in lines[status] and "%" not in lines[status]
    assert [elapsed(s) for s in (0, 59, 61, 3599, 3600 * 2 + 61)] == ["0s", "59s", "1m01s", "59m59s", "2h01m"]


@pytest.mark.parametrize("width", [60, 100])
def test_a_change_taller_than_the_terminal_keeps_its_title_and_the_note(width: int) -> None:
    note = "the daemon is not answering; waiting for it to come back..."
    lines = render(watch_view(TALL, note, running={"200": 1000.0}, now=1005.0, height=12), width).splitlines()
    assert len(lines) == 12
    assert lines[0] == "Change 9 (install): Refresh 12 snaps - Doing"
    assert lines[-1] == note and lines[-2].endswith("more tasks not shown: the terminal is too short)")
    assert any(line.startswith("Doing   Download snap") for line in lines)  # the running task stays
    whole = render(watch_view(TALL, note), width).splitlines()  # no height (the last view, a pipe): everything
    assert sum(line.startswith(("Done", "Doing", "Do ")) for line in whole) == 25
