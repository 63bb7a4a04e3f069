# SPDX-License-Identifier: GPL-3.0-or-later
"""Configuration and hooks through a real daemon: set/get/unset, the configure hook refusing, `overlord ctl`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from overlord.client import ApiError
from tests.support.daemon import START_TIMEOUT, DaemonProcess, child_env, overlord_cmd
from tests.support.other_user import OtherUser
from tests.support.system import make_snap

from .test_access import as_nobody  # noqa: F401  (a fixture)
from .test_api import raw

#: CHECK_PORT refuses a port that is not a number, and records through ctl what it saw.
CHECK_PORT = """#!/bin/sh
port=$(overlord ctl get port) || exit 2
case "$port" in
  "") ;;
  *[!0-9]*) echo "port must be a number, not $port" >&2; exit 1 ;;
  *) overlord ctl set seen-port="$port" || exit 2 ;;
esac
"""


def install(d: DaemonProcess, name: str, **kw: object) -> None:
    snap = make_snap(d.base / "snaps" / name, name, "1.0", **kw)  # type: ignore[arg-type]
    p = d.cli("install", str(snap), "--dangerous")
    assert p.returncode == 0, p.stderr


def ok(d: DaemonProcess, *args: str) -> str:
    p = d.cli(*args)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def wait_for_file(path: Path, timeout: float = START_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.02)
    return path.read_text().strip()


@pytest.mark.heavy
def test_set_get_unset_and_a_configure_hook_that_refuses(daemon: DaemonProcess) -> None:
    d = daemon
    install(d, "hello", hooks={"configure": CHECK_PORT})
    ok(d, "set", "hello", "port=8080", "name.first=Ada", "tags=[1, 2]", "motto=hello world")
    assert ok(d, "get", "hello", "port") == "8080\n"
    assert ok(d, "get", "hello", "name.first") == "Ada\n"
    # The hook's own `ctl set` went into the same transaction and was committed with it.
    doc = json.loads(ok(d, "get", "hello", "-d"))
    assert doc == {"port": 8080, "seen-port": 8080, "name": {"first": "Ada"}, "tags": [1, 2], "motto": "hello world"}
    table = ok(d, "get", "hello").splitlines()
    assert table[0].split() == ["Key", "Value"] and ["name", "{...}"] in [r.split() for r in table]

    # The hook refuses: the change fails, and nothing of it is kept (not even name.last).
    p = d.cli("set", "hello", "port=eighty", "name.last=Lovelace")
    assert p.returncode == 1
    assert "port must be a number, not eighty" in p.stderr, p.stderr
    assert p.stdout.splitlines()[0] == 'Change 3 (configure-snap): Change configuration of "hello" snap - Error'
    assert p.stdout.splitlines()[1].startswith('Error   Run configure hook of "hello" snap'), p.stdout
    assert p.stderr == ('error: cannot perform the following tasks:\n- Run configure hook of "hello" snap (run hook '
                        "'configure': exit status 1: port must be a number, not eighty)\n")
    assert json.loads(ok(d, "get", "hello", "-d")) == doc
    with d.client() as c:
        chg = c.changes(select="all")[-1]
        assert (chg["kind"], chg["status"]) == ("configure-snap", "Error")

    ok(d, "unset", "hello", "name.first", "motto")
    assert json.loads(ok(d, "get", "hello", "name", "-d")) == {"name": {}}
    p = d.cli("get", "hello", "motto")
    assert (p.returncode, p.stderr) == (1, "error: snap 'hello' has no 'motto' configuration option\n")
    p = d.cli("set", "hello", "Bad=1")
    assert p.returncode == 1 and "invalid option name: 'Bad'" in p.stderr
    p = d.cli("set", "hello", "novalue")
    assert p.returncode == 2 and "want key=value" in p.stderr


def test_system_settings(daemon: DaemonProcess) -> None:
    d = daemon
    ok(d, "set", "system", "refresh.timer=mon,4:00-7:00", "refresh.hold=forever")
    assert ok(d, "get", "system", "refresh.timer") == "mon,4:00-7:00\n"
    p = d.cli("set", "system", "refresh.retain=99")
    assert p.returncode == 1
    assert p.stderr == ("error: cannot set system option 'refresh.retain' to 99: it must be a whole number from 2 to "
                        "20\n")
    p = d.cli("set", "system", "colour=red")
    assert p.returncode == 1 and "not a system option" in p.stderr
    assert json.loads(ok(d, "get", "system", "-d")) == {"refresh": {"timer": "mon,4:00-7:00", "hold": "forever"}}


def test_the_conf_api(daemon: DaemonProcess,
                      as_nobody: Callable[..., subprocess.CompletedProcess[str]]) -> None:  # noqa: F811
    d = daemon
    install(d, "hello", hooks={"configure": "#!/bin/sh\n"})
    with d.client() as c:
        assert c.conf("hello") == {}
        cid = c.set_conf("hello", {"a": {"b": 1}, "c": None})
        assert d.wait_change(cid, lambda chg: chg["ready"])["status"] == "Done"
        assert c.conf("hello", ["a.b", "a"]) == {"a.b": 1, "a": {"b": 1}}
        with pytest.raises(ApiError) as e:
            c.conf("hello", ["nope"])
        assert (e.value.status_code, e.value.kind) == (400, "option-not-found")
        with pytest.raises(ApiError) as e:
            c.conf("world")
        assert (e.value.status_code, e.value.kind) == (404, "snap-not-installed")
    status, env = raw(d, "PUT", "/v2/snaps/hello/conf", b"[1]")
    assert (status, env["result"]["kind"]) == (400, "bad-request")
    status, env = raw(d, "PUT", "/v2/snaps/hello/conf", b"{}")
    assert (status, env["result"]["message"]) == (400, "cannot change the configuration: the body names no options")
    p = as_nobody("set", "hello", "a=2", "--state-dir", str(d.state_dir))
    assert p.returncode == 1 and "access denied: PUT /v2/snaps/hello/conf needs root" in p.stderr
    assert as_nobody("get", "hello", "a.b", "--state-dir", str(d.state_dir)).stdout == "1\n"  # anyone may read


#: WAIT_FOR_GO, once $SNAP_COMMON/hold exists, hands its token out, then waits for the test to let it finish.
WAIT_FOR_GO = """#!/bin/sh
[ -e "$SNAP_COMMON/hold" ] || exit 0
echo "$SNAP_COOKIE" > "$SNAP_COMMON/token.partial" && mv "$SNAP_COMMON/token.partial" "$SNAP_COMMON/token"
i=0
while [ ! -e "$SNAP_COMMON/go" ]; do sleep 0.05; i=$((i+1)); [ $i -gt 1200 ] && exit 3; done
exit 0
"""


@pytest.mark.heavy
def test_ctl_acts_for_its_hooks_snap_only_from_any_user_until_the_hook_ends(
        daemon: DaemonProcess, nobody: OtherUser) -> None:
    d = daemon
    install(d, "world", hooks={"configure": "#!/bin/sh\n"})
    ok(d, "set", "world", "secret=s3cret")
    install(d, "hello", hooks={"configure": WAIT_FOR_GO})
    common = d.root / "var" / "snap" / "hello" / "common"
    (common / "hold").touch()  # from now on the hook hands out its token and waits
    p = d.cli("set", "hello", "mine=1", "--no-wait")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    token = wait_for_file(common / "token")

    def ctl(*args: str, cookie: str = token) -> subprocess.CompletedProcess[str]:
        env = nobody.env(SNAP_COOKIE=cookie, OVERLORD_SOCKET=str(d.socket))
        return nobody.run("-m", "overlord", "ctl", *args, env=env, cwd=nobody.scratch("ctl"), timeout=START_TIMEOUT)

    # As another user, with the hook's token: the hook's own snap, and the values being set.
    p = ctl("get", "mine")
    assert (p.returncode, p.stdout) == (0, "1\n"), p.stderr
    p = ctl("get", "secret")
    assert (p.returncode, p.stdout) == (0, ""), p.stderr  # world's secret is not hello's
    p = ctl("get", "-d", "secret", "mine")
    assert json.loads(p.stdout) == {"mine": 1}
    assert ctl("set", "other.x=two").returncode == 0
    p = ctl("frobnicate")
    assert (p.returncode, p.stderr) == (1, "error: cannot run ctl: unknown command 'frobnicate' (get, set, unset, "
                                           "start, stop or restart)\n")
    p = ctl("set", "novalue")
    assert p.returncode == 1 and "want key=value" in p.stderr
    p = ctl("get", "mine", cookie="forged-" + token[7:])
    assert (p.returncode, p.stderr) == (1, "error: cannot run ctl: its context token is not valid (only a running "
                                           "hook has one)\n")
    (common / "go").touch()
    chg = d.wait_change(cid, lambda chg: chg["ready"])
    assert chg["status"] == "Done", chg["err"] if "err" in chg else chg["tasks"]
    # The hook ended: its token is worth nothing now.
    p = ctl("get", "mine")
    assert p.returncode == 1 and "not valid" in p.stderr
    assert json.loads(ok(d, "get", "hello", "-d")) == {"mine": 1, "other": {"x": "two"}}
    assert json.loads(ok(d, "get", "world", "-d")) == {"secret": "s3cret"}


def test_ctl_outside_a_hook_says_so() -> None:
    p = subprocess.run(overlord_cmd("ctl", "get", "x"), capture_output=True, text=True, env=child_env(),
                       timeout=START_TIMEOUT)
    assert (p.returncode, p.stderr) == (1, "error: cannot run ctl: it is for hooks ($SNAP_COOKIE and "
                                           "$OVERLORD_SOCKET are not set)\n")


def test_a_daemon_killed_during_a_configure_hook_runs_it_again_and_commits_once(daemon: DaemonProcess) -> None:
    d = daemon
    install(d, "hello", hooks={"configure": WAIT_FOR_GO})
    common = d.root / "var" / "snap" / "hello" / "common"
    (common / "hold").touch()
    p = d.cli("set", "hello", "mine=1", "--no-wait")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    first = wait_for_file(common / "token")
    (common / "token").unlink()
    d.kill()  # SIGKILL, in the middle of the hook
    d.start()
    second = wait_for_file(common / "token")  # the task ran again: a new hook, a new token
    assert second != first
    with d.client() as c:
        with pytest.raises(ApiError) as e:
            c.ctl(first, ["get", "mine"])
        assert e.value.status_code == 403
        assert c.ctl(second, ["get", "mine"]) == {"stdout": "1\n", "stderr": ""}
    (common / "go").touch()  # both the orphan of the first run and the second one finish
    chg = d.wait_change(cid, lambda chg: chg["ready"])
    assert chg["status"] == "Done", chg.get("err")
    assert json.loads(ok(d, "get", "hello", "-d")) == {"mine": 1}
