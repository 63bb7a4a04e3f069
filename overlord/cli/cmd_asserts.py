# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord ack FILE` and `overlord known TYPE [HEADER=VALUE...]` (snapd's cmd_ack.go, cmd_known.go)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import fail, is_tty, print_json, safe

#: MAX_ACK is the largest file `ack` sends (the daemon takes request bodies up to 1 MiB).
MAX_ACK = 1024 * 1024


@cli.command()
@click.argument("file", metavar="FILE")
@state_dir_option
def ack(file: str, state_dir: Path | None) -> None:
    """Add the signed assertions of FILE ("-": standard input), all or none, each checked up to the trusted root."""
    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_ACK + 1)
        else:
            with open(file, "rb") as f:
                data = f.read(MAX_ACK + 1)
    except OSError as e:
        fail(f"cannot read assertions from {file}: {e.strerror}")
    if len(data) > MAX_ACK:
        fail(f"cannot add assertions from {file}: it is larger than {MAX_ACK} bytes")
    with session(state_dir, "add assertions") as c:
        c.ack(data)


def _filters(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{v!r} is not HEADER=VALUE", param_hint="HEADER=VALUE")
        out[name] = value
    return out


@cli.command()
@click.argument("type_name", metavar="TYPE")
@click.argument("filters", nargs=-1, metavar="[HEADER=VALUE...]")
@json_option
@state_dir_option
def known(type_name: str, filters: tuple[str, ...], as_json: bool, state_dir: Path | None) -> None:
    """Print the stored assertions of TYPE whose headers have the given values, ready for `overlord ack`."""
    headers = _filters(filters)
    with session(state_dir, f"find {type_name} assertions") as c:
        if as_json:
            print_json(c.known_json(type_name, headers))
            return
        text = c.known(type_name, headers)
    # The text as stored, for files and pipes; on a terminal control characters are shown escaped.
    click.echo(safe(text) if is_tty() else text, nl=False)
