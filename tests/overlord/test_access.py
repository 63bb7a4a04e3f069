# SPDX-License-Identifier: GPL-3.0-or-later
"""Access from the peer's credentials: real clients run as `nobody` may read, and may POST only when allowed."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from overlord.client import ApiError, Client, DaemonUnavailable
from tests.support.daemon import START_TIMEOUT, DaemonProcess
from tests.support.other_user import OtherUser


@pytest.fixture(scope="module")
def as_nobody(nobody: OtherUser) -> Callable[..., subprocess.CompletedProcess[str]]:
    """as_nobody runs `overlord ARGS` as nobody, from a world-readable copy (tests/support/other_user.py).

    The checkout may sit in a directory nobody cannot read (a clone under mktemp -d), so the copy is used.
    """
    scratch = nobody.scratch("overlord-cli")
    env = nobody.env(COLUMNS="100", OVERLORD_WARNINGS_FILE=str(scratch / "warnings.json"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return nobody.run("-m", "overlord", *args, env=env, cwd=scratch, timeout=START_TIMEOUT)

    return run


def test_anyone_reads_only_root_changes(as_nobody: Callable[..., subprocess.CompletedProcess[str]],
                                        daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Guarded", {"kind": "gated", "summary": "Wait", "total": 5})
    daemon.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
    state = ["--state-dir", str(daemon.state_dir)]
    p = as_nobody("changes", *state)
    assert p.returncode == 0, p.stderr
    assert "Guarded" in p.stdout
    p = as_nobody("abort", cid, *state)
    assert p.returncode == 1
    uid = pwd.getpwnam("nobody").pw_uid
    assert p.stderr == (f"error: cannot abort change {cid}: access denied: POST /v2/changes/{cid} needs root "
                        f"(uid {uid})\n")
    p = as_nobody("debug", "state", *state)  # the database itself is private
    assert (p.returncode, p.stderr) == (1, f"error: cannot read state database {daemon.state_dir / 'state.db'}: "
                                           "permission denied (the daemon keeps it private: try with sudo, or ask "
                                           "the daemon)\n")
    with daemon.client() as c:  # root may
        assert c.change(cid)["status"] == "Doing"
        c.abort(cid)
    daemon.wait_change(cid, lambda c: c["ready"])


def test_the_configured_group_may_change_things(as_nobody: Callable[..., subprocess.CompletedProcess[str]],
                                                base: Path) -> None:
    gid = pwd.getpwnam("nobody").pw_gid
    d = DaemonProcess(base, "--group", str(gid))
    d.start()
    try:
        cid = d.new_change("Group", {"kind": "gated", "summary": "Wait", "total": 5})
        d.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
        p = as_nobody("abort", cid, "--state-dir", str(d.state_dir))
        assert (p.returncode, p.stderr) == (0, "")
        assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Undone"
        with d.client() as c:
            assert c.system_info()["write-access"] == f"root or members of group {gid}"
    finally:
        d.stop()


def _nobody_with_groups(nobody: OtherUser, groups: str, *args: str) -> subprocess.CompletedProcess[str]:
    """_nobody_with_groups runs `overlord ARGS` as nobody holding the supplementary groups given (e.g. "4242")."""
    argv = ["setpriv", f"--reuid={nobody.uid}", f"--regid={nobody.gid}", f"--groups={groups}", nobody.python, "-s",
            "-m", "overlord", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=nobody.home, env=nobody.env(COLUMNS="100"),
                          timeout=START_TIMEOUT)


def test_group_write_access_comes_from_the_groups_the_process_holds(nobody: OtherUser, base: Path) -> None:
    d = DaemonProcess(base, "--group", "4242")  # a gid no group database knows: only the kernel's record counts
    d.start()
    try:
        state = ["--state-dir", str(d.state_dir)]
        cid = d.new_change("Group", {"kind": "gated", "summary": "Wait", "total": 5})
        p = _nobody_with_groups(nobody, "4243", "abort", cid, *state)
        assert (p.returncode, p.stderr) == (1, f"error: cannot abort change {cid}: access denied: POST "
                                               f"/v2/changes/{cid} needs root or members of group 4242 "
                                               f"(uid {nobody.uid})\n")
        p = _nobody_with_groups(nobody, "4243,4242", "abort", cid, *state)  # a supplementary group of the process
        assert (p.returncode, p.stderr) == (0, "")
        assert d.wait_change(cid, lambda c: c["ready"])["status"] == "Undone"
    finally:
        d.stop()


def _member_in_database_only() -> tuple[pwd.struct_passwd, grp.struct_group] | None:
    """_member_in_database_only finds a user the group database lists in a group that is not its primary one."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid != 0 and user.pw_gid != group.gr_gid:
                return user, group
    return None


def test_a_process_that_dropped_the_group_is_refused(nobody: OtherUser, base: Path) -> None:
    found = _member_in_database_only()
    if found is None:
        pytest.skip("no user of this system is listed as a member of a group (/etc/group): nothing to drop")
    user, group = found
    d = DaemonProcess(base, "--group", group.gr_name)
    d.start()
    try:
        cid = d.new_change("Dropped", {"kind": "gated", "summary": "Wait", "total": 5})
        # The user's own process, with its groups cleared: the database still lists the user in the group.
        member = OtherUser(user.pw_uid, user.pw_gid, nobody.python, nobody.home)
        p = member.run("-m", "overlord", "abort", cid, "--state-dir", str(d.state_dir), timeout=START_TIMEOUT)
        assert p.returncode == 1
        assert p.stderr.endswith(f"needs root or members of group {group.gr_name} (uid {user.pw_uid})\n"), p.stderr
        with d.client() as c:
            assert c.change(cid)["status"] == "Doing"
            c.abort(cid)
    finally:
        d.stop()


def test_the_uid_the_daemon_runs_as_may_change_things(nobody: OtherUser) -> None:
    home = nobody.scratch("own-daemon")
    state, root = home / "state", home / "root"
    for p in (state, root):
        p.mkdir()
        os.chown(p, nobody.uid, nobody.gid)
    daemon = subprocess.Popen(nobody.command("-m", "overlord", "daemon", "--state-dir", str(state), "--root",
                                             str(root)), cwd=home, env=nobody.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # no NOTIFY_SOCKET for nobody here: wait for the socket to answer
            try:
                with Client(state) as c:
                    info = c.system_info()
                break
            except DaemonUnavailable:
                assert daemon.poll() is None and time.monotonic() < deadline, daemon.stderr
                time.sleep(0.05)
        assert info["write-access"] == f"root or uid {nobody.uid}"
        # Aborting a change that does not exist: "not found" once past the access check, "access denied" before.
        p = nobody.run("-m", "overlord", "abort", "99", "--state-dir", str(state), timeout=START_TIMEOUT)
        assert (p.returncode, p.stderr) == (1, "error: cannot find change with id '99'\n")
        other = OtherUser(nobody.uid - 1, nobody.gid - 1, nobody.python, nobody.home)
        p = other.run("-m", "overlord", "abort", "99", "--state-dir", str(state), timeout=START_TIMEOUT)
        assert p.stderr == (f"error: cannot abort change 99: access denied: POST /v2/changes/99 needs root or uid "
                            f"{nobody.uid} (uid {other.uid})\n")
        with Client(state) as c, pytest.raises(ApiError, match="cannot find change"):  # and root, as ever
            c.abort("99")
    finally:
        daemon.terminate()
        daemon.wait(START_TIMEOUT)
