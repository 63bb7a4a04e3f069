# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord seed DIR`: seed a new system from a seed directory (docs/managers.md, "First boot")."""

from __future__ import annotations

from pathlib import Path

import click

from ..client import ApiError
from ._client import session, state_dir_option
from ._group import cli
from .cmd_interfaces import wait_change
from .cmd_snaps import no_wait_option


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@no_wait_option
@state_dir_option
def seed(directory: Path, no_wait: bool, state_dir: Path | None) -> None:
    """Seed a new system from the seed directory DIR (seed.yaml, snaps/, assertions/).

    The daemon checks the whole seed first and refuses a broken one with
    nothing changed; on a seeded system it does nothing, and says so.
    """
    with session(state_dir, f"seed the system from {directory}") as c:
        try:
            change_id = c.seed(directory.absolute())
        except ApiError as e:
            if e.kind != "already-seeded":
                raise
            change = c.seed_state().get("change")
            click.echo("The system is seeded already" + (f" (change {change})" if change else "")
                       + ": nothing to do.")
            return
        wait_change(c, change_id, no_wait)
