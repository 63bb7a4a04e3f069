# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord watch ID`: follow a change live, one progress bar per task, until it is ready (cmd_watch.go).

It polls the daemon. Ctrl-C stops watching and leaves the change running.
When the daemon goes away (a restart, a crash), watch says so and keeps
asking until the daemon answers again or --reconnect-timeout passes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..client import ApiError, Client, DaemonUnavailable
from ._client import cli_error, note_warnings, state_dir_option
from ._group import cli
from ._output import EXIT_INTERRUPTED, CliError, console, plain, status_text

#: POLL_INTERVAL is how often watch asks the daemon about the change, in seconds.
POLL_INTERVAL = 0.2
_BAR_WIDTH = 24


def watch_view(change: dict[str, Any], note: str | None = None) -> RenderableType:
    """watch_view is the live display: the change's line, then each task with its status and progress bar."""
    head = Text.assemble(plain(f"Change {change['id']} ({change['kind']}): "), plain(change["summary"]),
                         plain(" - "), status_text(change["status"]))
    rows = Table.grid(padding=(0, 1))
    rows.add_column(no_wrap=True, min_width=7)
    rows.add_column(overflow="fold", ratio=1)
    rows.add_column(no_wrap=True, width=_BAR_WIDTH)
    rows.add_column(no_wrap=True)
    for task in change["tasks"]:
        progress = task.get("progress") or {}
        done, total = int(progress.get("done", 0)), max(int(progress.get("total", 1)), 1)
        status = task["status"]
        if status in ("Done", "Undone"):
            done = total
        running = status in ("Doing", "Undoing")
        bar = ProgressBar(total=None if running and total == 1 and done == 0 else total, completed=done,
                          width=_BAR_WIDTH, pulse=running and total == 1 and done == 0)
        label = progress.get("label") or ""
        amount = f"{done}/{total}" if total > 1 else ("100%" if done >= total else "")
        rows.add_row(status_text(status), plain(task["summary"]), bar, plain(f"{amount} {label}".strip(), "dim"))
    parts: list[RenderableType] = [head, rows]
    if note:
        parts.append(plain(note, "yellow"))
    return Group(*parts)


def follow(client: Client, change_id: str, live: Live | None, reconnect_timeout: float) -> dict[str, Any]:
    """follow polls the change until it is ready and returns its last JSON, updating live as it goes."""
    last: dict[str, Any] | None = None
    lost_since: float | None = None
    while True:
        try:
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
            continue
        except ApiError as e:
            if e.status_code == 503:  # busy: ask again
                time.sleep(POLL_INTERVAL)
                continue
            raise
        lost_since = None
        last = change
        if live is not None:
            live.update(watch_view(change))
        if change.get("ready"):
            return change
        time.sleep(POLL_INTERVAL)


@cli.command()
@click.argument("id")
@click.option("--reconnect-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to keep trying when the daemon stops answering.")
@state_dir_option
def watch(id: str, reconnect_timeout: float, state_dir: Path | None) -> None:
    """Watch change ID until it is ready; Ctrl-C stops watching, not the change."""
    client = Client(state_dir)
    out = console()
    try:
        try:
            first = client.change(id)
        except DaemonUnavailable as e:
            raise cli_error(e, f"watch change {id}") from None
        with Live(watch_view(first), console=out, refresh_per_second=8, transient=False) as live:
            final = follow(client, id, live, reconnect_timeout)
    except KeyboardInterrupt:
        click.echo(f"Stopped watching change {id}; it goes on ('overlord tasks {id}' shows it).", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ApiError as e:
        raise cli_error(e, f"watch change {id}") from None
    finally:
        client.close()
    note_warnings(client)
    if final["status"] != "Done":
        raise CliError(final.get("err") or f"change {id} ended in status {final['status']}")
