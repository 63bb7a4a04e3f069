# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord debug state` (snapd's `snap debug state`), `debug why ID`, `debug timings` and `overlord graph ID`.

Changes as tables and graphs, why their tasks are not running, and how long their runs took.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click

from .. import paths
from ._client import abs_time_option, change_id, json_option, session, state_dir_option
from ._dot import change_dot
from ._group import cli
from ._offline import read_change, read_changes, read_timings
from ._output import fail, out, print_json
from ._views import change_view, changes_table, ensure_table, timings_table, why_table


@cli.group()
def debug() -> None:
    """Tools to look inside the system (no daemon needed)."""


@debug.command("state")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
              help="The state database (default: state.db of the state directory).")
@click.option("--changes", "what", flag_value="changes", default=True, help="List the changes (the default).")
@click.option("--change", "change_id", metavar="ID", default=None, help="Show change ID and its tasks.")
@click.option("--dot", "dot_id", metavar="ID", default=None, help="Print change ID's task graph for Graphviz.")
@abs_time_option
@json_option
@state_dir_option
def debug_state(db: Path | None, what: str, change_id: str | None, dot_id: str | None, abs_time: bool,
                as_json: bool, state_dir: Path | None) -> None:
    """Read a state database without the daemon, and without writing to it."""
    if change_id is not None and dot_id is not None:
        raise click.UsageError("--change and --dot cannot be used together")
    db = db or paths.db_path(state_dir)
    if dot_id is not None:
        click.echo(change_dot(read_change(db, dot_id)), nl=False)
    elif change_id is not None:
        change = read_change(db, change_id)
        print_json(change) if as_json else out().print(change_view(change, abs_time=abs_time))
    else:
        changes = read_changes(db)
        if as_json:
            print_json(changes)
        elif not changes:
            click.echo("No changes found.")
        else:
            out().print(changes_table(changes, abs_time=abs_time))


@debug.command("why")
@click.argument("id", callback=change_id)
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
              help="Read the change from this database file instead of asking the daemon.")
@json_option
@state_dir_option
def debug_why(id: str, db: Path | None, as_json: bool, state_dir: Path | None) -> None:
    """Say why each task of change ID that is not Done is not running."""
    change: dict[str, Any]
    if db is not None:
        change = read_change(db, id)
    else:
        with session(state_dir, f"show change {id}") as c:
            change = c.change(id)
    tasks = [{"id": t["id"], "kind": t["kind"], "status": t["status"], "why": t.get("why")}
             for t in change["tasks"] if t["status"] != "Done"]
    if as_json:
        print_json(tasks)
    elif not tasks:
        click.echo(f"Every task of change {id} is Done.")
    else:
        out().print(why_table(tasks))


def _maybe_change_id(ctx: click.Context, param: click.Parameter, value: Any) -> str | None:
    return None if value is None else change_id(ctx, param, value)


@debug.command("timings")
@click.argument("id", required=False, default=None, callback=_maybe_change_id)
@click.option("--ensure", "ensure", metavar="NAME", default=None,
              help="The kept ensure passes in which manager NAME (its class name) ran; 'all' for every pass.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
              help="Read the database file instead of asking the daemon.")
@abs_time_option
@json_option
@state_dir_option
def debug_timings(id: str | None, ensure: str | None, db: Path | None, abs_time: bool, as_json: bool,
                  state_dir: Path | None) -> None:
    """Show how long each run of change ID's tasks took, or (--ensure NAME) the slow ensure passes."""
    if id is None and ensure is None:
        raise click.UsageError("give a change ID, or --ensure NAME")
    if id is not None and ensure is not None:
        raise click.UsageError("give a change ID or --ensure NAME, not both")
    if db is not None:
        result = read_timings(db, id, ensure)
    else:
        with session(state_dir, "show timings") as c:
            result = c.timings(change_id=id, ensure=ensure)
    if as_json:
        print_json(result)
    elif not result:
        click.echo("No timings found." if id is None else f"No task of change {id} has run yet.")
    elif id is not None:
        out().print(timings_table(result, abs_time=abs_time))
    else:
        out().print(ensure_table(result, None if ensure == "all" else ensure, abs_time=abs_time))


@cli.command()
@click.argument("id", callback=change_id)
@click.option("--svg", "svg", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
              help="Render the graph to this SVG file with Graphviz's dot (else print the DOT source).")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
              help="Read the change from this database file instead of asking the daemon.")
@state_dir_option
def graph(id: str, svg: Path | None, db: Path | None, state_dir: Path | None) -> None:
    """Show change ID's tasks as a graph: edges for waits, lanes as clusters, statuses as colours."""
    change: dict[str, Any]
    if db is not None:
        change = read_change(db, id)
    else:
        with session(state_dir, f"show change {id}") as c:
            change = c.change(id)
    source = change_dot(change)
    if svg is None:
        click.echo(source, nl=False)
        return
    dot = shutil.which("dot")
    if dot is None:
        fail("cannot render the graph: Graphviz's 'dot' program is not installed (the graph's source is what "
             f"'overlord graph {id}' prints)")
    try:
        p = subprocess.run([dot, "-Tsvg", "-o", str(svg)], input=source, capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        fail(f"cannot render the graph with {dot}: {e}")
    if p.returncode != 0:
        fail(f"cannot render the graph with {dot}: {' '.join(p.stderr.split()) or f'exit status {p.returncode}'}")
