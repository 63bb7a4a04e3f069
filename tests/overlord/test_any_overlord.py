# SPDX-License-Identifier: GPL-3.0-or-later
"""The daemon is a building block: any overlord gets the same API and change verbs; daemons share PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlord.client import ApiError, Client
from tests.support.daemon import REPO, START_TIMEOUT, DaemonProcess, child_env, overlord_cmd, short_tempdir

EXAMPLE = REPO / "examples" / "deployer"


class DeployerDaemon:
    """DeployerDaemon runs the example's own daemon (python -m deployer.daemon) in a real process."""

    def __init__(self, base: Path) -> None:
        self.state_dir = base / "state"
        self.target = base / "www"
        self.target.mkdir()
        self.log = base / "deployer.log"
        notify = base / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify))
        self._notify.settimeout(START_TIMEOUT)
        env = child_env(NOTIFY_SOCKET=str(notify))
        env["PYTHONPATH"] = f"{EXAMPLE}{os.pathsep}{env['PYTHONPATH']}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "deployer.daemon", "--state-dir", str(self.state_dir),
                                          "--target", str(self.target)], stdout=log, stderr=log, env=env, cwd=base)
        try:
            while "READY=1" not in self._notify.recv(4096).decode().split("\n"):
                pass
        except TimeoutError:
            pytest.fail(f"the deployer did not start:\n{self.log.read_text()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(overlord_cmd(*args, "--state-dir", str(self.state_dir)), capture_output=True,
                              text=True, env=child_env(), timeout=START_TIMEOUT)

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(START_TIMEOUT)
        self._notify.close()
        return code


@pytest.fixture
def deployer() -> Iterator[DeployerDaemon]:
    base = short_tempdir()
    d = DeployerDaemon(base)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()


def test_a_daemon_of_its_own_serves_its_route_and_the_change_verbs(deployer: DeployerDaemon) -> None:
    (deployer.target / "index.html").write_text("old")
    with Client(deployer.state_dir) as c:
        env = c.request("POST", "/v2/deploy", body={"files": {"index.html": "new", "app.js": "js"}})
        assert env["type"] == "async"
        cid = str(env["change"])
        with pytest.raises(ApiError) as e:  # the errors are the daemon's: one line, a kind, a status
            c.request("POST", "/v2/deploy", body={"files": {"../x": "no"}})
        assert (e.value.status_code, e.value.kind) == (400, "bad-request")
        with pytest.raises(ApiError) as e:  # the snap system's routes are not served here
            c.request("GET", "/v2/snaps")
        assert e.value.status_code == 404

    watch = deployer.cli("watch", cid)
    assert watch.returncode == 0, watch.stderr
    assert (deployer.target / "index.html").read_text() == "new"
    changes = deployer.cli("changes")
    assert changes.returncode == 0, changes.stderr
    assert "Deploy app.js, index.html" in changes.stdout and "Done" in changes.stdout
    tasks = deployer.cli("tasks", cid, "--json")
    assert sorted(t["kind"] for t in json.loads(tasks.stdout)["tasks"]) == ["deploy-file"] * 2 + ["stage-file"] * 2
    with Client(deployer.state_dir) as c:
        info = c.system_info()
        assert info["target"] == str(deployer.target)
        assert c.request("GET", "/v2/deployed")["result"] == {
            "app.js": hashlib.sha256(b"js").hexdigest(), "index.html": hashlib.sha256(b"new").hexdigest()}
    assert deployer.stop() == 0


def test_daemons_on_several_hosts_share_one_postgresql_database(pg_url: str) -> None:
    secret = pg_url.replace("postgres@", "postgres:sekrit@", 1)  # the test server trusts local users: ignored
    assert "sekrit" in secret
    a, b = DaemonProcess(short_tempdir(), "--db-url", secret), DaemonProcess(short_tempdir(), "--db-url", pg_url)
    a.start()
    try:
        b.start()
        try:
            assert not (a.state_dir / "state.db").exists()
            with a.client() as c:  # where the state is, without the password
                shown = c.system_info()["database"]
                assert shown.startswith("postgresql+psycopg://postgres:***@"), shown
            cid = a.new_change("Made through a", {"kind": "gated", "summary": "Wait", "total": 3})
            with b.client() as c:  # the change made through one daemon is seen through the other
                assert c.change(cid)["summary"] == "Made through a"
            a.open_gate()
            b.open_gate()
            watch = b.cli("watch", cid)
            assert watch.returncode == 0, watch.stderr + b.log_text()
            with a.client() as c:
                assert c.change(cid)["status"] == "Done"
        finally:
            assert b.stop() == 0
    finally:
        assert a.stop() == 0


#: SYSTEM_READS are GET requests of the snap system's endpoints, one per resource that needs one of its managers.
SYSTEM_READS = ["/v2/snaps", "/v2/snaps/hello", "/v2/find?q=hello", "/v2/find?select=refresh",
                "/v2/assertions/account", "/v2/connections", "/v2/interfaces", "/v2/seed", "/v2/snaps/hello/conf",
                "/v2/apps", "/v2/logs"]

PLAIN_DAEMON = """
import sys
from pathlib import Path
from engine import Overlord
from overlord.daemon import ENDPOINTS, Daemon
state = Path(sys.argv[1])
raise SystemExit(Daemon(lambda: Overlord(root=state), socket_path=state / "overlord.socket",
                        endpoints=ENDPOINTS).run())
"""


def test_the_snap_systems_endpoints_under_another_overlord_answer_one_404(tmp_path: Path) -> None:
    state = short_tempdir()
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
        ready.bind(str(notify))
        ready.settimeout(START_TIMEOUT)
        log = tmp_path / "daemon.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", PLAIN_DAEMON, str(state)], stdout=out, stderr=out,
                                    env=child_env(NOTIFY_SOCKET=str(notify)))
        try:
            while "READY=1" not in ready.recv(4096).decode().split("\n"):
                pass
            answers = set()
            with Client(state) as c:
                for path in SYSTEM_READS:
                    with pytest.raises(ApiError) as e:
                        c.request("GET", path)
                    answers.add((e.value.status_code, e.value.kind, str(e.value)))
                assert c.changes(select="all") == []  # the core endpoints answer as ever
            assert answers == {(404, "not-found", "cannot find this resource: the daemon's overlord is not a snap "
                                                  "system (Overlord, not SystemOverlord)")}, answers
        finally:
            proc.terminate()
            assert proc.wait(START_TIMEOUT) == 0, log.read_text()
