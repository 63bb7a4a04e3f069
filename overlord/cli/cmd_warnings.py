# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord warnings` and `overlord okay` (snapd's cmd_warnings.go)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ._client import abs_time_option, json_option, last_warnings_time, save_warnings_time, session, state_dir_option
from ._group import cli
from ._output import fail, out, print_json
from ._views import warnings_table


@cli.command()
@click.option("--all", "all_", is_flag=True, help="Show every unexpired warning, also those already okayed.")
@abs_time_option
@json_option
@state_dir_option
def warnings(all_: bool, abs_time: bool, as_json: bool, state_dir: Path | None) -> None:
    """List the warnings the daemon has for you; `overlord okay` then marks them seen."""
    now = datetime.now(UTC)
    with session(state_dir, "list warnings") as c:
        result = c.warnings(all=all_)
        seen_before = last_warnings_time(c)
        if result:
            save_warnings_time(c, now)
        c.warning_count = 0  # just shown: no "new warnings" note
    if as_json:
        print_json(result)
    elif not result:
        click.echo("No warnings." if seen_before is None else "No further warnings.")
    else:
        out().print(warnings_table(result, abs_time=abs_time))


@cli.command()
@state_dir_option
def okay(state_dir: Path | None) -> None:
    """Mark the warnings shown by the last `overlord warnings` as seen."""
    with session(state_dir, "acknowledge warnings") as c:
        last = last_warnings_time(c)
        if last is None:
            fail("cannot acknowledge warnings: you must have looked at them first. Try 'overlord warnings'.")
        c.okay(last)
        c.warning_count = 0
