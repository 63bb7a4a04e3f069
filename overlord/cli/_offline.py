# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a state database file without a daemon, through the engine, and without ever writing to it.

Every read command that takes a database file (``changes DB --json``,
``change ID DB --json``, ``debug state``, ``graph --db``) opens it with
``State.open(path, read_only=True)``, which refuses what the viewer refuses
(a missing file, a FIFO, a directory, a hard-linked file, a database of
another program, an empty alembic_version) in one line, and shows its
changes with the daemon's own serializer (overlord.changeinfo), so that
every view and --json output is the same whether it came from the daemon
or from the file.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._output import CliError, one_line

if TYPE_CHECKING:
    from engine import State

_PREFIX = re.compile(r"^cannot (?:open|read) state database .*?(?: read-only)?: ", re.DOTALL)


def refusal(db: Path, e: BaseException) -> CliError:
    """refusal is the engine's refusal of db as the command line says it: one line, naming the file."""
    text = " ".join(str(e).split())
    reason = _PREFIX.sub("", text, count=1) if text.startswith("cannot ") else text
    if reason.startswith(("it is a SQLite database of another program", "it is not a state database")):
        reason = "it is not a state database"
    elif "permission denied" in reason.lower():
        reason = "permission denied (the daemon keeps it private: try with sudo, or ask the daemon)"
    return CliError(f"cannot read state database {db}: {reason}")


@contextlib.contextmanager
def opened(db: Path) -> Iterator[State]:
    """opened is a read-only State on db, its lock held; the engine's errors become one CliError line."""
    from engine import EngineError, State

    try:
        st = State.open(db, read_only=True)
    except (EngineError, ValueError) as e:
        raise refusal(db, e) from None
    try:
        with st:
            yield st
    except EngineError as e:
        raise refusal(db, e) from None
    finally:
        st.close()


def read_changes(db: Path) -> list[dict[str, Any]]:
    """read_changes returns every change of a database file, with its tasks, oldest first.

    A change with a row edited by hand is left out, with a warning on stderr
    (the daemon leaves it out too).
    """
    from engine import DatabaseCorruptError

    from ..changeinfo import change_info

    infos: list[dict[str, Any]] = []
    damaged: list[str] = []
    with opened(db) as st:
        for chg in st.changes():
            try:
                infos.append(change_info(chg))
            except DatabaseCorruptError as e:
                damaged.append(" ".join(str(e).split()))
    for message in damaged:
        print(f"warning: {one_line(message)}", file=sys.stderr)
    return infos


def read_change(db: Path, change_id: str) -> dict[str, Any]:
    """read_change returns one change of a database file, with its tasks."""
    from ..changeinfo import change_info

    if not change_id.isdigit():
        raise CliError(f"cannot find change with id {change_id!r} in {db}")
    with opened(db) as st:
        chg = st.change(change_id)
        if chg is None:
            raise CliError(f"cannot find change with id {change_id!r} in {db}")
        return change_info(chg, why=True)


def read_timings(db: Path, change_id: str | None, ensure: str | None) -> list[dict[str, Any]]:
    """read_timings returns, from a database file, what GET /v2/debug?aspect=change-timings answers."""
    with opened(db) as st:
        if ensure is not None:
            return [p.to_json() for p in st.ensure_timings(None if ensure == "all" else ensure)]
        assert change_id is not None
        chg = st.change(change_id) if change_id.isdigit() else None
        if chg is None:
            raise CliError(f"cannot find change with id {change_id!r} in {db}")
        return [t.to_json() for t in chg.timings()]
