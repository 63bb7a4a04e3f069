# SPDX-License-Identifier: GPL-3.0-or-later
"""A real daemon in a real process, on a real socket, and the overlord command run as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from overlord.cli import cli
from overlord.client import Client

REPO = Path(__file__).resolve().parents[2]  # tests/support/daemon.py
ROOT = REPO
#: How long a test waits for the daemon to start or stop: generous, machines are busy.
START_TIMEOUT = 60.0


def short_tempdir(prefix: str = "ovl-") -> Path:
    """short_tempdir makes a world-searchable temporary directory with a short path (sockets: 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def overlord_cmd(*args: str) -> list[str]:
    """overlord_cmd is the command line that runs `overlord ARGS` from this checkout."""
    return [sys.executable, "-m", "overlord", *args]


def child_env(**extra: str) -> dict[str, str]:
    """child_env is the environment of the processes tests start: the checkout importable, no colours."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "OVERLORD_STATE_DIR")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("COLUMNS", "100")
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


class DaemonProcess:
    """DaemonProcess runs `overlord daemon` with the test hook, and waits for it with sd_notify."""

    def __init__(self, base: Path, *extra_args: str) -> None:
        self.base = base
        self.state_dir = base / "state"
        self.root = base / "root"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "daemon.log"
        self.gate = self.state_dir / "gate"

    @property
    def socket(self) -> Path:
        return self.state_dir / "overlord.socket"

    def start(self, *, wait: bool = True) -> None:
        notify_path = self.base / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._notify.settimeout(START_TIMEOUT)
        cmd = overlord_cmd("daemon", "--state-dir", str(self.state_dir), "--root", str(self.root),
                           "--setup", "tests.support.daemon_hooks:setup", "--log-level", "debug", *self.extra_args)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.base,
                                         env=child_env(NOTIFY_SOCKET=str(notify_path)))
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        try:
            while True:
                msg = self._notify.recv(4096).decode()
                if "READY=1" in msg.split("\n"):
                    return
        except TimeoutError:
            pytest.fail(f"the daemon did not say READY=1 within {START_TIMEOUT} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        """log_tail is the end of the daemon's log, for a failure's message (what it did meanwhile)."""
        return "--- the daemon's log, its end ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(START_TIMEOUT)
        self._notify.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(START_TIMEOUT)
        self._notify.close()

    def client(self) -> Client:
        return Client(self.state_dir)

    def new_change(self, summary: str, *tasks: dict[str, Any], **extra: Any) -> str:
        """new_change makes a change of test tasks through the hook's endpoint; returns its id."""
        with self.client() as c:
            env = c.request("POST", "/v2/test/changes", body={"summary": summary, "tasks": list(tasks), **extra})
        assert env["type"] == "async"
        return str(env["change"])

    def wait_change(self, change_id: str, pred: Any, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """wait_change polls the change until pred(change) holds (an event seen by polling, with a timeout)."""
        import time

        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                chg = c.change(change_id)
                if pred(chg):
                    return chg
                if time.monotonic() > deadline:
                    pytest.fail(f"change {change_id} never got there: {chg}\n{self.log_tail()}")
                time.sleep(0.02)

    def open_gate(self) -> None:
        self.gate.touch()

    def cli(self, *args: str, check: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
        """cli runs `overlord ARGS --state-dir DIR` in a child process."""
        env = kw.pop("env", None) or child_env()
        return subprocess.run(overlord_cmd(*args, "--state-dir", str(self.state_dir)), capture_output=True,
                              text=True, env=env, timeout=START_TIMEOUT, check=check, **kw)


def invoke(*args: str, input: str | None = None) -> Result:
    """invoke runs the overlord command in this process (stdout in result.output)."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def run(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """run runs the overlord command as a process, to see its exit status and stderr as a user does."""
    return subprocess.run([sys.executable, "-c", "from overlord.cli import main; main()", *args], input=input,
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=120)
