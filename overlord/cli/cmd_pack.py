# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord pack DIR [-o FILE]: build a snap from a directory (like snap pack)."""

from __future__ import annotations

from pathlib import Path

import click

from ._errors import one_line_errors
from ._group import cli


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="The snap file to write, or a directory for <name>_<version>.snap (default: here).")
@one_line_errors
def pack(directory: Path, output: Path | None) -> None:
    """Build a snap file from DIRECTORY, which holds meta/snap.yaml.

    The same directory always gives the same bytes (and sha3-384).
    """
    from managers.asserts import file_sha3_384
    from managers.snap import pack as pack_snap

    path = pack_snap(directory, output)
    digest, size = file_sha3_384(path)
    click.echo(f"built {path} ({size} bytes, sha3-384 {digest})")
