# SPDX-License-Identifier: GPL-3.0-or-later
"""Access from the peer's credentials: real clients run as `nobody` may read, and may POST only when allowed."""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.other_user import OtherUser

from .conftest import START_TIMEOUT, DaemonProcess


@pytest.fixture(scope="module")
def as_nobody(nobody: OtherUser) -> Callable[..., subprocess.CompletedProcess[str]]:
    """as_nobody runs `overlord ARGS` as nobody, from the world-readable copy of the project (tests/other_user.py).

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
