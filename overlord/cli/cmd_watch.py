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
from ._group import cli
from ._output import EXIT_INTERRUPTED, CliError, amount, console, plain, status_text

#: POLL_INTERVAL is how long watch waits before asking a busy daemon again, in seconds.
POLL_INTERVAL = 0.2
#: PROGRESS_INTERVAL is how often watch reads a change whose tasks run (their progress), in seconds.
PROGRESS_INTERVAL = 0.25
#: WAIT_TIMEOUT is the long-poll's timeout while no task runs (it is asked again after it), in seconds.
WAIT_TIMEOUT = 20.0
_RUNNING = ("Doing", "Undoing")
_BAR_WIDTH = 24


class WatchView:
    """WatchView is the live display: the change's line, then each task's status, summary and progress bar.

    The bar narrows on a narrow terminal, and the summary folds, so that it fits the width it is printed at.
    """

    def __init__(self, change: dict[str, Any], note: str | None = None) -> None:
        self.change = change
        self.note = note

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        change = self.change
        yield Text.assemble(plain(f"Change {change['id']} ({change['kind']}): "), plain(change["summary"]),
                            plain(" - "), status_text(change["status"]))
        bar_width = max(8, min(_BAR_WIDTH, options.max_width // 5))
        rows = Table.grid(padding=(0, 1))
        rows.add_column(no_wrap=True, min_width=7)
        rows.add_column(overflow="fold", ratio=1, min_width=12)
        rows.add_column(no_wrap=True, width=bar_width)
        rows.add_column(no_wrap=True)
        for task in change["tasks"]:
            progress = task.get("progress") or {}
            done, total = int(progress.get("done", 0)), max(int(progress.get("total", 1)), 1)
            status = task["status"]
            if status in ("Done", "Undone"):
                done = total
            pulse = status in ("Doing", "Undoing") and total == 1 and done == 0
            bar = ProgressBar(total=None if pulse else total, completed=done, width=bar_width, pulse=pulse)
            rows.add_row(status_text(status), plain(task["summary"]), bar,
                         plain(amount(done, total, progress.get("label") or ""), "dim"))
        yield rows
        if self.note:
            yield plain(self.note, "yellow")


def watch_view(change: dict[str, Any], note: str | None = None) -> RenderableType:
    """watch_view is the live display of a change (a WatchView)."""
    return WatchView(change, note)


def follow(client: Client, change_id: str, live: Live | None, reconnect_timeout: float) -> dict[str, Any]:
    """follow reads the change whenever a notice says it changed, until it is ready; returns its last JSON.

    It updates live as it goes; see the module's docstring for when it asks.
    """
    last: dict[str, Any] | None = None
    lost_since: float | None = None
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
                running = any(t.get("status") in _RUNNING for t in last.get("tasks", ()))
                came = client.notices(["change-update"], [change_id], cursor,
                                      PROGRESS_INTERVAL if running else WAIT_TIMEOUT)
                if came:
                    cursor = came[-1]["last-repeated"]
                elif not running:
                    continue  # nothing happened: wait again
            fresh = False
            change = client.change(change_id)
        except DaemonUnavailable as e:
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since > reconnect_timeout:
                raise CliError(f"cannot watch change {change_id}: {e}; gave up after {reconnect_timeout:g} s") \
                    from None
            if live is not None and last is not None:
                live.update(watch_view(last, "the daemon is not answering; waiting for it to come back..."))
            time.sleep(min(1.0, POLL_INTERVAL * 2))
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
        lost_since = None
        last = change
        if live is not None:
            live.update(watch_view(change))
        if change.get("ready"):
            return change


def watch_change(client: Client, change_id: str, reconnect_timeout: float = 60.0) -> dict[str, Any]:
    """watch_change shows the live display of a change until it is ready and returns the change's last JSON.

    Ctrl-C stops watching (the change goes on) and exits EXIT_INTERRUPTED;
    the daemon's errors are one-line CliErrors. `watch` and the snap verbs
    (install, remove, ...) wait through it.
    """
    out = console()
    try:
        try:
            first = client.change(change_id)
        except DaemonUnavailable as e:
            raise cli_error(e, f"watch change {change_id}") from None
        with Live(watch_view(first), console=out, refresh_per_second=8, transient=False) as live:
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
    """check_done fails, with the change's error, unless the change ended Done."""
    if change["status"] != "Done":
        raise CliError(change.get("err") or f"change {change['id']} ended in status {change['status']}")


@cli.command()
@click.argument("id", callback=change_id)
@click.option("--reconnect-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
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
