# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord watch ID`: follow a change live, one progress bar per task, until it is ready (cmd_watch.go).

It waits on the daemon's notices (GET /v2/notices, long-polled) and asks
for the change again only when a change-update notice of it comes: while
nothing happens, it makes no request. A task's progress is no status
transition and makes no notice, so while a task of the change runs
(Doing, Undoing) the long-poll's timeout is short (PROGRESS_INTERVAL) and
the change is read again after each one, as snap's clients poll progress.
Ctrl-C stops watching and leaves the change running.
When the daemon goes away (a restart, a crash), watch says so and keeps
asking until the daemon answers again or --reconnect-timeout passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..client import ApiError, Client, DaemonUnavailable
from ._client import change_id, cli_error, note_warnings, state_dir_option
from ._group import Seconds, cli
from ._output import EXIT_INTERRUPTED, CliError, amount, console, one_line, plain, status_text
from ._views import error_lines

#: POLL_INTERVAL is how long watch waits before asking a busy daemon again, in seconds.
POLL_INTERVAL = 0.2
#: PROGRESS_INTERVAL is how often watch reads a change whose tasks run (their progress), in seconds.
PROGRESS_INTERVAL = 0.25
#: WAIT_TIMEOUT is the long-poll's timeout while no task runs (it is asked again after it), in seconds.
WAIT_TIMEOUT = 20.0
_BAR_WIDTH = 24


#: RUNNING are the statuses of a task whose handler is at work: its bar moves, or pulses when it reports nothing.
RUNNING = ("Doing", "Undoing")
#: FINISHED are the statuses of a task that completed its work (or its undo): a full bar.
FINISHED = ("Done", "Undone")


class Pulse:
    """Pulse is a block going to and fro across the bar's width: at work, progress unknown.

    Unlike rich's pulse, which without colours (NO_COLOR, a pipe) draws as a
    full bar, it reads the same in colour and without.
    """

    def __init__(self, width: int, now: float) -> None:
        self.width = width
        self.now = now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(self.width, options.max_width)
        block = max(2, width // 4)
        span = max(1, width - block)
        pos = int(self.now * 10) % (2 * span)
        if pos > span:
            pos = 2 * span - pos
        yield Text.assemble(" " * pos, ("━" * block, "cyan"), " " * (width - pos - block))


def elapsed(seconds: float) -> str:
    """elapsed tells a duration as a watch shows it: 7s, 3m05s, 1h02m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class WatchView:
    """WatchView is the live display: the change's line, then each task's status, summary and progress.

    What a task shows follows its status, not only its progress numbers
    (the API reports 1/1 both for a finished task and for a running one
    that reported nothing, as snapd's does):

    - Done, Undone: a full bar and the amount;
    - Doing, Undoing with progress reported (a total above 1): the bar and
      the amount;
    - Doing, Undoing without: a pulse and the time since watch saw it start
      (``running`` maps task ids to that monotonic time; ``now`` is the
      clock);
    - anything else (Do, Wait, Hold, Error, Abort...): no bar, the status
      says it.

    The bar narrows on a narrow terminal, and the summary folds, so that it
    fits the width it is printed at. With ``height`` (the terminal's, when
    drawing live), a change taller than that keeps its first line and the
    note, and shows the tasks that fit, leaving out finished ones first.
    """

    def __init__(self, change: dict[str, Any], note: str | None = None, *, running: dict[str, float] | None = None,
                 now: float | None = None, height: int | None = None) -> None:
        self.change = change
        self.note = note
        self.running = running or {}
        self.now = now
        self.height = height

    def _rows(self, tasks: list[dict[str, Any]], bar_width: int) -> Table:
        now = time.monotonic() if self.now is None else self.now
        rows = Table.grid(padding=(0, 1))
        rows.add_column(no_wrap=True, min_width=7)
        rows.add_column(overflow="fold", ratio=1, min_width=12)
        rows.add_column(no_wrap=True, width=bar_width)
        rows.add_column(no_wrap=True)
        for task in tasks:
            progress = task.get("progress") or {}
            done, total = int(progress.get("done", 0)), max(int(progress.get("total", 1)), 1)
            label = progress.get("label") or ""
            status = task["status"]
            bar: RenderableType = ""
            what = ""
            if status in FINISHED:
                done = total
                bar = ProgressBar(total=total, completed=done, width=bar_width)
                what = amount(done, total, label)
            elif status in RUNNING and total > 1:
                bar = ProgressBar(total=total, completed=done, width=bar_width)
                what = amount(done, total, label)
            elif status in RUNNING:  # no progress reported: it is working, for how long
                bar = Pulse(bar_width, now)
                since = self.running.get(str(task.get("id")))
                what = f"{elapsed(now - since) if since is not None else ''} {label}".strip()
            rows.add_row(status_text(status), plain(task["summary"]), bar, plain(what, "dim"))
        return rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        change = self.change
        title = Text.assemble(plain(f"Change {change['id']} ({change['kind']}): "), plain(change["summary"]),
                              plain(" - "), status_text(change["status"]))
        bar_width = max(8, min(_BAR_WIDTH, options.max_width // 5))
        tasks = list(change["tasks"])
        note = plain(self.note, "yellow") if self.note else None
        if self.height is None:
            yield title
            yield self._rows(tasks, bar_width)
            if note is not None:
                yield note
            return
        fixed = len(console.render_lines(title, options, pad=False))
        if note is not None:
            fixed += len(console.render_lines(note, options, pad=False))
        shown = _fit(tasks, lambda ts: len(console.render_lines(self._rows(ts, bar_width), options, pad=False)),
                     self.height - fixed)
        yield title
        yield self._rows(shown, bar_width)
        if len(shown) < len(tasks):
            yield plain(f"({len(tasks) - len(shown)} more tasks not shown: the terminal is too short)", "dim")
        if note is not None:
            yield note


def _fit(tasks: list[dict[str, Any]], lines: Callable[[list[dict[str, Any]]], int],
         room: int) -> list[dict[str, Any]]:
    """_fit keeps the tasks whose rows fit in room lines, less one for the line telling how many are left out:
    finished ones go first (the oldest first), then those not started (from the end); running ones stay."""
    if lines(tasks) <= room:
        return tasks
    room -= 1
    pending = ("Do", "Wait", "Hold")
    order = [t for t in tasks if t["status"] not in RUNNING and t["status"] not in pending]
    order += [t for t in reversed(tasks) if t["status"] in pending]
    order += [t for t in reversed(tasks) if t["status"] in RUNNING]

    def keep(k: int) -> list[dict[str, Any]]:
        gone = {id(t) for t in order[:k]}
        return [t for t in tasks if id(t) not in gone]

    low, high = 1, len(order)  # the fewest tasks to leave out so that the rest fit: a binary search
    while low < high:
        mid = (low + high) // 2
        if lines(keep(mid)) <= room:
            high = mid
        else:
            low = mid + 1
    return keep(low)


def watch_view(change: dict[str, Any], note: str | None = None, *, running: dict[str, float] | None = None,
               now: float | None = None, height: int | None = None) -> RenderableType:
    """watch_view is the live display of a change (a WatchView)."""
    return WatchView(change, note, running=running, now=now, height=height)


class _Tracker:
    """_Tracker remembers since when (on watch's clock) each task has been running, for the elapsed time."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}

    def see(self, change: dict[str, Any]) -> None:
        now = time.monotonic()
        for task in change.get("tasks") or []:
            tid = str(task.get("id"))
            if task.get("status") in RUNNING:
                self.running.setdefault(tid, now)
            else:
                self.running.pop(tid, None)


def _height(live: Live) -> int | None:
    """_height is the terminal's height when live draws on one (a tall change is fitted to it), else None."""
    console = live.console
    return console.size.height if console.is_terminal else None


class _Lost:
    """_Lost keeps asking a daemon that went away until --reconnect-timeout passes since it stopped answering."""

    def __init__(self, change_id: str, reconnect_timeout: float) -> None:
        self.change_id = change_id
        self.reconnect_timeout = reconnect_timeout
        self.since: float | None = None  # on the monotonic clock; None while the daemon answers

    def wait(self, e: DaemonUnavailable) -> None:
        """wait pauses before the next try, or raises the one-line CliError once the timeout has passed."""
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.reconnect_timeout:
            raise CliError(f"cannot watch change {self.change_id}: {e}; gave up after {self.reconnect_timeout:g} s")
        time.sleep(min(1.0, POLL_INTERVAL * 2))


def first_read(client: Client, change_id: str, reconnect_timeout: float) -> dict[str, Any]:
    """first_read reads the change to show first; a daemon that drops the connection (a restart, a crash
    mid-answer) is asked again like follow asks it, one that is not there at all is an error at once."""
    lost = _Lost(change_id, reconnect_timeout)
    while True:
        try:
            return client.change(change_id)
        except DaemonUnavailable as e:
            if not e.went_away and lost.since is None:
                raise cli_error(e, f"watch change {change_id}") from None
            lost.wait(e)


def follow(client: Client, change_id: str, live: Live | None, reconnect_timeout: float) -> dict[str, Any]:
    """follow reads the change whenever a notice says it changed, until it is ready; returns its last JSON.

    It updates live as it goes; see the module's docstring for when it asks.
    """
    last: dict[str, Any] | None = None
    lost = _Lost(change_id, reconnect_timeout)
    tracker = _Tracker()
    cursor: str | None = None  # the last-repeated of the last change-update notice seen ("": none yet)
    fresh = False  # whether the change must be read again
    polling = False  # a daemon without notices: ask every POLL_INTERVAL
    while True:
        try:
            if polling:
                if last is not None:
                    time.sleep(POLL_INTERVAL)
            elif cursor is None:  # (again after the daemon came back): where its notices stand now
                seen = client.notices(["change-update"], [change_id])
                cursor = seen[-1]["last-repeated"] if seen else ""
                fresh = True
            if not fresh and not polling and last is not None:
                running = any(t.get("status") in RUNNING for t in last.get("tasks", ()))
                came = client.notices(["change-update"], [change_id], cursor,
                                      PROGRESS_INTERVAL if running else WAIT_TIMEOUT)
                if came:
                    cursor = came[-1]["last-repeated"]
                elif not running:
                    continue  # nothing happened: wait again
            fresh = False
            change = client.change(change_id)
        except DaemonUnavailable as e:
            lost.wait(e)
            if live is not None and last is not None:
                live.update(watch_view(last, "the daemon is not answering; waiting for it to come back...",
                                       running=tracker.running, height=_height(live)))
            cursor = None
            continue
        except ApiError as e:
            if e.status_code == 503:  # busy: ask again
                time.sleep(POLL_INTERVAL)
                continue
            if e.status_code == 404 and e.kind == "not-found" and "/v2/notices" in e.message:
                polling = True  # an older daemon
                continue
            raise
        lost.since = None
        last = change
        tracker.see(change)
        ready = bool(change.get("ready"))
        if live is not None:  # the last one is printed whole: it stays on the screen
            live.update(watch_view(change, running=tracker.running, height=None if ready else _height(live)))
        if ready:
            return change


def watch_change(client: Client, change_id: str, reconnect_timeout: float = 60.0) -> dict[str, Any]:
    """watch_change shows the live display of a change until it is ready and returns the change's last JSON.

    Ctrl-C stops watching (the change goes on) and exits EXIT_INTERRUPTED;
    the daemon's errors are one-line CliErrors. `watch` and the snap verbs
    (install, remove, ...) wait through it.
    """
    out = console()
    try:
        first = first_read(client, change_id, reconnect_timeout)
        start = WatchView(first, height=out.size.height if out.is_terminal and not first.get("ready") else None)
        with Live(start, console=out, refresh_per_second=8, transient=False) as live:
            final = follow(client, change_id, live, reconnect_timeout)
        if not out.is_terminal:
            out.line()  # Live leaves the last line open when it is not drawing on a terminal
    except KeyboardInterrupt:
        click.echo(f"Stopped watching change {change_id}; it goes on ('overlord tasks {change_id}' shows it).",
                   err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ApiError as e:
        raise cli_error(e, f"watch change {change_id}") from None
    return final


def check_done(change: dict[str, Any]) -> None:
    """check_done fails, with the change's error (one line per failed task: _views.error_lines), unless the
    change ended Done."""
    if change["status"] != "Done":
        lines = error_lines(change) if change.get("err") else []
        raise CliError("\n".join(lines) or f"change {one_line(change['id'])} ended in status "
                                            f"{one_line(change['status'])}")


@cli.command()
@click.argument("id", callback=change_id)
@click.option("--reconnect-timeout", type=Seconds(min=0), default=60.0, show_default=True,
              help="Seconds to keep trying when the daemon stops answering.")
@state_dir_option
def watch(id: str, reconnect_timeout: float, state_dir: Path | None) -> None:
    """Watch change ID until it is ready; Ctrl-C stops watching, not the change."""
    client = Client(state_dir)
    try:
        final = watch_change(client, id, reconnect_timeout)
    finally:
        client.close()
    note_warnings(client)
    check_done(final)
