# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord changes DB` and `overlord change ID DB`: a state database file shown as tables, read through the engine.

The file is opened with ``State.open(path, read_only=True)``: no creation,
no migration, no checkpoint and no writer lock, so it works beside a
running overlord, for a user who may only read the file. What the engine
refuses is one line, ``error: ...``, and the exit status 1.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import DatabaseCorruptError, EngineError, State, Status

from ._output import one_line, plain

_STYLES = {"Done": "green", "Error": "bold red", "Undone": "yellow", "Hold": "magenta", "Doing": "cyan",
           "Undoing": "cyan", "Wait": "blue"}


def _console() -> Console:
    console = Console(highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, emoji=False, width=132)
    return console


def _status(status: Status | str) -> Text:
    # Text, never markup: stored text (a summary of "[/]", say) is shown as it is.
    return plain(status, _STYLES.get(str(status), ""))


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


def _refused(e: BaseException) -> int:
    print(f"error: {one_line(' '.join(str(e).split()))}", file=sys.stderr)
    return 1


def list_changes(db: Path) -> int:
    """list_changes prints every change of a database file; it returns the exit status."""
    try:
        st = State.open(db, read_only=True)
    except (EngineError, OSError) as e:
        return _refused(e)
    damaged = []
    try:
        with st:
            table = Table(title=plain(db), title_justify="left")
            for col in ("id", "kind", "status", "tasks", "spawned", "ready", "summary"):
                table.add_column(col)
            for chg in st.changes():
                try:
                    row = (plain(chg.id), plain(chg.kind), _status(chg.status), str(len(chg.tasks())),
                           _when(chg.spawn_time), _when(chg.ready_time), plain(chg.summary))
                except DatabaseCorruptError as e:  # a row edited by hand: say so, show the others
                    damaged.append(" ".join(str(e).split()))
                    continue
                table.add_row(*row)
    except (EngineError, OSError) as e:
        return _refused(e)
    finally:
        st.close()
    _console().print(table)
    for message in damaged:
        print(f"warning: {one_line(message)}", file=sys.stderr)
    return 0


def show_change(db: Path, change_id: str) -> int:
    """show_change prints a change of a database file and its tasks; it returns the exit status."""
    try:
        st = State.open(db, read_only=True)
    except (EngineError, OSError) as e:
        return _refused(e)
    try:
        with st:
            chg = st.change(change_id)
            if chg is None:
                raise EngineError(f"cannot show change {change_id}: there is no such change in {db}")
            title = Text.assemble(plain(f"change {chg.id} ("), plain(chg.kind), "): ", plain(chg.summary), " — ",
                                  _status(chg.status))
            table = Table(title=title, title_justify="left")
            for col in ("id", "kind", "summary", "status", "lanes", "waits for", "run s", "last log line"):
                table.add_column(col, overflow="fold")
            for t in chg.tasks():
                log = t.log()
                last = log[-1].split(" ", 1)[-1] if log else ""  # without its time
                lanes = [lane for lane in t.lanes() if lane != 0]  # lane 0: in no lane
                table.add_row(plain(t.id), plain(t.kind), plain(t.summary), _status(t.status),
                              ",".join(map(str, lanes)) or "-",
                              ",".join(w.id for w in t.wait_tasks()) or "-",
                              f"{(t.doing_time + t.undoing_time).total_seconds():.2f}", plain(last))
            footer = f"  spawned {_when(chg.spawn_time)}, ready {_when(chg.ready_time)}\n"
    except (EngineError, OSError) as e:
        return _refused(e)
    finally:
        st.close()
    console = _console()
    console.print(table)
    console.print(Text(footer))
    return 0
