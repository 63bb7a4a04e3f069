# SPDX-License-Identifier: GPL-3.0-or-later
"""Alembic environment of the engine's state database.

Run from the checkout (alembic.ini) or from engine.db at run time, which
hands its own connection over in config.attributes["connection"].
The schema compared is engine.metadata with the managers' tables declared
on it (see docs/managers.md, "Tables of your own").
"""

from __future__ import annotations

import importlib
import warnings
from logging.config import fileConfig
from pathlib import Path

from alembic import context

from engine.db import DatabaseOptions
from engine.models import made_on
from engine.store import Location, locate
from engine.store.sqlite import make_engine
from engine.tables import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The modules that declare managers' own tables on engine.metadata (engine.tables), named by the
# manager_tables option of alembic.ini: imported so that autogenerate and `alembic check` compare the whole
# schema. (An upgrade at run time needs no metadata: engine.db's configuration names none.)
for _module in (config.get_main_option("manager_tables") or "").split():
    importlib.import_module(_module)

#: What autogenerate and `alembic check` compare the database with: engine.metadata, the engine's tables
#: and those the managers imported so far declared on it.
target_metadata = metadata


# The unready tasks' index by change (ix_tasks_change_unready) is made on PostgreSQL only, and its key is an
# expression, which SQLAlchemy cannot reflect on SQLite: include_object leaves it out there, so the warning that
# autogenerate skips it says nothing.
warnings.filterwarnings("ignore", message="autogenerate skipping metadata-specified expression-based index "
                        "'ix_tasks_change_unready'", category=UserWarning)


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """include_object leaves out of the comparison an index of the models made on another dialect (ddl_if)."""
    return reflected or type_ != "index" or made_on(obj, context.get_context().dialect.name)


def _where() -> Location:
    """_where is the database to migrate: -x db=PATH (a file name, never parsed as a URL) or sqlalchemy.url."""
    db = context.get_x_argument(as_dictionary=True).get("db")
    if db:
        return locate(db)
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("no database: set sqlalchemy.url or pass -x db=PATH")
    return locate(url=url)


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations without a database."""
    where = _where()
    context.configure(url=where.url or "sqlite://", target_metadata=target_metadata, render_as_batch=True,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: object) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True, transactional_ddl=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    where = _where()
    if where.file is not None:
        Path(where.file).parent.mkdir(parents=True, exist_ok=True)
    if where.kind == "postgresql":
        from engine.store.postgresql_open import make_engine as make_pg_engine

        engine = make_pg_engine(where)
    else:
        engine = make_engine(where, DatabaseOptions())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
