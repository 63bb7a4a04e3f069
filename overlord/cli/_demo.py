# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's steps (`overlord demo`, cmd_demo.py): a small snap system seeded, a snap installed, an interface
connected, refreshes, connections, a push to a channel, an auto-refresh, a repair. Imported only when the demo
runs: it loads the engine and the managers."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import Change, Task, Tomb
from managers import ManagerError, SystemOverlord
from managers.ifacestate import Connections
from overlord.samples import AUTHORITY, PUBLISHER, SEED, TEST_KEYS, SampleStore, build_store, sample_keys

from ._errors import fail

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
            for col in ("id", "lane", "kind", "status", "summary", "last log line"):
                table.add_column(col, overflow="fold")
            for t in chg.tasks():
                s = t.status.value
                lanes = ",".join(str(n) for n in t.lanes() if n) or "-"
                table.add_row(t.id, lanes, t.kind, Text(s, STYLE.get(s, "")), Text(t.summary),
                              Text((t.log() or [""])[-1]))
            err = chg.err()
        self.console.print(table)
        if err is not None:
            self.console.print(Text("chg.err(): ", "bold") + Text(str(err)))

    def step(self, o: SystemOverlord, make: Callable[[], Change], app: str | None = "hello") -> None:
        """step makes a change (under the lock), waits for it, shows it and runs a snap's command."""
        with o.state:
            chg = make()
        _wait(chg)
        self.show(chg)
        if app is not None:
            self.run_app(self.base / "root", app)
        else:
            self.say("")

    def run_app(self, root: Path, name: str) -> None:
        app = root / "snap" / "bin" / name
        out = subprocess.run([str(app)], capture_output=True, text=True, timeout=30)
        self.console.print(f"  $ {app}\n  {out.stdout.strip() or out.stderr.strip()}", markup=False)
        current = root / "snap" / name / "current"
        self.say(f"  {current} -> {current.readlink()}\n")


def _fail_on_purpose(task: Task, tomb: Tomb) -> None:
    raise ManagerError("the demo makes this refresh fail after its services started (think of a service "
                       "that does not come up)")


def prepare(base: Path) -> None:
    if base.exists():
        if not (base / MARKER).exists() and any(base.iterdir()):
            fail(f"cannot run the demo in {base}: it is not empty and not a demo directory")
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / MARKER).write_text("made by overlord demo; deleted by the next one\n")


def run(base: Path) -> None:
    d = Demo(base)
    root_key, acme_key = sample_keys()
    d.say(f"[bold]1. Keys[/]: the published test keys of {TEST_KEYS} (for tests and demos only):\n"
          f"  trusted root {AUTHORITY!r}: {root_key.id}\n  publisher {PUBLISHER!r}: {acme_key.id}\n")
    sample: SampleStore = build_store(base / "store", root_key, acme_key, versions=("1.0",),
                                      build_dir=base / "snaps")
    d.say(f"[bold]2. The store[/] {base / 'store'}: the root signed account {PUBLISHER!r}, its account-key and "
          f"the snap-declaration of \"hello\"; {PUBLISHER} packed hello 1.0 (overlord pack) and signed its "
          "snap-revision (revision 1).\n")
    o = SystemOverlord(base / "state", base / "root", store=base / "store", trusted_key=TEST_KEYS / "root.pub.pem",
                       stop_services=True)
    o.task_runner.add_handler("demo-fail", _fail_on_purpose)
    o.loop()
    try:
        d.say(f"[bold]3. Seed the system[/] from {SEED} (reader, then library in seed.yaml): one change, a lane "
              "per snap, the content provider library first, auto-connections made:")
        d.step(o, lambda: o.first_boot.seed(SEED), app="reader")
        d.say("[bold]4. Install hello[/] from the store (its network plug connects by itself):")
        d.step(o, lambda: o.snap_manager.install("hello"))
        _show_services(d, o, "1")
        d.say("  [bold]overlord set hello greeting=Bonjour[/]: a configure-snap change; hello's configure hook "
              "reads the option (overlord ctl get), writes it where the greeter reads it and restarts the "
              "greeter once it is done (overlord ctl restart):")
        d.step(o, lambda: o.config_manager.configure("hello", {"greeting": "Bonjour"}), app=None)
        _show_services(d, o, "1", expect="Bonjour from the greeter of hello 1.0 (revision 1)",
                       after="restarted, it says the greeting set")
        d.say("[bold]5. Connect reader:logs[/] to the system's system-files slot (never connected by itself):")
        d.step(o, lambda: o.interface_manager.connect("reader", "logs"), app=None)
        d.console.print(_profile(base / "root" / "var" / "lib" / "profiles" / "reader"))
        sample.publish("2.0")
        d.say("[bold]6. acme publishes hello 2.0[/] (revision 2); [bold]refresh hello[/] (its connections stay):")
        d.step(o, lambda: o.snap_manager.refresh("hello"))
        sample.publish("3.0")
        d.say("[bold]7. acme publishes hello 3.0[/] (revision 3); [bold]refresh hello[/] again, with a task "
              "added that fails after start-snap-services: every task done is undone, back to revision 2:")
        d.step(o, lambda: _inject_failure(o.snap_manager.refresh("hello")))
        _show_services(d, o, "2", after="the greeter of revision 3 was stopped, the one of revision 2 runs again")
        with o.state:
            snap = o.snap_manager.info("hello")
            d.say(f"  o.snap_manager.info('hello'): revision {snap.current}, active {snap.active}, "
                  f"revisions {snap.revisions}, publisher {snap.info.publisher_id!r}\n")
            conns = o.interface_manager.connections()
        _show_connections(d, conns)
        _channels_auto_refresh_repair(d, o, sample, acme_key)
    finally:
        o.stop()
    db = base / "state" / "state.db"
    _show_changes(d, db)
    d.say(f"Look for yourself: sqlite3 {db} 'SELECT id, kind, status, summary FROM changes'\n"
          f"                   sqlite3 {db} \"SELECT value FROM state_data WHERE key = 'conns'\"\n"
          f"                   find {base / 'root'}")


def _channels_auto_refresh_repair(d: Demo, o: SystemOverlord, sample: SampleStore, acme_key: Any) -> None:
    """_channels_auto_refresh_repair: a push to beta, a switch, an auto-refresh on a short timer, a repair."""
    from datetime import UTC, datetime, timedelta

    from managers.snap import pack
    from overlord.samples import SNAPS

    src = d.base / "src" / "hello-4.0"
    shutil.copytree(SNAPS / "hello-3.0", src)
    for rel, old, new in (("meta/snap.yaml", 'version: "3.0"', 'version: "4.0"'), ("bin/hello", "3.0", "4.0")):
        (src / rel).write_text((src / rel).read_text().replace(old, new))
    ss = sample.snap_store.push(pack(src, d.base / "snaps"), key=acme_key, channels=["beta"])
    d.say(f"[bold]9. acme pushes hello 4.0 to the beta channel[/] (overlord store push --channel beta): revision "
          f"{ss.revision}, signed by acme's key; channels now {sample.snap_store.channels('hello')}. "
          "[bold]switch hello --channel beta[/]:")
    d.step(o, lambda: o.snap_manager.switch("hello", "beta"), app=None)
    now = datetime.now(UTC)
    timer = f"{now - timedelta(minutes=1):%H:%M}-{now + timedelta(minutes=10):%H:%M}"
    d.say(f"[bold]10. Auto-refresh[/]: the system setting refresh.timer={timer} (a window open now; the last "
          "refresh was yesterday). The snap manager's ensure sees it due and starts an auto-refresh change; its "
          "check-refresh task finds hello 4.0 in beta and adds a lane for it:")
    with o.state:
        o.state.set("config", {"system": {"refresh": {"timer": timer}}})
        o.state.set("last-refresh", f"{now - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}")
        o.state.ensure_before(0)
    _show_next(d, o, "auto-refresh", app="hello")
    current = d.base / "root" / "snap" / "hello" / "current"
    current.unlink()
    d.say(f"[bold]11. Drift[/]: someone deletes {current}. The snap manager's ensure notices (a readlink per "
          "pass; here the check is asked for at once) and starts a repair change, with a warning:")
    o.snap_manager.drift.check_soon()
    with o.state:
        o.state.ensure_before(0)
    _show_next(d, o, "repair", app="hello")
    with o.state:
        for w in o.state.warnings():
            if "drifted" in w.message:
                d.say(f"  warning: {w.message}\n")


def _show_next(d: Demo, o: SystemOverlord, kind: str, app: str) -> None:
    """_show_next waits for the ensure to make a change of kind, then for it, and shows it."""
    import time

    deadline = time.monotonic() + 60
    chg = None
    while chg is None:
        with o.state:
            chg = next((c for c in o.state.changes() if c.kind == kind), None)
        if chg is None:
            if time.monotonic() > deadline:
                fail(f"cannot finish the demo: no {kind} change within a minute")
            time.sleep(0.05)
    _wait(chg)
    d.show(chg)
    d.run_app(d.base / "root", app)


def _profile(path: Path) -> Any:
    """_profile shows what a security profile grants (its connections are in the table of step 8)."""
    from rich.text import Text

    p = json.loads(path.read_text())
    lines = [f"  {path} (JSON) grants:", f"    network: {str(p['network']).lower()}",
             f"    read: {', '.join(p['read']) or '-'}", f"    write: {', '.join(p['write']) or '-'}"]
    lines += [f"    mount ({m['mode']}): {m['source']} -> {m['target']}" for m in p["mounts"]]
    return Text("\n".join(lines) + "\n")


def _show_services(d: Demo, o: SystemOverlord, revision: str, after: str = "", expect: str | None = None) -> None:
    """_show_services shows hello's services (as `overlord services` does) and the greeter's latest log lines."""
    from overlord.daemon.api_apps import app_info

    from .cmd_services import services_table

    svc = o.service_manager
    deadline = time.monotonic() + 30  # the greeter's first line: it writes it as it starts
    while True:
        with o.state:
            lines = [line for _, line in svc.logs(["hello.greeter"], None)]
            apps = [app_info(s) for s in svc.services(["hello"])]
        wanted = expect or f"(revision {revision}) serving"
        if any(wanted in line for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    d.say("  Its service, a real process supervised by the daemon (`overlord services hello`)" +
          (f": {after}" if after else "") + ":")
    d.console.print(services_table(apps))
    d.say("  and the end of its log (`overlord logs hello -n 3`):")
    d.console.print("\n".join(f"    hello.greeter: {line}" for line in lines[-3:]), markup=False)
    d.say("")


def _show_connections(d: Demo, conns: Connections) -> None:
    from overlord.daemon.api_interfaces import connection_info

    from .cmd_interfaces import connections_rows, connections_table

    result = {"established": [connection_info(c) for c in conns.established], "plugs": [], "slots": []}
    d.say("[bold]8. The connections[/] (o.interface_manager.connections(), as `overlord connections` shows them):")
    d.console.print(connections_table(connections_rows(result, all=False)))
    d.say("")


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

    from ._offline import read_changes

    rows = [(c["id"], c["kind"], c["status"], c["summary"], len(c["tasks"])) for c in read_changes(db)]
    table = Table(title="12. The changes, read from the database", title_justify="left")
    for col in ("id", "kind", "status", "summary", "tasks"):
        table.add_column(col)
    for cid, kind, status, summary, n in rows:
        table.add_row(str(cid), kind, Text(status, STYLE.get(status, "")), Text(summary), str(n))
    d.console.print(table)
