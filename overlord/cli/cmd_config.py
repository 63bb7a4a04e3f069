# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord set|get|unset SNAP ...` (snapd's snap set/get/unset) and `overlord ctl` (snapd's snapctl).

set and unset make a configure-snap change and follow it like the other
verbs (the snap's configure hook may refuse the new values: the change
fails and the configuration stays as it was). get reads through the API.
ctl is for hooks: it needs the SNAP_COOKIE and OVERLORD_SOCKET the daemon
gives a hook, and acts on that hook's snap only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..client import ApiError, Client, ClientError
from ._client import session, state_dir_option
from ._group import cli
from ._output import fail, out, plain, safe
from .cmd_snaps import no_wait_option
from .cmd_watch import check_done, watch_change

#: COOKIE_ENV and SOCKET_ENV are managers.hookstate's names, spelled here so that ctl loads nothing heavy.
COOKIE_ENV = "SNAP_COOKIE"
SOCKET_ENV = "OVERLORD_SOCKET"


def _patch(words: tuple[str, ...], strings: bool) -> dict[str, Any]:
    """_patch reads KEY=VALUE words (KEY! unsets) as managers.configstate.parse_assignments does."""
    patch: dict[str, Any] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            if word.endswith("!") and len(word) > 1:
                patch[word[:-1]] = None
                continue
            raise click.UsageError(f"invalid configuration: {word!r} (want key=value, or key! to unset)")
        if strings:
            patch[key] = value
            continue
        try:
            patch[key] = json.loads(value)
        except ValueError:
            patch[key] = value
    return patch


def _change(state_dir: Path | None, snap: str, patch: dict[str, Any], no_wait: bool, doing: str) -> None:
    with session(state_dir, doing) as c:
        cid = c.set_conf(snap, patch)
        if no_wait:
            click.echo(cid)
            return
        check_done(watch_change(c, cid))


@cli.command(name="set")
@click.argument("snap")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("-s", "--string", "strings", is_flag=True, help="Keep every VALUE as text (default: JSON where it "
              "parses, text otherwise).")
@no_wait_option
@state_dir_option
def set_(snap: str, assignments: tuple[str, ...], strings: bool, no_wait: bool, state_dir: Path | None) -> None:
    """Change options of a snap ("system": the system's settings): KEY=VALUE, a.b=VALUE inside a document,
    KEY! to unset. The snap's configure hook sees the new values and may refuse them."""
    _change(state_dir, snap, _patch(assignments, strings), no_wait, f"set the configuration of snap {snap!r}")


@cli.command()
@click.argument("snap")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@no_wait_option
@state_dir_option
def unset(snap: str, keys: tuple[str, ...], no_wait: bool, state_dir: Path | None) -> None:
    """Remove options of a snap (through its configure hook, like set)."""
    _change(state_dir, snap, dict.fromkeys(keys), no_wait, f"unset options of snap {snap!r}")


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}" if value else "{}"
    return value if isinstance(value, str) else json.dumps(value)


@cli.command()
@click.argument("snap")
@click.argument("keys", nargs=-1, metavar="[KEY...]")
@click.option("-d", "document", is_flag=True, help="Print the options as a JSON document.")
@state_dir_option
def get(snap: str, keys: tuple[str, ...], document: bool, state_dir: Path | None) -> None:
    """Show options of a snap: one KEY's value, a table of several (or of a document's), or everything."""
    with session(state_dir) as c:  # the daemon's errors say what could not be read
        result = c.conf(snap, list(keys))
    if document:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    if len(keys) == 1 and not isinstance(result[keys[0]], dict):
        value = result[keys[0]]
        click.echo(safe(value) if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True))
        return
    rows = result if len(keys) != 1 else {f"{keys[0]}.{k}": v for k, v in result[keys[0]].items()}
    if not rows:
        fail(f"snap {snap!r} has no configuration" if not keys else f"snap {snap!r} option {keys[0]!r} is empty")
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    t.add_column("Key", overflow="fold")
    t.add_column("Value", overflow="fold")
    for key in sorted(rows):
        t.add_row(plain(key), plain(_shown(rows[key])))
    out().print(t)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="get|set|unset|start|stop|restart ARGS...")
def ctl(args: tuple[str, ...]) -> None:
    """In a hook: the snap's own options and services (get [-d] KEY..., set KEY=VALUE..., unset KEY...,
    start|stop|restart [--enable|--disable] [SNAP.APP...]: once the hook is done).

    It talks to the daemon at $OVERLORD_SOCKET with the hook's token $SNAP_COOKIE.
    """
    token, socket = os.environ.get(COOKIE_ENV), os.environ.get(SOCKET_ENV)
    if not token or not socket:
        fail(f"cannot run ctl: it is for hooks (${COOKIE_ENV} and ${SOCKET_ENV} are not set)")
    try:
        with Client(socket=socket) as c:
            result = c.ctl(token, list(args))
    except ApiError as e:
        fail(e.message)
    except ClientError as e:
        fail(f"cannot run ctl: {e}")
    click.echo(result.get("stdout", ""), nl=False)
    if result.get("stderr"):
        click.echo(result["stderr"], nl=False, err=True)
