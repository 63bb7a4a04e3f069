# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord changes [SNAP]`, `tasks ID`, `change ID [DB]`, `abort ID` (snapd's cmd_changes.go, cmd_abort.go).

A snap name never holds "/" or ".", so `changes PATH` (or the name of an
existing file) and `change ID DB` read a state database file, as before the
daemon existed; everything else asks the daemon.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._client import abs_time_option, change_id, json_option, session, state_dir_option
from ._group import cli
from ._output import fail, out, print_json
from ._views import change_view, changes_table


def is_path(arg: str) -> bool:
    """is_path says whether a `changes` argument names a database file rather than a snap."""
    return "/" in arg or "." in arg or Path(arg).is_file()


@cli.command()
@click.argument("snap", required=False, metavar="[SNAP]")
@abs_time_option
@json_option
@state_dir_option
def changes(snap: str | None, abs_time: bool, as_json: bool, state_dir: Path | None) -> None:
    """List the changes (of SNAP only, if given); `changes DB` lists those of a database file."""
    if snap is not None and is_path(snap):
        _db_changes(Path(snap), as_json)
        return
    with session(state_dir, "list changes") as c:
        result = c.changes(select="all", snap=snap)
    if as_json:
        print_json(result)
    elif not result:
        if snap:
            fail(f"no changes for snap {snap!r} found")
        click.echo("No changes found.")
    else:
        out().print(changes_table(result, abs_time=abs_time))


def _db_changes(db: Path, as_json: bool) -> None:
    if as_json:
        from ._offline import read_changes

        print_json(read_changes(db))
        return
    from ._dbview import list_changes

    sys.exit(list_changes(db))


def _show_change(change_id: str, abs_time: bool, as_json: bool, state_dir: Path | None) -> None:
    with session(state_dir, f"show change {change_id}") as c:
        result = c.change(change_id)
    if as_json:
        print_json(result)
    else:
        out().print(change_view(result, abs_time=abs_time))


@cli.command()
@click.argument("id", callback=change_id)
@abs_time_option
@json_option
@state_dir_option
def tasks(id: str, abs_time: bool, as_json: bool, state_dir: Path | None) -> None:
    """List the tasks of change ID, with their logs."""
    _show_change(id, abs_time, as_json, state_dir)


@cli.command()
@click.argument("id", callback=change_id)
@click.argument("db", required=False, type=click.Path(path_type=Path, dir_okay=False, readable=False))
@abs_time_option
@json_option
@state_dir_option
def change(id: str, db: Path | None, abs_time: bool, as_json: bool, state_dir: Path | None) -> None:
    """Show change ID and its tasks (like `tasks`); with DB, from that database file."""
    if db is None:
        _show_change(id, abs_time, as_json, state_dir)
        return
    if as_json:
        from ._offline import read_change

        print_json(read_change(db, id))
        return
    if not id.isdigit():
        fail(f"cannot show change {id!r}: a change id is a number")
    from ._dbview import show_change

    sys.exit(show_change(db, str(int(id))))


@cli.command()
@click.argument("id", callback=change_id)
@state_dir_option
def abort(id: str, state_dir: Path | None) -> None:
    """Abort change ID: its running tasks are asked to stop, what was done is undone."""
    with session(state_dir, f"abort change {id}") as c:
        c.abort(id)
