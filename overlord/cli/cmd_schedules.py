# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord schedules`: the schedules of the daemon, with their next time (engine.schedules)."""

from __future__ import annotations

from pathlib import Path

import click

from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import one_line, print_json


@cli.command()
@json_option
@state_dir_option
def schedules(as_json: bool, state_dir: Path | None) -> None:
    """List the schedules, with the next time each makes its change."""
    with session(state_dir, "list schedules") as c:
        result = c.request("GET", "/v2/schedules")["result"]
    if as_json:
        print_json(result)
        return
    if not result:
        click.echo("No schedules.")
        return
    rows = [("Name", "Spec", "Next", "Last", "Missed", "State")]
    for s in result:
        rows.append((one_line(s["name"]), one_line(s["spec"]), one_line(s["next-time"] or "-"),
                     one_line(s["last-time"] or "-"), one_line(s["missed"]), "paused" if s["paused"] else "active"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
