# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord services`, `start`, `stop`, `restart`, `logs` and `run` (snapd's cmd_services.go, cmd_run.go).

start, stop and restart make a service-control change and follow it like
the snap verbs; logs prints the last lines of the services' logs (-f: and
then what they write, until interrupted); run executes an app of an
installed snap in this process, with the snap's environment only.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..client import Client
from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import fail, one_line, out, plain, print_json, table
from .cmd_snaps import no_wait_option
from .cmd_watch import check_done, watch_change

#: FOLLOW_INTERVAL is how often `logs -f` asks the daemon for new lines, in seconds.
FOLLOW_INTERVAL = 0.5


def services_table(apps: list[dict[str, Any]]) -> Table:
    """services_table lists services like `snap services`: Service, Startup, Current, plus pid and last exit."""
    t = table("Service", "Startup", "Current", "Pid", "Last exit", "Notes")
    for a in apps:
        notes = f"{a['restarts']} restarts" if a.get("restarts") else "-"
        t.add_row(plain(f"{a['snap']}.{a['name']}"), plain("enabled" if a["enabled"] else "disabled"),
                  plain(a["status"]), plain(a["pid"] if a.get("pid") is not None else "-"),
                  plain(a.get("last-exit") or "-"), plain(notes))
    return t


@cli.command()
@click.argument("names", nargs=-1, metavar="[SNAP|SNAP.APP...]")
@json_option
@state_dir_option
def services(names: tuple[str, ...], as_json: bool, state_dir: Path | None) -> None:
    """List the snaps' services: enabled or not, running or not, pid and how each last ended."""
    with session(state_dir, "list services") as c:
        result = c.apps(list(names) or None)
    if as_json:
        print_json(result)
    elif not result:
        click.echo("There are no services." if not names else "There are no such services.")
    else:
        out().print(services_table(result))


def _control(action: str, names: tuple[str, ...], enable: bool, disable: bool, no_wait: bool,
             state_dir: Path | None) -> None:
    with session(state_dir, f"{action} {', '.join(repr(n) for n in names)}") as c:
        cid = c.service_action(action, list(names), enable=enable, disable=disable)
        if no_wait:
            click.echo(cid)
            return
        check_done(watch_change(c, cid))
        done = {"start": "Started", "stop": "Stopped", "restart": "Restarted"}[action]
        click.echo(f"{done}.")


_enable = click.option("--enable", is_flag=True, help="Also start them with their snap and the daemon from now on.")
_names = click.argument("names", nargs=-1, required=True, metavar="SNAP|SNAP.APP...")


@cli.command()
@_names
@_enable
@no_wait_option
@state_dir_option
def start(names: tuple[str, ...], enable: bool, no_wait: bool, state_dir: Path | None) -> None:
    """Start services (all of a snap's, or SNAP.APP), in a service-control change."""
    _control("start", names, enable, False, no_wait, state_dir)


@cli.command()
@_names
@click.option("--disable", is_flag=True, help="Also stop starting them with their snap and the daemon.")
@no_wait_option
@state_dir_option
def stop(names: tuple[str, ...], disable: bool, no_wait: bool, state_dir: Path | None) -> None:
    """Stop services: SIGTERM to each one's process group, SIGKILL after its stop-timeout."""
    _control("stop", names, False, disable, no_wait, state_dir)


@cli.command()
@_names
@_enable
@no_wait_option
@state_dir_option
def restart(names: tuple[str, ...], enable: bool, no_wait: bool, state_dir: Path | None) -> None:
    """Restart services (those that are stopped start)."""
    _control("restart", names, enable, False, no_wait, state_dir)


def _print_entries(entries: list[dict[str, str]]) -> None:
    for e in entries:
        click.echo(f"{one_line(e['sid'])}: {one_line(e['message'])}")


@cli.command()
@click.argument("names", nargs=-1, metavar="[SNAP|SNAP.APP...]")
@click.option("-n", "lines", default="10", show_default=True, metavar="N",
              help="Lines to show per service, or 'all'.")
@click.option("-f", "--follow", is_flag=True, help="Then wait for new lines and show them, until interrupted.")
@state_dir_option
def logs(names: tuple[str, ...], lines: str, follow: bool, state_dir: Path | None) -> None:
    """Show the last lines of the services' logs (stdout and stderr of each, and the supervisor's notes)."""
    if lines != "all" and not (lines.isascii() and lines.isdigit()):
        raise click.BadParameter(f"{lines!r} is not a number of lines or 'all'", param_hint="-n")
    n = None if lines == "all" else int(lines)
    with session(state_dir, "show logs") as c:
        wanted = list(names) or None
        _, cursor = c.logs_since(wanted, "") if follow else ([], "")
        _print_entries(c.logs(wanted, n))
        try:
            while follow:
                time.sleep(FOLLOW_INTERVAL)
                entries, cursor = c.logs_since(wanted, cursor)
                _print_entries(entries)
        except KeyboardInterrupt:
            return


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("app", metavar="SNAP.APP")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The system root (default: the daemon's, from its system-info).")
@state_dir_option
def run(app: str, args: tuple[str, ...], root: Path | None, state_dir: Path | None) -> None:
    """Run an app of an installed snap (SNAP for the app named like the snap) with the snap's environment.

    Each word of the app's command is one argument ($SNAP... expanded, no
    shell); ARGS follow as given. The environment is the snap's only.
    """
    from managers import ManagerError
    from managers.snap.environ import command_argv, snap_environment
    from managers.snapstate.backend import Backend

    snap, _, name = app.partition(".")
    name = name or snap
    if root is None:
        with session(state_dir, f"run {app}") as c:
            root = Path(_daemon_root(c))
    if not root.is_absolute():
        fail(f"cannot run {app}: the system root {root} is not an absolute path (give --root)")
    backend = Backend(root)
    revision = backend.linked_revision(snap)
    if revision is None:
        fail(f"cannot run {app}: snap {snap!r} is not installed and enabled under {root}")
    try:
        info = backend.read_info(snap, revision).with_side(revision=revision)
    except ManagerError as e:
        fail(f"cannot run {app}: {e}")
    a = info.apps.get(name)
    if a is None:
        fail(f"cannot run {app}: snap {snap!r} has no app {name!r}")
    env = snap_environment(info, backend)
    argv = command_argv(a, env, args)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; the app gets the defaults
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(argv[0], argv, env)
    except OSError as e:
        fail(f"cannot run {app}: {e.strerror or e} ({argv[0]})")


def _daemon_root(c: Client) -> str:
    return str(c.system_info()["root"])
