# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord db current|history|upgrade|check`: the state database's schema, through the engine's Alembic set-up.

The migrations are the installed package's (engine.db.migrations_dir);
current, history and check only read, through the engine
(engine.store.inspect_database, which refuses what a read-only State
refuses); upgrade takes the database the way a daemon does, so it refuses
a database a running daemon holds, and, like every writer's open, it
recreates a missing index of the schema.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from .. import paths
from ._client import json_option, state_dir_option
from ._group import cli
from ._offline import refusal
from ._output import CliError, fail, print_json


def _db_option(fn: Any) -> Any:
    return click.option("--db", type=click.Path(path_type=Path, dir_okay=False, readable=False), default=None,
                        help="The state database (default: state.db of the state directory).")(fn)


@cli.group()
def db() -> None:
    """The state database's schema: which revision it has, and upgrading it (Alembic)."""


def _script() -> Any:
    from alembic.script import ScriptDirectory

    from engine.db import alembic_config

    return ScriptDirectory.from_config(alembic_config())


def _declare_manager_tables() -> None:
    """_declare_manager_tables imports the snap system's tables (engine.tables), so that the schema compared is whole.

    Nothing when the managers are not installed (an overlord of another system, without the [system] extra).
    """
    with contextlib.suppress(ImportError):
        import managers.assertstate.book  # noqa: F401  (declares the assertions table on engine.metadata)


def _inspect(path: Path, *, full: bool = False) -> Any:
    """_inspect is the engine's report on the database (engine.store.inspect_database), or one CliError line."""
    from engine import EngineError
    from engine.store import inspect_database

    _declare_manager_tables()
    try:
        return inspect_database(path, full=full)
    except (EngineError, ValueError) as e:
        raise refusal(path, e) from None


def _current(path: Path) -> str | None:
    """_current reads the database's Alembic revision without writing (None: no revision recorded)."""
    from engine.db import BASE

    revision = _inspect(path).revision
    if revision is None:
        raise CliError(f"cannot read state database {path}: it is not a state database")
    return None if revision == BASE else str(revision)


@db.command()
@_db_option
@json_option
@state_dir_option
def current(db: Path | None, as_json: bool, state_dir: Path | None) -> None:
    """Show the schema revision of the database, and whether it is the newest this program knows."""
    path = db or paths.db_path(state_dir)
    revision = _current(path)
    head = _script().get_current_head()
    if as_json:
        print_json({"database": str(path), "revision": revision, "head": head, "is-head": revision == head})
    elif revision == head:
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision or 'base'} (head is {head}: 'overlord db upgrade' upgrades it)")


@db.command()
@_db_option
@json_option
@state_dir_option
def history(db: Path | None, as_json: bool, state_dir: Path | None) -> None:
    """List the schema revisions this program knows, newest first, marking the database's."""
    path = db or paths.db_path(state_dir)
    revision = _current(path) if path.exists() else None
    revisions = [{"revision": r.revision, "down-revision": r.down_revision, "head": r.is_head,
                  "current": r.revision == revision, "message": (r.doc or "").strip()}
                 for r in _script().walk_revisions()]
    if as_json:
        print_json(revisions)
        return
    for r in revisions:
        marks = [m for m, on in (("head", r["head"]), ("current", r["current"])) if on]
        click.echo(f"{r['down-revision'] or '<base>'} -> {r['revision']}"
                   f"{' (' + ', '.join(marks) + ')' if marks else ''}: {r['message']}")


@db.command()
@_db_option
@state_dir_option
def upgrade(db: Path | None, state_dir: Path | None) -> None:
    """Upgrade the database to the newest schema, recreating a missing index (refused while a daemon runs on it)."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    from engine import DatabaseInUseError, EngineError, Overlord

    path = db or paths.db_path(state_dir)
    before = _current(path)
    missing = _inspect(path).missing
    try:
        o = Overlord(path=path)  # takes the database as a daemon would: refused while one holds it
    except DatabaseInUseError as e:
        fail(f"cannot upgrade {path}: a running daemon holds it ({e})")
    except EngineError as e:
        fail(str(e))
    except (SQLAlchemyError, sqlite3.Error) as e:  # a migration that failed; it was rolled back
        fail(f"cannot upgrade {path}: {' '.join(str(getattr(e, 'orig', None) or e).split())}")
    o.stop()
    o.state.close()
    after = _current(path)
    left = _inspect(path).missing
    if before == after:
        click.echo(f"{path} is already at the newest schema revision, {after}.")
    else:
        click.echo(f"Upgraded {path} from schema revision {before or 'base'} to {after}.")
    repaired = [f"{kind} {name}" for kind, names, now in (("index", missing.indexes, left.indexes),
                                                          ("view", missing.views, left.views))
                for name in names if name not in now]
    if repaired:
        click.echo(f"Recreated in {path}: {', '.join(repaired)}.")
    if left:
        fail(f"{path} differs from the schema the engine needs: {left.describe()}")


@db.command()
@_db_option
@json_option
@state_dir_option
def check(db: Path | None, as_json: bool, state_dir: Path | None) -> None:
    """Check the database: SQLite's integrity check, the schema revision, and the schema against the models."""
    path = db or paths.db_path(state_dir)
    found = _inspect(path, full=True)
    head = _script().get_current_head()
    integrity_ok = found.integrity == ["ok"]
    revision = found.revision if integrity_ok else None
    if integrity_ok and revision is None:
        raise CliError(f"cannot read state database {path}: it is not a state database")
    from engine.db import BASE

    revision = None if revision == BASE else revision
    missing = found.missing.phrases()
    report = {"database": str(path), "integrity": found.integrity, "revision": revision, "head": head,
              "schema-differences": found.schema_differences, "schema-objects-missing": missing,
              "ok": found.ok}
    if as_json:
        print_json(report)
    else:
        click.echo(f"integrity: {'ok' if integrity_ok else '; '.join(found.integrity)}")
        if integrity_ok:
            click.echo(f"schema revision: {revision} ({'head' if revision == head else 'head is ' + str(head)})")
        if revision == head:
            click.echo("schema matches the models" if not found.schema_differences else
                       "schema differs from the models: " + "; ".join(found.schema_differences))
        if found.missing:
            click.echo(f"schema objects: {found.missing.describe()}")
    if not report["ok"]:
        raise SystemExit(1)
