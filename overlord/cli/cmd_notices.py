# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord notices`: list the daemon's notices, or wait for the next ones (snapd's `snap notices`)."""

from __future__ import annotations

from pathlib import Path

import click

from ._client import abs_time_option, json_option, session, state_dir_option
from ._group import Seconds, cli
from ._output import FitTable, out, plain, print_json, when


def notices_table(notices: list[dict[str, object]], abs_time: bool = False) -> FitTable:
    """notices_table lists notices: id, type, key, when last repeated, occurrences, last data."""
    rows = []
    for n in notices:
        data = n.get("last-data") or {}
        text = " ".join(f"{k}={v}" for k, v in sorted(data.items())) if isinstance(data, dict) else ""
        rows.append([plain(n["id"]), plain(n["type"]), plain(n["key"]),
                     plain(when(str(n.get("last-repeated") or ""), abs_time=abs_time)),
                     plain(n["occurrences"]), plain(text or "-")])
    return FitTable(("ID", "Type", "Key", "Repeated", "Occurrences", "Data"), rows, flex="Key", drop=("Data",))


@cli.command()
@click.option("--type", "types", multiple=True, metavar="TYPE",
              help="Only notices of this type (change-update, warning, ...); repeatable.")
@click.option("--key", "keys", multiple=True, metavar="KEY", help="Only notices with this key; repeatable.")
@click.option("--after", metavar="TIME",
              help="Only notices repeated after this RFC 3339 time (a notice's last-repeated).")
@click.option("--timeout", type=Seconds(min=0, max=24 * 3600), default=0.0, metavar="SECONDS",
              help="Wait up to this long for a matching notice when none matches yet.")
@abs_time_option
@json_option
@state_dir_option
def notices(types: tuple[str, ...], keys: tuple[str, ...], after: str | None, timeout: float, abs_time: bool,
            as_json: bool, state_dir: Path | None) -> None:
    """List the notices: changes updated, warnings, and events of the daemon's own types."""
    with session(state_dir, "list notices") as c:
        result = c.notices(list(types), list(keys), after, timeout)
    if as_json:
        print_json(result)
    elif not result:
        click.echo("No matching notices." if types or keys or after else "No notices.")
    else:
        out().print(notices_table(result, abs_time=abs_time))
