# SPDX-License-Identifier: GPL-3.0-or-later
"""Hooks as real processes, through a SystemOverlord: where they run, their environment, failures, timeouts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine import Status
from managers.configstate import SYSTEM, snap_config
from managers.errors import ConfigError, InvalidSnapError, NoOptionError, SnapNotInstalledError
from managers.hookstate import HookSetup, hook_task
from managers.orphans import boot_id
from managers.snap import read_info
from tests.support.system import System, make_snap, tree

D, E = Status.DONE, Status.ERROR

#: LOG appends "<hook> <revision>" to $SNAP_COMMON/log: every hook of the tests writes there.
LOG = '#!/bin/sh\necho "$(basename "$0") $SNAP_REVISION" >> "$SNAP_COMMON/log"\n'


def hook_log(system: System, name: str = "hello") -> list[str]:
    path = system.root / "var" / "snap" / name / "common" / "log"
    return path.read_text().splitlines() if path.exists() else []


def task_logs(system: System, cid: str, kind: str = "run-hook") -> list[str]:
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        return [line for t in chg.tasks() if t.kind == kind for line in t.log()]


def test_hooks_run_at_snapds_places_with_the_revision_in_use(system: System) -> None:
    hooks = {h: LOG for h in ("install", "configure", "pre-refresh", "post-refresh", "remove")}
    system.publish("hello", "1.0", hooks=hooks)
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert hook_log(system) == ["install 1", "configure 1"]
    system.publish("hello", "2.0", hooks=hooks)
    cid = system.run(lambda sm: sm.refresh("hello"))
    assert system.status(cid) is D, system.err(cid)
    # pre-refresh runs in the old revision before its services stop; post-refresh in the new one once linked.
    assert hook_log(system)[2:] == ["pre-refresh 1", "post-refresh 2", "configure 2"]
    cid = system.run(lambda sm: sm.revert("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert hook_log(system)[5:] == ["configure 1"]  # a revert runs no refresh hooks (snapd)
    common = system.root / "var" / "snap" / "hello" / "common"
    before = hook_log(system)
    cid = system.run(lambda sm: sm.remove("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert not common.exists()  # the remove hook ran before the data went: its line was written, then deleted
    assert len(before) == 6


def test_a_hook_gets_the_snaps_environment_and_nothing_of_the_daemons(system: System,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEMON_SECRET", "leaked")
    script = '#!/bin/sh\nenv > "$SNAP_COMMON/env"\necho "installing $SNAP_NAME"\necho "to stderr" >&2\npwd\n'
    system.publish("hello", "1.0", hooks={"install": script})
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is D, system.err(cid)
    env = dict(line.split("=", 1) for line in
               (system.root / "var/snap/hello/common/env").read_text().splitlines() if "=" in line)
    assert "DAEMON_SECRET" not in env
    data = str(system.root / "var/snap/hello/1")
    assert env["SNAP"] == str(system.root / "snap/hello/1")
    assert (env["SNAP_NAME"], env["SNAP_REVISION"], env["SNAP_VERSION"], env["SNAP_DATA"]) == ("hello", "1", "1.0",
                                                                                                 data)
    assert env["SNAP_COMMON"] == str(system.root / "var/snap/hello/common")
    assert len(env["SNAP_COOKIE"]) >= 32
    assert env["PATH"].endswith("/usr/sbin:/usr/bin:/sbin:/bin")
    # Its output, stdout and stderr, is in the task's log; it ran in its data directory.
    logs = task_logs(system, cid)
    assert any(line.endswith("install: installing hello") for line in logs), logs
    assert any(line.endswith("install: to stderr") for line in logs), logs
    assert any(line.endswith(f"install: {data}") for line in logs), logs
    # The token is no longer valid once the hook ended.
    assert system.o.hook_manager.context(env["SNAP_COOKIE"]) is None
    assert system.o.hook_manager.running_tokens() == 0


def test_a_failing_install_hook_undoes_the_install(system: System) -> None:
    system.o.state_engine.start_up()
    empty = system.snapshot()
    system.publish("hello", "1.0", hooks={"install": "#!/bin/sh\necho 'cannot find the widget' >&2\nexit 3\n"})
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is E
    assert "run hook 'install': exit status 3: cannot find the widget" in system.err(cid)
    kinds = system.tasks(cid)
    assert ("run-hook", E) in kinds and ("link-snap", Status.UNDONE) in kinds and ("mount-snap", Status.UNDONE) in kinds
    assert system.snapshot() == empty  # every file and the state, as before


def test_a_failing_remove_hook_does_not_stop_the_removal(system: System) -> None:
    system.o.state_engine.start_up()
    empty = tree(system.root)
    system.publish("hello", "1.0", hooks={"remove": "#!/bin/sh\necho 'I refuse' >&2\nexit 1\n"})
    system.run(lambda sm: sm.install("hello"))
    cid = system.run(lambda sm: sm.remove("hello"))
    assert system.status(cid) is D, system.err(cid)
    assert all(status is D for _, status in system.tasks(cid))
    logs = task_logs(system, cid)
    assert any("ignoring failure in hook 'remove': run hook 'remove': exit status 1: I refuse" in x for x in logs), logs
    assert tree(system.root) == empty
    with system.o.state:
        assert system.sm.info_or_none("hello") is None


def test_a_hook_past_its_timeout_is_killed_with_its_process_group(system: System) -> None:
    script = ('#!/bin/sh\nsleep 3017 &\necho $! > "$SNAP_COMMON/child"\n'
              'echo started\nsleep 3017\n')
    system.publish("hello", "1.0", hooks={"install": script}, extra="hooks:\n  install:\n    timeout: 500ms\n")
    started = time.monotonic()
    cid = system.run(lambda sm: sm.install("hello"))
    assert time.monotonic() - started < 60
    assert system.status(cid) is E
    assert "run hook 'install': killed after its timeout of 0.5 s: started" in system.err(cid)
    # The hook's background child was in its process group: killed too (the undo removed $SNAP_COMMON, so look
    # for it among the processes).
    assert not _sleepers(), "a process of the hook's group survived"


def _sleepers(seconds: bytes = b"3017") -> list[int]:
    """_sleepers lists the live `sleep SECONDS` processes of a hook of the snap hello."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if cmd[:2] == [b"sleep", seconds] and state != "Z" and b"SNAP_NAME=hello" in env:
            out.append(int(entry))
    return out


def test_the_configure_hook_can_refuse_and_the_configuration_stays(system: System) -> None:
    refuse = '#!/bin/sh\nif [ -e "$SNAP_COMMON/refuse" ]; then echo "no, thank you" >&2; exit 1; fi\n'
    system.publish("hello", "1.0", hooks={"configure": refuse})
    system.run(lambda sm: sm.install("hello"))
    cm = system.o.config_manager
    with system.o.state:
        chg = cm.configure("hello", {"port": 8080, "name.first": "Ada"})
        assert (chg.kind, chg.summary) == ("configure-snap", 'Change configuration of "hello" snap')
        cid = chg.id
    system.o.settle(60)
    assert system.status(cid) is D, system.err(cid)
    with system.o.state:
        assert cm.get("hello") == {"port": 8080, "name": {"first": "Ada"}}
    (system.root / "var/snap/hello/common/refuse").touch()
    with system.o.state:
        cid = cm.configure("hello", {"port": 9090, "name.first": None}).id
    system.o.settle(60)
    assert system.status(cid) is E
    assert "run hook 'configure': exit status 1: no, thank you" in system.err(cid)
    with system.o.state:
        assert cm.get("hello") == {"port": 8080, "name": {"first": "Ada"}}
        with pytest.raises(NoOptionError, match="snap 'hello' has no 'colour' configuration option"):
            cm.get("hello", "colour")


def test_a_snap_without_a_configure_hook_cannot_be_configured(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    with system.o.state:
        cid = system.o.config_manager.configure("hello", {"a": 1}).id
        with pytest.raises(SnapNotInstalledError, match="not installed"):
            system.o.config_manager.configure("world", {"a": 1})
        with pytest.raises(ConfigError, match="invalid option name"):
            system.o.config_manager.configure("hello", {"A": 1})
    system.o.settle(60)
    assert system.status(cid) is E
    assert "snap 'hello' has no 'configure' hook" in system.err(cid)
    with system.o.state:
        assert "hello" not in system.o.state.get("config", {})


def test_system_settings_are_checked_and_kept(system: System) -> None:
    cm = system.o.config_manager
    with system.o.state:
        cid = cm.configure(SYSTEM, {"refresh.timer": "mon,4:00-7:00", "refresh.retain": 3}).id
        with pytest.raises(ConfigError, match=r"'refresh\.timer' to 'whenever'"):
            cm.configure(SYSTEM, {"refresh.timer": "whenever"})
        with pytest.raises(ConfigError, match=r"'refresh\.colour': it is not a system option"):
            cm.configure(SYSTEM, {"refresh.colour": "red"})
    system.o.settle(60)
    assert system.status(cid) is D, system.err(cid)
    with system.o.state:
        assert snap_config(system.o.state, SYSTEM, "refresh") == {"timer": "mon,4:00-7:00", "retain": 3}
        assert system.o.state.get("config") == {"system": {"refresh": {"timer": "mon,4:00-7:00", "retain": 3}}}
        # What the snap manager goes by: the auto-refresh's schedule, and the revisions kept.
        assert system.sm.auto_refresh.info(system.o.state)["timer"] == "mon,4:00-7:00"
        assert (system.sm.retain, system.sm.retained()) == (2, 3)
        cid = cm.configure(SYSTEM, {"refresh.timer": None}).id
    system.o.settle(60)
    with system.o.state:
        assert cm.get(SYSTEM) == {"refresh": {"retain": 3}}


def test_a_removed_snap_loses_its_configuration(system: System) -> None:
    system.publish("hello", "1.0", hooks={"configure": "#!/bin/sh\n"})
    system.run(lambda sm: sm.install("hello"))
    with system.o.state:
        system.o.config_manager.configure("hello", {"a": 1})
    system.o.settle(60)
    system.run(lambda sm: sm.remove("hello"))
    with system.o.state:
        assert system.o.state.get("config", None) is None


def test_only_one_hook_of_a_snap_runs_at_a_time(system: System) -> None:
    script = ('#!/bin/sh\necho "start $$" >> "$SNAP_COMMON/log"\nsleep 0.3\n'
              'echo "end $$" >> "$SNAP_COMMON/log"\n')
    system.publish("hello", "1.0", hooks={"configure": script})
    system.publish("world", "1.0", hooks={"configure": script})
    system.run(lambda sm: sm.install(["hello", "world"]))
    for name in ("hello", "world"):
        (system.root / "var/snap" / name / "common/log").unlink()
    with system.o.state:
        st = system.o.state
        chg = st.new_change("test", "three hooks side by side")
        for name in ("hello", "hello", "hello"):
            chg.add_task(hook_task(st, f"configure {name}", HookSetup(name, "configure", optional=True)))
        cid = chg.id
    system.o.settle(60)
    assert system.status(cid) is D, system.err(cid)
    lines = [line.split()[0] for line in hook_log(system)]
    assert lines == ["start", "end"] * 3, lines


def test_hooks_in_snap_files_are_checked(tmp_path: Path) -> None:
    # pack checks a snap as an install does: the bad ones are refused already.
    with pytest.raises(InvalidSnapError, match="hook 'install': meta/hooks/install is not an executable file"):
        make_snap(tmp_path / "a", "hello", "1.0", files={"meta/hooks/install": "#!/bin/sh\n"})
    good = make_snap(tmp_path / "b", "hello", "1.0", hooks={"configure": "#!/bin/sh\n", "frobnicate": "#!/bin/sh\n",
                                                             "install": "#!/bin/sh\n"},
                     extra="hooks:\n  install:\n    timeout: 5m\n")
    info = read_info(good)
    assert sorted(info.hooks) == ["configure", "install"]  # frobnicate is not a hook: ignored, as snapd does
    assert (info.hooks["install"].timeout, info.hooks["configure"].timeout) == (300.0, None)
    cases = {"hooks:\n  frobnicate:\n": "field hooks.frobnicate: 'frobnicate' is not a hook",
             "hooks:\n  remove:\n": "hook 'remove' is declared but there is no meta/hooks/remove",
             "hooks:\n  install:\n    timeout: forever\n": "field hooks.install.timeout",
             "hooks:\n  install:\n    timeout: 0\n": "field hooks.install.timeout",
             "hooks:\n  install:\n    plugs: [network]\n": "field hooks.install.plugs: unknown field"}
    for i, (extra, problem) in enumerate(cases.items()):
        with pytest.raises(InvalidSnapError, match=problem):
            make_snap(tmp_path / f"c{i}", "hello", "1.0", hooks={"install": "#!/bin/sh\n"}, extra=extra)



def test_aborting_a_change_kills_its_running_hook(system: System) -> None:
    script = '#!/bin/sh\nsleep 3018 &\ntouch "$SNAP_COMMON/started"\nsleep 3018\n'
    system.publish("hello", "1.0", hooks={"install": script})
    with system.o.state:
        cid = system.sm.install("hello").id
    system.o.loop()
    started = system.root / "var/snap/hello/common/started"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the hook never started"
        time.sleep(0.02)
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        chg.abort()
    assert chg.wait_ready(60)
    assert system.status(cid) in (E, Status.UNDONE)
    assert "killed: its task was asked to stop" in system.err(cid)
    assert not _sleepers(b"3018"), "a process of the hook's group survived"
    with system.o.state:
        assert system.sm.info_or_none("hello") is None


def test_ctl_works_in_hooks_of_an_overlord_without_a_daemon(system: System) -> None:
    """A SystemOverlord in a program serves `overlord ctl` to its hooks on a private socket of its own."""
    echo = ('#!/bin/sh\nport=$(overlord ctl get port) || exit 2\noverlord ctl set seen-port="$port" || exit 3\n'
            'overlord ctl get other-snap-secret >/dev/null\n')
    system.publish("hello", "1.0", hooks={"configure": echo})
    system.run(lambda sm: sm.install("hello"))
    hm, cm = system.o.hook_manager, system.o.config_manager
    assert hm.socket is None  # no daemon
    with system.o.state:
        cid = cm.configure("hello", {"port": 8080}).id
    system.o.settle(60)
    assert system.status(cid) is D, system.err(cid)
    with system.o.state:
        assert cm.get("hello") == {"port": 8080, "seen-port": 8080}
    socket = hm.private_ctl_socket
    assert socket is not None and socket.is_socket()
    assert oct(socket.parent.stat().st_mode & 0o777) == "0o700"
    # A token no running hook has is refused by the private socket as by the daemon's.
    from overlord.client import ApiError, Client

    with Client(socket=socket) as c, pytest.raises(ApiError) as e:
        c.ctl("not-a-token", ["get", "port"])
    assert (e.value.status_code, e.value.kind) == (403, "permission-denied")
    system.o.stop()
    assert not socket.exists()


def test_a_hook_left_without_a_pid_or_without_its_leader_is_found_and_killed(system: System, tmp_path: Path) -> None:
    """The daemon died between a hook's fork and the record of its pid, or the hook's leader ended and left a child:
    its records still find it (by the token in its environment), and nothing else is touched."""
    hook = tmp_path / "install"
    hook.write_text("#!/bin/sh\nsleep 3019 &\n[ -n \"$LEAVE\" ] && exit 0\nsleep 3019\n")
    hook.chmod(0o755)

    def start(token: str, **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(hook)], env={"SNAP_COOKIE": token, "PATH": "/usr/bin:/bin", **env},
                                start_new_session=True)

    def record(task: str, token: str, **more: object) -> None:
        rec = {"task": task, "snap": "hello", "hook": "install", "argv": [str(hook)], "pid": None,
               "boot-id": boot_id(), "cookie-sha256": hashlib.sha256(token.encode()).hexdigest(), **more}
        (hm.run_dir / f"{task}.json").write_text(json.dumps(rec))

    hm = system.o.hook_manager
    assert hm.run_dir == system.state_dir / "hooks"
    hm.run_dir.mkdir(parents=True)
    unrecorded, stranger = start("token-a"), start("token-b")
    leaderless = start("token-c", LEAVE="1")
    assert leaderless.wait(60) == 0  # its leader is gone (reaped), its `sleep` child runs on in its group
    try:
        wait_for = time.monotonic() + 60
        while len(_group(unrecorded.pid)) < 3 or len(_group(stranger.pid)) < 3 or not _group(leaderless.pid):
            assert time.monotonic() < wait_for, "the hooks never started"
            time.sleep(0.01)
        strangers = _group(stranger.pid)  # sh and its two sleeps
        record("41", "token-a")
        record("42", "token-c", pid=leaderless.pid, **{"start-time": 1})
        hm.ensure()  # its first pass: every record left by another daemon
        assert unrecorded.wait(60) == -signal.SIGKILL
        assert _group(unrecorded.pid) == [] and _group(leaderless.pid) == []
        assert _group(stranger.pid) == strangers  # another token: not ours
        assert list(hm.run_dir.iterdir()) == []
    finally:
        for p in (unrecorded, stranger, leaderless):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _group(pgid: int) -> list[int]:
    """_group lists the live processes (not zombies) of a process group."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == pgid:
                    out.append(int(entry))
    return out
