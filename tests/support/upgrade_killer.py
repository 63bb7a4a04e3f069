# SPDX-License-Identifier: GPL-3.0-or-later
"""A child that SIGKILLs itself at each statement of a database's upgrade, one copy per kill point.

``python -m tests.support.upgrade_killer SOURCE WORKDIR`` (run by tests/reliability/test_crash.py):

1. it opens a copy of SOURCE with ``State.open`` (the normal path, which
   upgrades it to head) and records every SQL statement and commit the
   engine's SQLAlchemy connections run during the open;
2. then, for each kill point (before each of those statements, before each
   commit, and once the open returned), a grandchild opens a fresh copy
   ``WORKDIR/kill-<n>.db`` and is SIGKILLed at that point.

The grandchildren are forked from this process once it imported the engine
and ran the counting open itself, while it runs a single thread, so each kill
costs a few milliseconds. One
JSON line per kill point goes to stdout: ``{"db": ..., "point": ...,
"signal": 9}``. The caller opens each copy again and checks it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from engine import State


def _open_with(hook: Callable[[str], None], db: Path) -> None:
    """_open_with opens db through State.open, calling hook before each statement and commit."""

    def before_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        hook(" ".join(statement.split()))

    def before_commit(_conn: Any) -> None:
        hook("COMMIT")

    event.listen(Engine, "before_cursor_execute", before_statement)
    event.listen(Engine, "commit", before_commit)
    try:
        st = State.open(db)
    finally:
        event.remove(Engine, "before_cursor_execute", before_statement)
        event.remove(Engine, "commit", before_commit)
    hook("OPENED")
    st.close()


class _KillAt:
    """_KillAt SIGKILLs the process at the n-th point it is called at (0 is the first)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def __call__(self, _point: str) -> None:
        if self.seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)
        self.seen += 1


def _in_child(fn: Callable[[], None]) -> int:
    """_in_child runs fn in a forked child and returns its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException as e:
            print(f"upgrade_killer: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def main(argv: list[str]) -> int:
    """main records the statements of the upgrade of SOURCE, then kills a copy at each (see the module docstring)."""
    source, work = Path(argv[0]), Path(argv[1])
    record = work / "statements.json"

    def count() -> None:
        seen: list[str] = []
        db = work / "count.db"
        shutil.copyfile(source, db)
        _open_with(seen.append, db)
        record.write_text(json.dumps(seen))

    # The counting open runs here, not in a child: what it loads once (Alembic's scripts, SQLAlchemy's
    # compiled statements) each child then has, so a kill point costs its own statements only. A child
    # that ran other statements than these would outlive its kill point: the caller checks every point
    # killed its child.
    try:
        count()
    except Exception as e:
        print(f"upgrade_killer: the counting open failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if threading.active_count() != 1:
        print(f"upgrade_killer: {threading.active_count()} threads after the counting open: cannot fork safely",
              file=sys.stderr)
        return 1
    points: list[str] = json.loads(record.read_text())
    for n, point in enumerate(points):
        db = work / f"kill-{n}.db"
        shutil.copyfile(source, db)

        status = _in_child(functools.partial(_open_with, _KillAt(n), db))
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps({"db": str(db), "point": f"{n}: {point}", "signal": os.WTERMSIG(status) if killed else None,
                          "status": status}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
