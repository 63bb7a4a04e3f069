# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command: one module per verb group (cmd_*.py), all on one click group."""

from __future__ import annotations

import sys

import click

from . import cmd_engine  # noqa: F401  (each import adds its commands)
from ._group import cli

__all__ = ["main"]


def main() -> None:
    """main runs the overlord command; a usage error is one line on stderr and exit code 2."""
    try:
        code = cli.main(prog_name="overlord", standalone_mode=False)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # "overlord" alone (click 8.2): the help, as click shows it
            print(e.format_message(), file=sys.stderr)
            sys.exit(e.exit_code)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        print(f"overlord: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        print(f"overlord: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.Abort:
        print("overlord: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
