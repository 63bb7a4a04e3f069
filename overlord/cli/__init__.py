# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command: one module per verb group (cmd_*.py), all on one click group."""

from __future__ import annotations

import logging
import sys

import click

from ..extras import missing_extra
from . import (  # noqa: F401  (each import adds its commands)
    cmd_asserts,
    cmd_changes,
    cmd_config,
    cmd_daemon,
    cmd_db,
    cmd_debug,
    cmd_demo,
    cmd_info,
    cmd_interfaces,
    cmd_keys,
    cmd_notices,
    cmd_pack,
    cmd_schedules,
    cmd_seed,
    cmd_services,
    cmd_snaps,
    cmd_store,
    cmd_warnings,
    cmd_watch,
)
from ._group import cli

__all__ = ["main"]


def main() -> None:
    """main runs the overlord command; every error is one line on stderr, "error: ...", like snap's.

    A usage error exits 2, a conflict 10, any other error 1.
    """
    try:
        code = cli.main(prog_name="overlord", standalone_mode=False)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # "overlord" alone (click 8.2): the help, as click shows it
            print(e.format_message(), file=sys.stderr)
            sys.exit(e.exit_code)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()  # one line, "error: <message>" (see _output.CliError)
        sys.exit(e.exit_code)
    except click.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # a bug, or an answer no check foresaw: one line; the traceback with -v
        if isinstance(e, ModuleNotFoundError) and missing_extra(e) is not None:
            raise  # a part of an extra not installed: the entry point names the extra (overlord.entry)
        logging.getLogger("overlord").debug("the overlord command failed", exc_info=True)
        what = " ".join(str(e).split()) or "no message"
        print(f"error: internal error: {type(e).__name__}: {what} (a bug; 'overlord -v ...' shows where)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
