# SPDX-License-Identifier: GPL-3.0-or-later
"""The state database, whatever its backend: connection options, the schema's revision, Alembic.

The models (engine.models) are the schema of the head revision; Alembic
(the top-level migrations/, shipped as engine/_migrations) upgrades older
databases to it. Each backend (engine.store) decides, before writing
anything, whether a database may be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatabaseError, SchemaVersionError

if TYPE_CHECKING:
    from alembic.config import Config

#: The Alembic revision this code writes; tests check it is the script head.
SCHEMA_HEAD = "0012_hpg5_change_unready_index"
#: What a backend reports for a database at Alembic's base revision.
BASE = "base"
#: The tables of the engine's schema, whatever its revision.
ENGINE_TABLES = frozenset({"changes", "tasks", "task_dependencies", "task_lanes", "task_log", "state_data",
                           "warnings", "sequences"})
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


@dataclass(frozen=True)
class DatabaseOptions:
    """DatabaseOptions are the connection settings of a state database."""

    #: SQLite's synchronous mode: FULL (the default) survives power loss.
    synchronous: str = "FULL"
    #: How long one attempt to take the write lock waits (busy_timeout).
    busy_timeout: float = 5.0
    #: How long, in all, a write keeps retrying before DatabaseBusyError.
    busy_budget: float = 120.0


def migrations_dir() -> Path:
    """migrations_dir returns where the Alembic scripts are, installed or not."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError("internal error: cannot find the engine's Alembic migrations")


def alembic_config(url: str | None = None) -> Config:
    """alembic_config builds the Alembic Config used at run time (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def known_revisions() -> set[str]:
    """known_revisions lists the Alembic revisions this code can upgrade from."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def describe(target: str) -> str:
    """describe is how messages about opening a database begin."""
    return f"cannot open state database {target}"


def newer_schema(target: str, revision: str) -> SchemaVersionError:
    """newer_schema is the error for a database written by a newer version of the program."""
    return SchemaVersionError(
        f"{describe(target)}: its schema revision {revision!r} is not known to this program, "
        f"whose newest revision is {SCHEMA_HEAD!r}; the database was written by a newer version"
    )

