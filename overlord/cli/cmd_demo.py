# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord demo: a small snap system seeded, a snap installed, an interface connected, refreshes, connections."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ._errors import one_line_errors
from ._group import cli

#: DEMO_DIR is where the demo writes, by default (relative to the current directory).
DEMO_DIR = Path("var") / "demo"


@cli.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=DEMO_DIR,
              show_default=True, help="Where the demo writes its keys, store, state and system root.")
@one_line_errors
def demo(directory: Path) -> None:
    """Run the system demo: seed a system, install from a signed store, connect, refresh, show connections."""
    base = directory.absolute()
    from . import _demo  # the engine and the managers load only when the demo runs

    _demo.prepare(base)
    engine_log = logging.getLogger("engine")
    level = engine_log.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        engine_log.setLevel(logging.ERROR)  # the failure in step 5 is on purpose: do not warn about it
    try:
        _demo.run(base)
    finally:
        engine_log.setLevel(level)


