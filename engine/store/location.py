# SPDX-License-Identifier: GPL-3.0-or-later
"""Location: where a state database is, parsed once from the path or URL the caller gave.

A path is a file name and nothing else: ``st?ate.db``, ``a%20b.db``,
``file:x.db`` or a name with a newline or bytes that are not UTF-8 name
exactly that file, and never go through a URL parser. Only an argument given
as a URL (``url=``) is parsed, here, once. Every layer below (the checks, the
writer's lock, SQLite's connection, the messages, the viewer) takes its
answer from the one Location: the file it locks is the file it opens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from ..errors import DatabaseError

Kind = Literal["sqlite", "memory", "postgresql"]

#: The parameters of a SQLite URL (sqlite:///file:NAME?...&uri=true) that name what is opened.
_MEMORY_PARAMS = {"mode": "memory"}


@dataclass(frozen=True)
class Location:
    """Location is one state database: a SQLite file, a private in-memory database, or a PostgreSQL URL."""

    kind: Kind
    #: The file as the caller named it (a SQLite file only), decoded with the file system's encoding.
    path: str | None = None
    #: The file's absolute name, fixed when the location was parsed (a later chdir changes nothing).
    file: str | None = None
    #: The URL to connect with (PostgreSQL only; it may hold a password).
    url: str | None = None
    #: What State.path says: the path as given, ":memory:", or the URL without its password.
    shown: str = ":memory:"

    @property
    def label(self) -> str:
        """label is how messages name the database, on one printable line."""
        return self.shown if self.shown.isprintable() else repr(self.shown)[1:-1]

    def uri(self, *, read_only: bool = False, immutable: bool = False) -> str:
        """uri is the SQLite URI filename of the file, every byte of its name percent-quoted.

        SQLite decodes %XX escapes in a URI filename, and nothing else of
        the name is read as a parameter, so any name (``?``, ``#``, ``%``,
        a newline, bytes that are not UTF-8) opens exactly that file.
        """
        assert self.file is not None
        params = "?mode=ro" + ("&immutable=1" if immutable else "") if read_only else ""
        # file:// and an empty authority: a name beginning with // is not read as a host.
        return "file://" + quote(os.fsencode(self.file), safe="/") + params

    def beside(self, suffix: str) -> Path:
        """beside is the file SQLite keeps next to the database (suffix "-wal" or "-shm").

        SQLite names them after the database's real path (it follows symlinks).
        """
        assert self.file is not None
        return Path(os.path.realpath(self.file) + suffix)


MEMORY = Location("memory")


def locate(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
           url: str | None = None) -> Location:
    """locate parses what State.open was given into a Location (path and url None: in memory)."""
    if path is not None and url is not None:
        raise ValueError("cannot open state: give path or url, not both")
    if path is not None:
        return _file(os.fsdecode(path))
    if url is None:
        return MEMORY
    return _parse_url(url)


def _file(name: str) -> Location:
    if not name:
        raise DatabaseError("cannot open state database: the path is empty")
    if "\0" in name:
        raise DatabaseError(f"cannot open state database {name!r}: a file name cannot hold a NUL byte")
    return Location("sqlite", path=name, file=os.path.abspath(name), shown=name)


def _parse_url(url: str) -> Location:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        sa_url = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(f"cannot open state database {url!r}: {e}") from None
    backend, driver = sa_url.get_backend_name(), sa_url.get_driver_name()
    shown = sa_url.render_as_string(hide_password=True)
    if backend == "postgresql":
        if driver not in ("psycopg", ""):
            raise DatabaseError(f"cannot open state database {shown}: use the psycopg driver "
                                "(postgresql+psycopg://...)")
        return Location("postgresql", url=sa_url.set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False), shown=shown)
    if backend != "sqlite":
        raise DatabaseError(f"cannot open state database {shown}: only SQLite and PostgreSQL "
                            "(postgresql+psycopg://) are supported")
    if driver not in ("pysqlite", ""):
        raise DatabaseError(f"cannot open state database {shown}: use the pysqlite driver (sqlite:///path)")
    database = sa_url.database
    query = dict(sa_url.query)
    uri = str(query.pop("uri", "false")).lower() in ("true", "1")
    if uri and database and database.startswith("file:"):
        # A SQLite URI filename: its own parameters are in the URL's query.
        name = unquote(urlsplit(database).path)
        if query == _MEMORY_PARAMS or name in ("", ":memory:"):
            return MEMORY
        if query:
            raise DatabaseError(f"cannot open state database {shown}: the SQLite URI parameters "
                                f"{', '.join(sorted(query))} are not supported (open a read-only State with "
                                "read_only=True)")
        return _file(name)
    if query:
        raise DatabaseError(f"cannot open state database {shown}: unknown URL parameters "
                            f"{', '.join(sorted(query))}")
    if not database or database == ":memory:":
        return MEMORY
    return _file(database)
