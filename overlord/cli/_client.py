# SPDX-License-Identifier: GPL-3.0-or-later
"""The options and the session every daemon verb shares: --state-dir, --json, errors, the warnings note."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import paths
from ..client import ApiError, Client, ClientError, format_time, parse_time
from ._output import EXIT_CONFLICT, CliError

F = TypeVar("F", bound=Callable[..., Any])

#: WARNINGS_FILE_ENV names the file keeping when `overlord warnings` was last run (for `okay`).
WARNINGS_FILE_ENV = "OVERLORD_WARNINGS_FILE"


def change_id(ctx: click.Context, param: click.Parameter, value: Any) -> str:
    """change_id checks an ID argument of the change commands: decimal digits, or a usage error."""
    text = str(value)
    if not (text.isascii() and text.isdigit()):
        raise click.BadParameter(f"{text!r} is not a change id (a number)", ctx, param)
    return text


def state_dir_option(fn: F) -> F:
    """state_dir_option adds --state-dir (default $OVERLORD_STATE_DIR, else /var/lib/overlord)."""
    return click.option(
        "--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
        help=f"State directory of the daemon, holding its socket (default: ${paths.STATE_DIR_ENV}, "
             f"else {paths.DEFAULT_STATE_DIR}).")(fn)


def json_option(fn: F) -> F:
    """json_option adds --json: print the API's JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")(fn)


def abs_time_option(fn: F) -> F:
    """abs_time_option adds --abs-time: RFC 3339 times instead of "today at ..."."""
    return click.option("--abs-time", is_flag=True, help="Show times as RFC 3339 instead of 'today at ...'.")(fn)


def cli_error(e: ClientError, doing: str | None = None) -> CliError:
    """cli_error turns a client error into the command's error; a conflict exits with EXIT_CONFLICT."""
    message = str(e)
    if doing and not message.startswith("cannot"):
        message = f"cannot {doing}: {message}"
    code = EXIT_CONFLICT if isinstance(e, ApiError) and e.status_code == 409 else 1
    return CliError(message, code)


@contextlib.contextmanager
def session(state_dir: Path | None, doing: str | None = None) -> Iterator[Client]:
    """session yields a Client; client errors become one-line command errors, and new warnings are noted."""
    client = Client(state_dir)
    try:
        yield client
    except ClientError as e:
        raise cli_error(e, doing) from None
    finally:
        client.close()
    note_warnings(client)


def note_warnings(client: Client) -> None:
    """note_warnings says on stderr, like snapd, that warnings arrived since `overlord warnings` last ran."""
    if not client.warning_count or client.warning_timestamp is None:
        return
    last = last_warnings_time(client)
    if last is not None and client.warning_timestamp <= last:
        return
    n = client.warning_count
    click.echo(f"WARNING: There {'is' if n == 1 else 'are'} {n} new warning{'' if n == 1 else 's'}. "
               "See 'overlord warnings'.", err=True)


def _warnings_file() -> Path:
    given = os.environ.get(WARNINGS_FILE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "overlord" / "warnings.json"


def last_warnings_time(client: Client) -> datetime | None:
    """last_warnings_time is when `overlord warnings` last listed this daemon's warnings (None: never)."""
    try:
        data = json.loads(_warnings_file().read_text())
        text = data.get(str(client.socket))
        return parse_time(text) if isinstance(text, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def save_warnings_time(client: Client, when: datetime) -> None:
    """save_warnings_time records when the warnings were listed, for `overlord okay`."""
    path = _warnings_file()
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[str(client.socket)] = format_time(when)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
    except OSError as e:
        raise CliError(f"cannot record when the warnings were shown in {path}: {e.strerror}") from None
