# SPDX-License-Identifier: GPL-3.0-or-later
"""Access from the peer's credentials: real clients run as `nobody` may read, and may POST only when allowed."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import REPO, START_TIMEOUT, DaemonProcess, short_tempdir

#: What the command line needs to talk to the daemon (it loads the engine only for database commands).
CLIENT_PACKAGES = ("click", "rich", "markdown_it", "mdurl", "pygments", "httpx", "httpcore", "h11", "anyio",
                   "sniffio", "idna", "certifi", "typing_extensions")


def _nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("running a client as another user needs root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' on this machine")


@pytest.fixture(scope="module")
def as_nobody() -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """as_nobody runs `overlord ARGS` as nobody, from a world-readable copy of the packages it needs.

    The checkout may sit in a directory nobody cannot read, so the packages are copied.
    """
    user = _nobody()
    lib = short_tempdir("ovl-lib-")
    shutil.copytree(REPO / "overlord", lib / "overlord", ignore=shutil.ignore_patterns("__pycache__"))
    for name in CLIENT_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, lib / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, lib / origin.name)
    for path in [lib, *lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib), "HOME": str(lib), "COLUMNS": "100",
           "OVERLORD_WARNINGS_FILE": str(lib / "warnings.json"), "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "overlord", *args], capture_output=True, text=True, env=env,
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[], timeout=START_TIMEOUT, cwd=lib)

    python = ""
    reasons = []
    for candidate in (sys.executable, shutil.which("python3") or "/usr/bin/python3"):
        probe = subprocess.run([candidate, "-c", "import sys, overlord.cli; assert sys.version_info >= (3, 11)"],
                               capture_output=True, text=True, env=env, user=user.pw_uid, group=user.pw_gid,
                               extra_groups=[], timeout=START_TIMEOUT, cwd=lib)
        if probe.returncode == 0:
            python = candidate
            break
        reasons.append(f"{candidate}: {probe.stderr.strip().splitlines()[-1:] or probe.returncode}")
    if not python:
        shutil.rmtree(lib, ignore_errors=True)
        pytest.skip(f"no Python 3.11+ that nobody can run with the copied packages ({'; '.join(reasons)})")
    yield run
    shutil.rmtree(lib, ignore_errors=True)


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
