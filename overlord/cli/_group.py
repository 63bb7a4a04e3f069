# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command group that every cmd_* module adds its commands to."""

from __future__ import annotations

import logging
import math
from typing import Any

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
def cli(verbose: bool) -> None:
    """overlord: changes and tasks of a system, like snapd's snap command."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


#: The longest timeout an option takes, in seconds (about 31 years): longer ones overflow the clock's arithmetic.
MAX_SECONDS = 1e9


class Seconds(click.FloatRange):
    """Seconds is a FloatRange of seconds that are finite (NaN passes every comparison of a range) and at most
    MAX_SECONDS (an infinity, or 1e300, overflows the clock arithmetic of the timeouts it gives)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        rv: float = super().convert(value, param, ctx)
        if not math.isfinite(rv) or rv > MAX_SECONDS:
            self.fail(f"{value!r} is not a number of seconds up to {MAX_SECONDS:.0f}", param, ctx)
        return rv
