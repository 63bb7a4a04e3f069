# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command group that every cmd_* module adds its commands to."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
def cli(verbose: bool) -> None:
    """overlord: changes and tasks of a system, like snapd's snap command."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
