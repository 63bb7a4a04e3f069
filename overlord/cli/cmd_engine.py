# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's own commands: read-only views of a state database."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine import cli as engine_cli

from ._group import cli


@cli.command()
@click.argument("db", type=click.Path(path_type=Path), default=engine_cli.DEMO_ROOT / "state.db")
def changes(db: Path) -> None:
    """List the changes of a state database."""
    sys.exit(engine_cli.main(["changes", str(db)]))


@cli.command()
@click.argument("id", type=int)
@click.argument("db", type=click.Path(path_type=Path), default=engine_cli.DEMO_ROOT / "state.db")
def change(id: int, db: Path) -> None:
    """Show one change and its tasks."""
    sys.exit(engine_cli.main(["change", str(id), str(db)]))
