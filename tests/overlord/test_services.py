# SPDX-License-Identifier: GPL-3.0-or-later
"""Services through a real daemon: the CLI verbs, the API, a SIGKILL of the daemon, `overlord run`."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from managers.snap import pack
from overlord.client import ApiError
from tests.managers.test_services import BEAT, alive, wait_for
from tests.support.daemon import DaemonProcess, child_env, overlord_cmd

from .test_access import as_nobody  # noqa: F401  (a fixture)


def beat_snap(base: Path, version: str) -> Path:
    d = base / f"src-beat-{version}"
    (d / "meta").mkdir(parents=True)
    (d / "bin").mkdir()
    (d / "meta" / "snap.yaml").write_text(
        f"name: beat\nversion: '{version}'\nsummary: Beats\napps:\n"
        "  svc:\n    command: bin/beat\n    daemon: simple\n    stop-timeout: 5s\n"
        "  beat:\n    command: bin/show $SNAP_COMMON\n")
    (d / "bin" / "beat").write_text(BEAT)
    (d / "bin" / "show").write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\necho "cwd=$PWD name=$SNAP_NAME"\n'
                                    'env | cut -d= -f1 | sort | tr "\\n" " "\n')
    for f in ("beat", "show"):
        os.chmod(d / "bin" / f, 0o755)
    return pack(d, base)


class Copies:
    """Copies reads which copies of the beat service started and still run."""

    def __init__(self, root: Path) -> None:
        self.started = root / "var/snap/beat/common/started"

    def running(self) -> list[int]:
        try:
            lines = self.started.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [int(line.split()[0]) for line in lines if alive(int(line.split()[0]))]

    def one(self, other_than: int | None = None) -> int:
        got = wait_for("one copy of the service", lambda: (lambda r: r if len(r) == 1 and r[0] != other_than
                                                            else None)(self.running()))
        return int(got[0])


@pytest.fixture
def beat_daemon(base: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(base)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    for pid in Copies(d.root).running():
        os.killpg(pid, signal.SIGKILL)


def ok(d: DaemonProcess, *args: str) -> str:
    p = d.cli(*args)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def test_a_service_survives_a_killed_daemon_once_and_the_verbs_control_it(
        beat_daemon: DaemonProcess, as_nobody: Callable[..., subprocess.CompletedProcess[str]]) -> None:  # noqa: F811
    d = beat_daemon
    snap = beat_snap(d.base, "1.0")
    ok(d, "install", str(snap), "--dangerous")
    copies = Copies(d.root)
    pid = copies.one()
    apps = json.loads(ok(d, "services", "--json"))
    assert [(a["snap"], a["name"], a["enabled"], a["status"], a["pid"]) for a in apps] == [
        ("beat", "svc", True, "active", pid)]
    table = ok(d, "services", "beat").splitlines()
    assert table[0].split() == ["Service", "Startup", "Current", "Pid", "Last", "exit", "Notes"]
    assert table[1].split()[:4] == ["beat.svc", "enabled", "active", str(pid)]
    logs = ok(d, "logs", "beat.svc", "-n", "all")
    assert "beat.svc: beat x1 starting in " in logs and "overlord: starting beat.svc (revision x1)" in logs

    # A SIGKILL of the daemon leaves the service running; the next daemon adopts it: still one copy.
    d.kill()
    assert alive(pid)
    d.start()
    wait_for("adoption", lambda: json.loads(ok(d, "services", "--json"))[0]["pid"] == pid)
    assert copies.running() == [pid]

    # Killed while no daemon runs, it is started again by the next one, once.
    d.kill()
    os.killpg(pid, signal.SIGKILL)
    wait_for("the service's end", lambda: not alive(pid))
    d.start()
    second = copies.one(other_than=pid)

    ok(d, "stop", "beat.svc", "--disable")
    assert not alive(second) and copies.running() == []
    assert json.loads(ok(d, "services", "--json"))[0]["enabled"] is False
    d.stop()  # a disabled service does not come back with the daemon
    d.start()
    assert json.loads(ok(d, "services", "--json"))[0]["status"] == "inactive" and copies.running() == []
    ok(d, "start", "beat", "--enable")
    third = copies.one()
    with d.client() as c:
        _, cursor = c.logs_since(["beat"], "")
        ok(d, "restart", "beat.svc")
        fourth = copies.one(other_than=third)
        entries, cursor = c.logs_since(["beat"], cursor)  # only what the restart wrote: the stop, the new start
        assert f"beat {third} stopping" in [e["message"] for e in entries]
        assert sum("beat x1 starting in" in e["message"] for e in entries) == 1  # not the earlier starts
        with pytest.raises(ApiError) as e:
            c.logs(["beat"], -1)
        assert (e.value.status_code, e.value.message) == (400, "invalid n parameter '-1': a number of lines up to "
                                                                "100000, or all")
    assert alive(fourth)

    p = d.cli("start", "beat.nope")
    assert (p.returncode, p.stderr) == (1, "error: cannot start service 'beat.nope': snap 'beat' has no service "
                                           "'nope'\n")

    # Anyone may list the services; only root may control them or read their logs.
    state = ["--state-dir", str(d.state_dir)]
    p = as_nobody("services", *state)
    assert p.returncode == 0 and "beat.svc" in p.stdout, p.stderr
    uid = pwd.getpwnam("nobody").pw_uid
    p = as_nobody("stop", "beat", *state)
    assert p.stderr.endswith(f"access denied: POST /v2/apps needs root (uid {uid})\n"), p.stderr
    p = as_nobody("logs", "beat", *state)
    assert p.returncode == 1 and "only root (or the daemon's group) may" in p.stderr, p.stderr


def test_daemon_stop_services_stops_them(base: Path) -> None:
    d = DaemonProcess(base, "--stop-services")
    d.start()
    try:
        ok(d, "install", str(beat_snap(base, "1.0")), "--dangerous")
        pid = Copies(d.root).one()
    finally:
        d.stop()
    assert not alive(pid)
    assert json.loads((d.state_dir / "services/beat.svc.json").read_text())["state"] == "down"


def test_run_an_app_with_the_snap_environment(beat_daemon: DaemonProcess) -> None:
    d = beat_daemon
    ok(d, "install", str(beat_snap(d.base, "1.0")), "--dangerous")
    p = subprocess.run(overlord_cmd("run", "--root", str(d.root), "beat", "two words", "$SNAP", "--root"),
                       env=child_env(OVERLORD_TEST_SECRET="leaked"), capture_output=True, text=True, timeout=60,
                       cwd=d.base)
    assert p.returncode == 0, p.stderr
    got = p.stdout.splitlines()
    common = d.root / "var/snap/beat/common"
    # Each word of the command and each argument is one argument; $SNAP_COMMON of the command is expanded,
    # the arguments are passed as they are; the environment is the snap's only.
    assert got[:4] == [f"[{common}]", "[two words]", "[$SNAP]", "[--root]"]
    assert got[4] == f"cwd={d.base} name=beat"
    assert got[5].split() == ["HOME", "LANG", "PATH", "PWD", "SNAP", "SNAP_COMMON", "SNAP_DATA", "SNAP_INSTANCE_NAME",
                              "SNAP_NAME", "SNAP_REVISION", "SNAP_USER_COMMON", "SNAP_USER_DATA", "SNAP_VERSION"]


def test_run_refuses_what_is_not_there(beat_daemon: DaemonProcess) -> None:
    d = beat_daemon
    # Options go before SNAP.APP: what follows it is the app's.
    p = subprocess.run(overlord_cmd("run", "--state-dir", str(d.state_dir), "beat.svc"), env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr == f"error: cannot run beat.svc: snap 'beat' is not installed and enabled " \
                                             f"under {d.root}\n"


def test_an_unknown_service_user_is_refused_at_start(base: Path) -> None:
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(base / "state"), "--root", str(base / "root"),
                                    "--service-user", "no-such-user-h22"), env=child_env(), capture_output=True,
                       text=True, timeout=60)
    assert (p.returncode, p.stderr) == (1, "error: cannot run the services as user 'no-such-user-h22': there is no "
                                           "such user\n")


#: RESTART_ON_CONFIGURE restarts the snap's service from its configure hook (refused for another snap's).
RESTART_ON_CONFIGURE = """#!/bin/sh
if [ "$(overlord ctl get other)" = "yes" ]; then
  overlord ctl restart hello.svc || exit 3
fi
overlord ctl restart || exit 2
"""


def test_a_configure_hook_restarts_its_snaps_service_through_ctl(beat_daemon: DaemonProcess) -> None:
    d = beat_daemon
    src = beat_snap(d.base / "snaps", "1.0")
    ok(d, "install", str(src), "--dangerous")
    copies = Copies(d.root)
    first = copies.one()
    # The same snap with a configure hook: a refresh runs it, and the restart it asks for.
    src2 = d.base / "snaps" / "src-beat-1.0"
    (src2 / "meta" / "hooks").mkdir()
    (src2 / "meta" / "hooks" / "configure").write_text(RESTART_ON_CONFIGURE)
    (src2 / "meta" / "hooks" / "configure").chmod(0o755)
    (d.base / "snaps2").mkdir()
    ok(d, "install", str(pack(src2, d.base / "snaps2")), "--dangerous")
    second = copies.one(other_than=first)

    out = ok(d, "set", "beat", "greeting=hi")  # the configure hook restarts the service once it is done
    copies.one(other_than=second)
    with d.client() as c:
        chg = c.changes(select="all")[-1]
        kinds = [(t["kind"], t["status"]) for t in chg["tasks"]]
    assert kinds == [("run-hook", "Done"), ("service-control", "Done")], (kinds, out)

    p = d.cli("set", "beat", "other=yes")  # another snap's services: refused, the change fails
    assert p.returncode == 1
    assert "cannot run ctl restart hello.svc: a hook of snap 'beat' controls its own services only" in p.stderr, \
        p.stderr
