# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's own demo (`overlord demo`); `changes DB` and `change ID DB` live in cmd_changes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._group import cli

#: DEMO_ROOT is the demo's state directory (engine.cli.DEMO_ROOT; not imported here, so that commands
#: that talk to the daemon start without loading the engine).
DEMO_ROOT = Path("state")


@cli.command()
@click.option("--root", type=click.Path(path_type=Path), default=DEMO_ROOT, show_default=True,
              help="State directory of the demo.")
def demo(root: Path) -> None:
    """Run two changes through an overlord and show them."""
    from engine import cli as engine_cli

    sys.exit(engine_cli.main(["demo", "--root", str(root)]))
