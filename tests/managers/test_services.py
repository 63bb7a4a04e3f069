# SPDX-License-Identifier: GPL-3.0-or-later
"""Services as real processes: the supervisor under a SystemOverlord (start, crash, restart, refresh, logs)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Status
from engine.testing import FakeClock
from managers.asserts import PrivateKey
from managers.servicestate import ServiceManager, Supervisor, read_log_lines
from managers.servicestate.logs import read_log_since
from managers.snap import pack
from managers.snapstate import SnapManager
from tests.support.system import System, snap_id

from .test_snapstate import fail_before

#: How long a test waits for a process to get somewhere: generous, the machine is busy.
WAIT = 30.0

BEAT = """#!/bin/sh
# A service that says it started, then writes a heartbeat until it is stopped.
echo "$$ $SNAP_REVISION" >> "$SNAP_COMMON/started"
echo "beat $SNAP_REVISION starting in $PWD"
trap 'echo "beat $$ stopping"; exit 0' TERM
while :; do
  echo "$$ $SNAP_REVISION" > "$SNAP_COMMON/.heartbeat" && mv "$SNAP_COMMON/.heartbeat" "$SNAP_COMMON/heartbeat"
  sleep 0.05
done
"""

CRASH = """#!/bin/sh
echo "crash $$ starting"
exit 3
"""


def publish(system: System, version: str, *, apps: str | None = None, scripts: dict[str, str] | None = None) -> str:
    """publish packs a snap "beat" whose service "svc" runs bin/beat, adds it to the store, returns its revision."""
    d = system.base / "build" / f"beat-{version}"
    (d / "meta").mkdir(parents=True, exist_ok=True)
    (d / "bin").mkdir(exist_ok=True)
    apps = apps or "apps:\n  svc:\n    command: bin/beat --flag $SNAP_DATA/x\n    daemon: simple\n"
    (d / "meta" / "snap.yaml").write_text(f"name: beat\nversion: '{version}'\nsummary: Beats\n{apps}")
    for name, text in {"beat": BEAT, **(scripts or {})}.items():
        (d / "bin" / name).write_text(text)
        os.chmod(d / "bin" / name, 0o755)
    snap = pack(d, system.base / "build")
    return system.sample.snap_store.publish(snap, key=system.sample.publisher_key, developer_id="acme",
                                       snap_id=snap_id("beat")).revision


def wait_for(what: str, pred: Callable[[], Any], timeout: float = WAIT, tick: Callable[[], None] | None = None) -> Any:
    """wait_for polls pred until it returns something true (tick, if given, is called between tries)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        if tick is not None:
            tick()
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Beat:
    """Beat reads what the beat service wrote under $SNAP_COMMON."""

    def __init__(self, system: System) -> None:
        self.common = system.root / "var/snap/beat/common"

    def heartbeat(self) -> tuple[int, str] | None:
        try:
            pid, rev = (self.common / "heartbeat").read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return (int(pid), rev) if alive(int(pid)) else None

    def running(self) -> list[tuple[int, str]]:
        """running lists the copies of the service that started and are still alive."""
        try:
            lines = (self.common / "started").read_text().split("\n")
        except FileNotFoundError:
            return []
        out = [(int(p), r) for p, r in (line.split() for line in lines if line) if p.isdigit()]
        return [x for x in out if alive(x[0])]

    def one(self, revision: str, *, other_than: int | None = None) -> int:
        """one waits until exactly one copy runs, of revision (and not pid other_than); it returns its pid."""
        def check() -> int | None:
            hb = self.heartbeat()
            run = self.running()
            if hb is None or hb[1] != revision or hb[0] == other_than or run != [hb]:
                return None
            return hb[0]
        return int(wait_for(f"one copy of beat revision {revision}", check))


@pytest.fixture
def svc_system(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> Iterator[System]:
    s = System(tmp_path, root_key, acme_key, clock, names=("beat",), stop_services=True)
    s.o.loop()
    yield s
    s.stop()
    for pid, _ in Beat(s).running():  # a failed test must not leave a service behind
        os.killpg(pid, signal.SIGKILL)


def run(system: System, make: Callable[[SnapManager], Any]) -> str:
    with system.o.state:
        chg = make(system.sm)
        cid = chg.id
    assert chg.wait_ready(WAIT), f"change {cid} is not ready after {WAIT} s"
    return str(cid)


def control(system: System, action: str, *names: str, **kw: bool) -> str:
    svc: ServiceManager = system.o.service_manager
    with system.o.state:
        chg = svc.control(action, list(names), **kw)
        cid = chg.id
    assert chg.wait_ready(WAIT)
    assert system.status(cid) is Status.DONE, system.err(cid)
    return str(cid)


def status(system: System, name: str = "beat.svc") -> Any:
    with system.o.state:
        return next(s for s in system.o.service_manager.services([name]))


def test_a_service_runs_as_its_own_process_group_with_the_snap_environment(svc_system: System) -> None:
    s = svc_system
    os.environ["OVERLORD_TEST_SECRET"] = "leaked"  # the daemon's environment must not reach a service
    try:
        rev = publish(s, "1.0")
        assert s.status(run(s, lambda sm: sm.install("beat"))) is Status.DONE
    finally:
        del os.environ["OVERLORD_TEST_SECRET"]
    pid = Beat(s).one(rev)
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if item)
    data = str(s.root / "var/snap/beat" / rev)
    assert {k: env[k] for k in ("SNAP", "SNAP_DATA", "SNAP_COMMON", "SNAP_NAME", "SNAP_REVISION",
                                "SNAP_VERSION")} == {
        "SNAP": str(s.root / "snap/beat" / rev), "SNAP_DATA": data, "SNAP_COMMON": str(s.root / "var/snap/beat/common"),
        "SNAP_NAME": "beat", "SNAP_REVISION": rev, "SNAP_VERSION": "1.0"}
    assert "OVERLORD_TEST_SECRET" not in env
    assert os.readlink(f"/proc/{pid}/cwd") == data
    # Each word of the command is one argument, $SNAP_DATA expanded; no descriptor beyond 0, 1, 2 is inherited.
    assert Path(f"/proc/{pid}/cmdline").read_text().split("\0")[-3:] == ["--flag", f"{data}/x", ""]
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) <= [0, 1, 2, 10]  # sh keeps 10 for itself
    st = status(s)
    assert (st.enabled, st.status.active, st.status.pid) == (True, "active", pid)
    with s.o.state:
        lines = [line for _, line in s.o.service_manager.logs(["beat"], None)]
    assert f"beat {rev} starting in {data}" in lines


def test_a_killed_service_is_restarted_and_a_stopped_one_is_not(svc_system: System, clock: FakeClock) -> None:
    s = svc_system
    rev = publish(s, "1.0")
    run(s, lambda sm: sm.install("beat"))
    beat = Beat(s)
    pid = beat.one(rev)
    os.kill(pid, signal.SIGKILL)
    # The restart is due restart-delay later on the State's clock: it waits for the clock, not the wall.
    wait_for("the kill seen", lambda: status(s).status.last_exit == "signal SIGKILL")
    assert status(s).status.pid is None
    clock.advance(1)
    with s.o.state:
        s.o.state.ensure_before(0)
    second = beat.one(rev, other_than=pid)
    assert status(s).status.restarts == 1
    # Stopped and disabled: gone, and it stays so across a restart of the overlord.
    control(s, "stop", "beat.svc", disable=True)
    assert not alive(second) and beat.running() == []
    st = status(s)
    assert (st.enabled, st.status.active, st.status.last_exit) == (False, "inactive", "status 0")
    s.restart(stop_services=True)
    s.o.loop()
    with s.o.state:
        s.o.state.ensure_before(0)
    wait_for("the overlord's first ensure", lambda: s.o.service_manager._recovered)
    assert beat.running() == []
    control(s, "start", "beat", enable=True)
    beat.one(rev, other_than=second)
    assert status(s).enabled


def test_an_overlord_restart_adopts_the_running_service(svc_system: System) -> None:
    s = svc_system
    rev = publish(s, "1.0")
    run(s, lambda sm: sm.install("beat"))
    beat = Beat(s)
    pid = beat.one(rev)
    s.o.service_manager.stop_at_exit = False  # the services keep running: the next overlord adopts them
    s.restart()
    assert alive(pid)
    s.o.loop()
    wait_for("adoption", lambda: status(s).status.pid == pid)
    assert beat.running() == [(pid, rev)]
    os.kill(pid, signal.SIGKILL)  # an adopted process is watched too
    wait_for("the kill seen", lambda: status(s).status.last_exit == "unknown")
    s.clock.advance(1)
    with s.o.state:
        s.o.state.ensure_before(0)
    beat.one(rev, other_than=pid)


def test_refresh_moves_the_service_and_a_failed_refresh_brings_the_old_one_back(svc_system: System) -> None:
    s = svc_system
    beat = Beat(s)
    r1 = publish(s, "1.0")
    run(s, lambda sm: sm.install("beat"))
    p1 = beat.one(r1)
    r2 = publish(s, "2.0")
    assert s.status(run(s, lambda sm: sm.refresh("beat"))) is Status.DONE
    p2 = beat.one(r2)
    assert not alive(p1)
    publish(s, "3.0")
    fail_before(s.sm, "cleanup")  # after start-snap-services: revision 3 ran, then everything is undone
    cid = run(s, lambda sm: sm.refresh("beat"))
    assert s.status(cid) is Status.ERROR
    assert dict(s.tasks(cid))["start-snap-services"] is Status.UNDONE
    p3 = beat.one(r2, other_than=p2)
    assert [r for _, r in (line.split() for line in (beat.common / "started").read_text().splitlines())] == [
        r1, r2, "3", r2]
    assert not alive(p2) and status(s).status.pid == p3
    # Removed: stopped, and its records and logs go with it.
    run(s, lambda sm: sm.remove("beat"))
    assert not alive(p3)
    with s.o.state:
        s.o.state.ensure_before(0)
    wait_for("the records to go", lambda: not list((s.state_dir / "services").rglob("beat.*")))


def test_a_crash_loop_ends_in_failed_with_a_warning(svc_system: System, clock: FakeClock) -> None:
    s = svc_system
    apps = "apps:\n  svc:\n    command: bin/crash\n    daemon: simple\n    restart-delay: 100ms\n"
    publish(s, "1.0", apps=apps, scripts={"crash": CRASH})
    run(s, lambda sm: sm.install("beat"))

    def advance() -> None:  # each restart is due a back-off later: 0.1, 0.2, 0.4, 0.8 s of the State's clock
        if status(s).status.pid is None:
            clock.advance(0.1)
            with s.o.state:
                s.o.state.ensure_before(0)

    wait_for("the service to fail", lambda: status(s).status.active == "failed", tick=advance)
    st = status(s).status
    assert (st.restarts, st.last_exit, st.pid) == (4, "status 3", None)

    def warned() -> bool:
        with s.o.state:
            return any(w.message.startswith("service beat.svc failed: it was started 5 times within 10 s")
                       for w in s.o.state.warnings())

    wait_for("the warning", warned)
    with s.o.state:
        log = [line for _, line in s.o.service_manager.logs(["beat.svc"], None)]
    assert sum("crash " in x and "starting" in x for x in log) == 5
    assert [x.rsplit("restarting in ", 1)[1] for x in log if "restarting in" in x] == ["0.1 s", "0.2 s", "0.4 s",
                                                                                       "0.8 s"]
    # Started again by hand, it gets a fresh start limit.
    control(s, "restart", "beat.svc")
    assert status(s).status.active in ("active", "failed")


def test_install_mode_disable_and_the_start_order(svc_system: System) -> None:
    s = svc_system
    apps = ("apps:\n  svc:\n    command: bin/beat\n    daemon: simple\n    after: [setup]\n"
            "  setup:\n    command: bin/once\n    daemon: oneshot\n"
            "  later:\n    command: bin/beat\n    daemon: simple\n    install-mode: disable\n")
    once = '#!/bin/sh\necho "setup $SNAP_REVISION" >> "$SNAP_COMMON/started"\n'
    rev = publish(s, "1.0", apps=apps, scripts={"once": once})
    run(s, lambda sm: sm.install("beat"))
    pid = Beat(s).one(rev)
    lines = (s.root / "var/snap/beat/common/started").read_text().splitlines()
    assert lines == [f"setup {rev}", f"{pid} {rev}"]  # the oneshot ended before svc started
    with s.o.state:
        got = {x.app: (x.enabled, x.status.active) for x in s.o.service_manager.services(["beat"])}
    assert got == {"later": (False, "inactive"), "setup": (True, "active"), "svc": (True, "active")}


def test_logs_are_capped_and_rotated(tmp_path: Path, clock: FakeClock) -> None:
    sup = Supervisor(tmp_path / "run", clock, log_max=1000)
    sup._setup()
    log = sup.log_path("a.b")
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(300)))
    sup.rotate("a.b")
    # The rotated copy keeps the log's last log_max bytes, from a line's start.
    assert log.stat().st_size == 0 and 0 < (tmp_path / "run/logs/a.b.log.1").stat().st_size <= 1000
    log.write_bytes(b"new\n")
    assert read_log_lines(log, 2) == ["line 299", "new"]
    # Following: only what was written since the cursor, whole lines; a truncated log is read from its start.
    lines, cursor = read_log_since(log, None)
    assert lines == []
    with open(log, "ab") as f:
        f.write(b"one\ntwo\nhalf")
    lines, cursor = read_log_since(log, cursor)
    assert lines == ["one", "two"]
    with open(log, "ab") as f:
        f.write(b" done\n")
    lines, cursor = read_log_since(log, cursor)
    assert lines == ["half done"]
    sup.log_max = 10
    sup.rotate("a.b")
    with open(log, "ab") as f:
        f.write(b"after\n")
    assert read_log_since(log, cursor)[0] == ["after"]


def test_a_service_started_without_a_record_is_found_not_doubled(tmp_path: Path, clock: FakeClock) -> None:
    """A daemon killed between the fork of a service and its record: the next one finds the process."""
    import subprocess

    from managers.servicestate import ServiceSpec

    prog = tmp_path / "snap/bin/loop"
    prog.parent.mkdir(parents=True)
    prog.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    prog.chmod(0o755)
    spec = ServiceSpec("x.loop", "1", (str(prog), "--serve"), {"SNAP": str(tmp_path / "snap"), "PATH": "/usr/bin:/bin"},
                       str(tmp_path))
    orphan = subprocess.Popen(list(spec.argv), env=dict(spec.env), start_new_session=True)
    try:
        # The service as the killed daemon left it: running its program (Popen returns before the exec).
        wait_for("the orphan to run its program",
                 lambda: str(prog).encode() in Path(f"/proc/{orphan.pid}/cmdline").read_bytes())
        sup = Supervisor(tmp_path / "run", clock)
        assert sup.recover({"x.loop": spec}) == []  # nothing started: the orphan was adopted
        assert sup.status("x.loop").pid == orphan.pid
        sup.stop("x.loop")
        assert orphan.wait(WAIT) == -signal.SIGTERM
    finally:
        orphan.kill()
        orphan.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a service as another user")
def test_services_run_as_the_service_user(root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> None:
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="ovl-svc-", dir="/tmp"))  # nobody must reach the snap's files
    base.chmod(0o755)
    s = System(base, root_key, acme_key, clock, names=("beat",), stop_services=True, service_user="nobody")
    try:
        s.o.loop()
        rev = publish(s, "1.0")
        assert s.status(run(s, lambda sm: sm.install("beat"))) is Status.DONE, s.status
        pid = Beat(s).one(rev)
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(nobody.pw_uid)] * 4
        groups = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("Groups:"))
        assert groups.split()[1:] == []
        for d in (s.root / "var/snap/beat" / rev, s.root / "var/snap/beat/common"):
            assert d.stat().st_uid == nobody.pw_uid  # given to the user: it writes its heartbeat there
    finally:
        s.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(("condition", "restarted"), [
    ("on-failure", {"status 0": False, "status 1": True, "signal": True}),
    ("always", {"status 0": True, "status 1": True, "signal": True}),
    ("never", {"status 0": False, "status 1": False, "signal": False}),
    ("on-success", {"status 0": True, "status 1": False, "signal": False}),
    ("on-abnormal", {"status 0": False, "status 1": False, "signal": True}),
])
def test_restart_conditions_follow_systemd(condition: str, restarted: dict[str, bool]) -> None:
    codes = {"status 0": 0, "status 1": 1, "signal": -signal.SIGKILL}
    assert {k: Supervisor._restarts(condition, codes[k]) for k in codes} == restarted
