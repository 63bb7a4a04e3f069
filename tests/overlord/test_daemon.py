# SPDX-License-Identifier: GPL-3.0-or-later
"""The daemon process: readiness, clean stops within the bound, one daemon per database, logs, bad starts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from overlord.client import Client
from overlord.samples import TEST_KEYS
from tests.support.daemon import START_TIMEOUT, DaemonProcess, child_env, overlord_cmd


def test_ready_is_sent_once_the_socket_answers(base: Path) -> None:
    d = DaemonProcess(base)
    d.start(wait=False)
    try:
        d.wait_ready()
        # No retry: when READY=1 arrives, the socket takes requests.
        with Client(d.state_dir) as c:
            assert c.system_info()["pid"] == d.proc.pid  # type: ignore[union-attr]
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_killing_tombs_and_removing_the_socket(base: Path, sig: int) -> None:
    d = DaemonProcess(base)
    d.start()
    cid = d.new_change("Long", {"kind": "gated", "summary": "Wait for the gate", "total": 100})
    d.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
    assert d.stop(sig) == 0
    assert not d.socket.exists()
    log = d.log_text()
    assert "stopping the overlord" in log and "INFO overlord.daemon: stopped" in log
    assert "Traceback" not in log
    # The handler was asked to stop (it retried), and the change goes on after a restart.
    d.start()
    d.open_gate()
    chg = d.wait_change(cid, lambda c: c["ready"])
    assert chg["status"] == "Done"
    assert d.stop() == 0


def test_stop_is_bounded_when_a_handler_ignores_its_tomb(base: Path) -> None:
    d = DaemonProcess(base, "--stop-timeout", "0.5")
    d.start()
    cid = d.new_change("Stubborn", {"kind": "stubborn", "summary": "Ignore the tomb"})
    d.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
    assert d.stop() == 0  # within the generous wait: the bound, not the handler, decides
    log = d.log_text()
    assert "did not return within 0.5 s; they will run again at the next start" in log


def test_stopping_is_notified(base: Path) -> None:
    d = DaemonProcess(base)
    d.start()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    seen = []
    while "STOPPING=1" not in seen:
        seen += d._notify.recv(4096).decode().split("\n")
    # It is stopping already: wait for it, without a second signal (one that lands while the interpreter
    # exits, after Python gave the signals back their default action, would kill it).
    code = d.proc.wait(START_TIMEOUT)
    d._notify.close()
    assert code == 0


def test_a_second_daemon_on_the_same_database_is_refused(daemon: DaemonProcess) -> None:
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(daemon.state_dir), "--root", str(daemon.root)),
                       capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert lines[-1].startswith("error: cannot open state database ") and "in use by process" in lines[-1]
    assert f"is in use by process {daemon.proc.pid}" in lines[-1]  # type: ignore[union-attr]
    assert all(line.startswith("error: ") for line in lines)
    with daemon.client() as c:  # the first one is untouched, socket and all
        assert c.system_info()["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_logs_are_plain_lines_on_stderr(daemon: DaemonProcess) -> None:
    with daemon.client() as c:
        c.changes()
    daemon.stop()
    log = daemon.log_text()
    assert f"INFO overlord.daemon: serving the API on {daemon.socket} (POST for root)" in log
    assert "\x1b[" not in log
    assert '"GET /v2/changes?select=in-progress HTTP/1.1" 200' in log  # access lines at --log-level debug


@pytest.mark.parametrize(("args", "message"), [
    (["--setup", "nosuchmodule:setup"], "cannot use setup hook 'nosuchmodule:setup': cannot import nosuchmodule"),
    (["--setup", "tests.support.daemon_hooks:nothing"], "has no function nothing"),
    (["--setup", "justaname"], "it must be MODULE:FUNCTION"),
    (["--group", "no-such-group-here"], "error: cannot use group 'no-such-group-here': there is no such group"),
    (["--trusted-key", str(TEST_KEYS / "root.pem")],
     f"error: cannot use trusted key {TEST_KEYS / 'root.pem'}: it is a private key; give its public half "
     "(NAME.pub.pem, as 'overlord create-key' writes it) and keep the private key off this machine\n"),
])
def test_bad_starts_are_one_line(base: Path, args: list[str], message: str) -> None:
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(base / "s"), "--root", str(base / "r"), *args),
                       capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)
    assert p.returncode == 1
    assert message in p.stderr and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
    assert not (base / "s" / "overlord.socket").exists()


def test_a_private_key_in_the_state_directory_is_refused_too(base: Path) -> None:
    (base / "s").mkdir()
    planted = base / "s" / "trusted-root.pub.pem"
    planted.write_bytes((TEST_KEYS / "root.pem").read_bytes())
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(base / "s"), "--root", str(base / "r")),
                       capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)
    assert (p.returncode, p.stderr) == (1, f"error: cannot use trusted key {planted}: it is a private key; give its "
                                           "public half (NAME.pub.pem, as 'overlord create-key' writes it) and keep "
                                           "the private key off this machine\n")


def test_something_else_at_the_socket_path_is_refused(base: Path) -> None:
    (base / "s").mkdir()
    (base / "s" / "overlord.socket").write_text("not a socket")
    p = subprocess.run(overlord_cmd("daemon", "--state-dir", str(base / "s"), "--root", str(base / "r")),
                       capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)
    assert p.returncode == 1
    assert "error: cannot listen on" in p.stderr and "it exists and is not a socket" in p.stderr
    assert (base / "s" / "overlord.socket").read_text() == "not a socket"


def test_the_database_is_private_and_the_socket_open(daemon: DaemonProcess) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o666
    assert (daemon.state_dir / "state.db").stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))


SHIM = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid, as systemd's own start does
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.executable, [sys.executable, "-m", "overlord", *sys.argv[2:]])
"""


def test_socket_activation_serves_the_socket_systemd_passes(base: Path) -> None:
    """A socket made by 'systemd' (here: the test) is served, and left in place at stop."""
    state = base / "state"
    state.mkdir()
    path = state / "overlord.socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    notify = base / "notify.sock"
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready.bind(str(notify))
    ready.settimeout(START_TIMEOUT)
    proc = subprocess.Popen([sys.executable, "-c", SHIM, str(listener.fileno()), "daemon", "--state-dir", str(state),
                             "--root", str(base / "root")], pass_fds=(listener.fileno(),),
                            env=child_env(NOTIFY_SOCKET=str(notify)), stderr=subprocess.PIPE, text=True)
    try:
        while "READY=1" not in ready.recv(4096).decode().split("\n"):
            pass
        with Client(state) as c:
            info = c.system_info()
        assert info["socket"] == str(path) and info["socket-activated"] is True
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
        ready.close()
    assert proc.returncode == 0, err
    assert path.exists()  # systemd's socket stays for the next activation
    assert f"serving the API on {path}" in err


def test_changes_started_and_resumed_are_logged_one_line_each(base: Path) -> None:
    d = DaemonProcess(base)
    d.start()
    try:
        waiting = d.new_change("Wait", {"kind": "gated", "summary": "Wait for the gate", "total": 5})
        d.wait_change(waiting, lambda c: c["tasks"][0]["status"] == "Doing")
        quick = d.new_change("Quick", {"kind": "quick", "summary": "Be quick"})
        d.wait_change(quick, lambda c: c["ready"])
        log = d.log_text()
        assert log.count(f"INFO overlord.daemon: started change {waiting} (test) for uid 0\n") == 1
        assert log.count(f"INFO overlord.daemon: started change {quick} (test) for uid 0\n") == 1
        assert d.stop() == 0
        d.start()  # the unready change is taken up again, and said so; the ready one is not
        log = d.log_text()
        assert log.count(f"INFO overlord.daemon: resuming change {waiting} (test): Doing\n") == 1
        assert f"resuming change {quick} " not in log
    finally:
        d.stop()
