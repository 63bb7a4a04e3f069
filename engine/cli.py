# SPDX-License-Identifier: GPL-3.0-or-later
"""The overlord command: a demo, and views of a state database."""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text

from .errors import DatabaseCorruptError, EngineError
from .overlord import STATE_FILE, Overlord
from .state import State
from .status import Status
from .task import Task, TaskSet
from .tomb import Tomb

DEMO_ROOT = Path("state")


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=132)
    return console


def _status_style(status: str) -> str:
    return {
        "Done": "green", "Error": "bold red", "Undone": "yellow", "Hold": "magenta",
        "Doing": "cyan", "Undoing": "cyan", "Wait": "blue",
    }.get(status, "")


def _status(status: Status | str) -> Text:
    # Text, never markup: stored text (a summary of "[/]", say) is shown as it is.
    return Text(str(status), style=_status_style(str(status)))


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


def _open(db: Path) -> State:
    # The viewer never writes: no creation, no migration, no checkpoint,
    # and no writer lock, so it works beside a running overlord.
    return State.open(db, read_only=True)


def show_change(db: Path, change_id: int) -> int:
    """show_change prints a change and its tasks, read back from the database file."""
    from rich.table import Table

    st = _open(db)
    try:
        with st:
            chg = st.change(str(change_id))
            if chg is None:
                raise EngineError(f"cannot show change {change_id}: there is no such change in {db}")
            title = Text.assemble(f"change {chg.id} (", chg.kind, "): ", chg.summary, " — ", _status(chg.status))
            table = Table(title=title, title_justify="left")
            for col in ("id", "kind", "summary", "status", "lanes", "waits for", "run s", "last log line"):
                table.add_column(col, overflow="fold")
            for t in chg.tasks():
                log = t.log()
                last = log[-1].split(" ", 1)[-1] if log else ""  # without its time
                lanes = [lane for lane in t.lanes() if lane != 0]  # lane 0: in no lane
                table.add_row(t.id, Text(t.kind), Text(t.summary), _status(t.status),
                              ",".join(map(str, lanes)) or "-",
                              ",".join(w.id for w in t.wait_tasks()) or "-",
                              f"{(t.doing_time + t.undoing_time).total_seconds():.2f}", Text(last))
            footer = f"  spawned {_when(chg.spawn_time)}, ready {_when(chg.ready_time)}\n"
    finally:
        st.close()
    console = _console()
    console.print(table)
    console.print(Text(footer))
    return 0


def _build_change(st: State, kind: str, summary: str, fail: str | None) -> str:
    """_build_change makes the demo's graph: two lanes of three tasks, then two joint tasks."""
    chg = st.new_change(kind, summary)
    lanes = []
    for name in ("web", "db"):
        lane = st.new_lane()
        steps = [st.new_task(step, f"{verb} {name}") for step, verb in
                 (("fetch", "Fetch"), ("verify", "Verify"), ("install", "Install"))]
        for prev, nxt in itertools.pairwise(steps):
            nxt.wait_for(prev)
        ts = TaskSet(*steps)
        ts.join_lane(lane)
        ts.mark_edge(steps[-1], "last")
        chg.add_all(ts)
        lanes.append((lane, ts))
    configure = st.new_task("configure", "Configure web and db")
    start = st.new_task("start", "Start services")
    for lane, ts in lanes:
        configure.wait_for(ts.edge("last"))
        configure.join_lane(lane)  # configure belongs to both lanes
    start.wait_for(configure)
    chg.add_task(configure)
    chg.add_task(start)
    if fail:
        for t in chg.tasks():
            if t.kind == fail:
                t.set("fail", True)
    chg.check_task_dependencies()
    return chg.id


def _work(task: Task, tomb: Tomb) -> None:
    with task.state:
        fail = task.get("fail", False)
        kind = task.kind
    if tomb.wait_dying(random.uniform(0.05, 0.25)):
        return
    if fail:
        raise RuntimeError(f"{kind} step failed: checksum mismatch")
    with task.state:
        task.set("result", "ok")
        task.logf("%s finished", kind)


def _unwork(task: Task, tomb: Tomb) -> None:
    time.sleep(random.uniform(0.02, 0.1))
    with task.state:
        task.clear("result")
        task.logf("%s undone", task.kind)


def demo(root: Path) -> int:
    """demo runs two changes through an overlord and prints them from the database."""
    console = _console()
    if root.exists() and not root.is_dir():
        raise EngineError(f"cannot run the demo in {root}: it is not a directory")
    db = root / STATE_FILE
    o = Overlord(root=root)
    console.print(Text.assemble(("state database: ", "bold"), str(db.resolve())))
    runner = o.task_runner
    for kind in ("fetch", "verify", "install", "configure"):
        runner.add_handler(kind, _work, _unwork)
    runner.add_handler("start", _work)
    try:
        with o.state:
            ok = _build_change(o.state, "deploy", "Deploy web and db", fail=None)
        o.loop()
        console.print(f"running change {ok} through the overlord…")
        with o.state:
            chg = o.state.change(ok)
            assert chg is not None
        if not chg.wait_ready(timeout=60):
            console.print("[red]the change did not finish within 60 s[/]")
            return 1
        show_change(db, int(ok))
        with o.state:
            bad = _build_change(o.state, "deploy", "Deploy web and db, with a failing configure step",
                                fail="configure")
            o.state.ensure_before(0)
            chg = o.state.change(bad)
            assert chg is not None
        console.print(f"running change {bad}, whose configure task fails: its finished tasks are undone…")
        chg.wait_ready(timeout=60)
        with o.state:
            err = chg.err()
        show_change(db, int(bad))
        if err is not None:
            console.print(Text.assemble(("chg.err(): ", "bold"), str(err)))
    finally:
        o.stop()  # checkpoints the write-ahead log: state.db alone holds everything
        o.state.close()
    console.print(Text(f"\nInspect it yourself: sqlite3 {db} 'SELECT id, kind, status FROM changes'"))
    return 0


def list_changes(db: Path) -> int:
    """list_changes prints every change of a database."""
    from rich.table import Table

    st = _open(db)
    try:
        with st:
            table = Table(title=Text(str(db)), title_justify="left")
            for col in ("id", "kind", "status", "tasks", "spawned", "ready", "summary"):
                table.add_column(col)
            damaged = []
            for chg in st.changes():
                try:
                    row = (chg.id, Text(chg.kind), _status(chg.status), str(len(chg.tasks())),
                           _when(chg.spawn_time), _when(chg.ready_time), Text(chg.summary))
                except DatabaseCorruptError as e:  # a row edited by hand: say so, show the others
                    damaged.append(" ".join(str(e).split()))
                    continue
                table.add_row(*row)
    finally:
        st.close()
    _console().print(table)
    for message in damaged:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """main is the entry point of the overlord command."""
    parser = argparse.ArgumentParser(prog="overlord", description="change/task workflow engine on SQLite")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the engine's debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run two changes through an overlord and show them")
    p.add_argument("--root", type=Path, default=DEMO_ROOT, help="state directory (default: ./state)")
    p = sub.add_parser("changes", help="list the changes of a state database")
    p.add_argument("db", type=Path, nargs="?", default=DEMO_ROOT / STATE_FILE)
    p = sub.add_parser("change", help="show one change and its tasks")
    p.add_argument("id", type=int)
    p.add_argument("db", type=Path, nargs="?", default=DEMO_ROOT / STATE_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return demo(args.root)
        if args.command == "changes":
            return list_changes(args.db)
        return show_change(args.db, args.id)
    except (EngineError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
