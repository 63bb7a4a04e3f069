# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord changes [SNAP]`, `tasks ID`, `change ID [DB]`, `abort ID`, `retry ID` (snapd's cmd_changes.go,
cmd_abort.go), `abort/retry --select ...` (docs/requests.md).

A snap name never holds "/" or ".", so `changes PATH` (or the name of an
existing file) and `change ID DB` read a state database file, as before the
daemon existed; everything else asks the daemon.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..client import Client
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


#: What --select takes: comma-separated TERM=VALUE (status and kind may repeat).
SELECT_TERMS = ("status", "kind", "age", "label")
select_option = click.option(
    "--select", "select", default=None, metavar="TERM=VALUE,...",
    help="Act on every change these pick instead of one, in one transaction: status=Error, kind=install "
         "(both may repeat), age=2h (spawned longer ago), label=KEY=VALUE (its data). Example: "
         "--select status=Error,kind=install,age=1h.")


def parse_select(text: str) -> dict[str, object]:
    """parse_select reads --select into the API's selection object; UsageError names a bad term."""
    out: dict[str, object] = {}
    for term in (t.strip() for t in text.split(",")):
        name, sep, value = term.partition("=")
        if not sep or not value or name not in SELECT_TERMS:
            raise click.UsageError(f"cannot read --select term {term!r}: it must be TERM=VALUE with TERM one of "
                                   + ", ".join(SELECT_TERMS))
        if name in ("status", "kind"):
            out.setdefault(name, [])
            out[name].append(value)  # type: ignore[attr-defined]
        else:
            out[name] = value
    return out


def _opt_change_id(ctx: click.Context, param: click.Parameter, value: Any) -> str | None:
    return None if value is None else change_id(ctx, param, value)


def _one_or_selected(verb: str, id: str | None, select: str | None, state_dir: Path | None,
                     one: Callable[[Client, str], object]) -> None:
    if id is None and select is None:
        raise click.UsageError(f"name a change ID, or --select the changes to {verb}")
    if id is not None and select is not None:
        raise click.UsageError(f"name a change ID or --select the changes to {verb}, not both")
    if id is not None:
        with session(state_dir, f"{verb} change {id}") as c:
            one(c, id)
        return
    assert select is not None
    picked = parse_select(select)
    with session(state_dir, f"{verb} changes") as c:
        ids = c.act_on_changes(verb, picked)
    done = {"abort": "Aborted", "retry": "Retrying"}[verb]
    click.echo(f"{done} changes {', '.join(ids)}" if ids else f"No change to {verb} matches {select}")


@cli.command()
@click.argument("id", callback=_opt_change_id, required=False)
@select_option
@state_dir_option
def abort(id: str | None, select: str | None, state_dir: Path | None) -> None:
    """Abort change ID (or every unready change --select picks): its running tasks are asked to stop, what was
    done is undone."""
    _one_or_selected("abort", id, select, state_dir, lambda c, i: c.abort(i))


@cli.command()
@click.argument("id", callback=_opt_change_id, required=False)
@select_option
@state_dir_option
def retry(id: str | None, select: str | None, state_dir: Path | None) -> None:
    """Retry failed change ID (or every failed change --select picks) from where it failed: its failed tasks and
    what waits on them run again; what is done stays done."""
    _one_or_selected("retry", id, select, state_dir, lambda c, i: c.retry(i))
