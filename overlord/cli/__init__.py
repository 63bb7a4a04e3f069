# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command: one module per verb group (cmd_*.py), all on one click group."""

from __future__ import annotations

from . import (  # noqa: F401  (each import adds its commands)
    cmd_asserts,
    cmd_changes,
    cmd_daemon,
    cmd_db,
    cmd_debug,
    cmd_demo,
    cmd_keys,
    cmd_pack,
    cmd_snaps,
    cmd_warnings,
    cmd_watch,
)
from ._group import cli

__all__ = ["main"]


def main() -> None:
    """main runs the overlord command."""
    cli(prog_name="overlord")
