# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord demo: a small snap system, from keys and a store to a refresh that fails and is undone."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine import Change, Task, Tomb
from managers import ManagerError, SystemOverlord
from overlord.samples import AUTHORITY, PUBLISHER, SampleStore, build_store, keys

from ._errors import fail, one_line_errors
from ._group import cli

DEMO_DIR = Path("var") / "demo"
MARKER = ".overlord-demo"
STYLE = {"Done": "green", "Error": "bold red", "Undone": "yellow", "Hold": "magenta"}


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=132)


class Demo:
    """Demo runs the steps of the demo and prints what each did."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.console = _console()

    def say(self, text: str) -> None:
        self.console.print(text)

    def show(self, chg: Change) -> None:
        from rich.table import Table
        from rich.text import Text

        with chg.state:
            status = chg.status.value
            title = Text(f"change {chg.id} ({chg.kind}): {chg.summary} — ")
            title.append(status, STYLE.get(status, ""))
            table = Table(title=title, title_justify="left")
            for col in ("id", "kind", "status", "summary", "last log line"):
                table.add_column(col, overflow="fold")
            for t in chg.tasks():
                s = t.status.value
                table.add_row(t.id, t.kind, Text(s, STYLE.get(s, "")), Text(t.summary), Text((t.log() or [""])[-1]))
            err = chg.err()
        self.console.print(table)
        if err is not None:
            self.console.print(Text("chg.err(): ", "bold") + Text(str(err)))

    def step(self, o: SystemOverlord, make: Callable[[], Change]) -> None:
        """step makes a change (under the lock), waits for it, shows it and runs the snap's command."""
        with o.state:
            chg = make()
        _wait(chg)
        self.show(chg)
        self.run_app(self.base / "root")

    def run_app(self, root: Path) -> None:
        app = root / "snap" / "bin" / "hello"
        out = subprocess.run([str(app)], capture_output=True, text=True, timeout=30)
        self.console.print(f"  $ {app}\n  {out.stdout.strip() or out.stderr.strip()}", markup=False)
        current = root / "snap" / "hello" / "current"
        self.say(f"  {current} -> {current.readlink()}\n")


def _fail_on_purpose(task: Task, tomb: Tomb) -> None:
    raise ManagerError("the demo makes this refresh fail after its services started (think of a service "
                       "that does not come up)")


def _prepare(base: Path) -> None:
    if base.exists():
        if not (base / MARKER).exists() and any(base.iterdir()):
            fail(f"cannot run the demo in {base}: it is not empty and not a demo directory")
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / MARKER).write_text("made by overlord demo; deleted by the next one\n")


@cli.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=DEMO_DIR,
              show_default=True, help="Where the demo writes its keys, store, state and system root.")
@one_line_errors
def demo(directory: Path) -> None:
    """Run the system demo: keys, a signed store, install, refresh, a failed refresh undone."""
    base = directory.absolute()
    _prepare(base)
    engine_log = logging.getLogger("engine")
    level = engine_log.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        engine_log.setLevel(logging.ERROR)  # the failure in step 5 is on purpose: do not warn about it
    try:
        _run(base)
    finally:
        engine_log.setLevel(level)


def _run(base: Path) -> None:
    d = Demo(base)
    root_key, acme_key = keys(base / "keys")
    d.say(f"[bold]1. Keys[/] (test keys, for this demo only) in {base / 'keys'}:\n"
          f"  trusted root {AUTHORITY!r}: {root_key.id}\n  publisher {PUBLISHER!r}: {acme_key.id}\n")
    sample: SampleStore = build_store(base / "store", root_key, acme_key, versions=("1.0",),
                                      build_dir=base / "snaps")
    d.say(f"[bold]2. The store[/] {base / 'store'}: the root signed account {PUBLISHER!r}, its account-key and "
          f"the snap-declaration of \"hello\"; {PUBLISHER} packed hello 1.0 (overlord pack) and signed its "
          "snap-revision (revision 1).\n")
    o = SystemOverlord(base / "state", base / "root", store=base / "store",
                       trusted_key=base / "keys" / "root.pub.pem")
    o.task_runner.add_handler("demo-fail", _fail_on_purpose)
    o.loop()
    try:
        d.say(f"[bold]3. Install hello[/] into the system root {base / 'root'}:")
        d.step(o, lambda: o.snap_manager.install("hello"))
        sample.publish("2.0")
        d.say("[bold]4. acme publishes hello 2.0[/] (revision 2); [bold]refresh hello[/]:")
        d.step(o, lambda: o.snap_manager.refresh("hello"))
        sample.publish("3.0")
        d.say("[bold]5. acme publishes hello 3.0[/] (revision 3); [bold]refresh hello[/] again, with a task "
              "added that fails after start-snap-services: every task done is undone, back to revision 2:")
        d.step(o, lambda: _inject_failure(o.snap_manager.refresh("hello")))
        with o.state:
            snap = o.snap_manager.info("hello")
            d.say(f"  o.snap_manager.info('hello'): revision {snap.current}, active {snap.active}, "
                  f"revisions {snap.revisions}, publisher {snap.info.publisher_id!r}\n")
    finally:
        o.stop()
    db = base / "state" / "state.db"
    _show_changes(d, db)
    d.say(f"Look for yourself: sqlite3 {db} 'SELECT id, kind, status, summary FROM changes'\n"
          f"                   sqlite3 {db} 'SELECT type, primary_key, authority_id FROM assertions'\n"
          f"                   find {base / 'root'}")


def _wait(chg: Change) -> None:
    if not chg.wait_ready(120):
        fail("cannot finish the demo: a change did not finish within 2 minutes")


def _inject_failure(chg: Change) -> Change:
    """_inject_failure adds a failing task after start-snap-services, in the same lane."""
    st = chg.state
    tasks = chg.tasks()
    start = next(t for t in tasks if t.kind == "start-snap-services")
    fail_task = st.new_task("demo-fail", "Fail on purpose (the demo's injected failure)")
    fail_task.wait_for(start)
    for lane in start.lanes():
        fail_task.join_lane(lane)
    for t in tasks:
        if start in t.wait_tasks() and t != fail_task:
            t.wait_for(fail_task)
    chg.add_task(fail_task)
    return chg


def _show_changes(d: Demo, db: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, kind, status, summary, (SELECT count(*) FROM tasks WHERE change_id = c.id) "
                           "FROM changes c ORDER BY id").fetchall()
    finally:
        con.close()
    table = Table(title="6. The changes, read from the database", title_justify="left")
    for col in ("id", "kind", "status", "summary", "tasks"):
        table.add_column(col)
    for cid, kind, status, summary, n in rows:
        table.add_row(str(cid), kind, Text(status, STYLE.get(status, "")), Text(summary), str(n))
    d.console.print(table)
