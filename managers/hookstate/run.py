# SPDX-License-Identifier: GPL-3.0-or-later
"""run_hook: one hook as a real process, in a process group of its own, killed as a group at its timeout.

The hook gets exactly the environment it is given (nothing of the
daemon's), no standard input, no descriptor of the daemon (close_fds), and
its standard output and error merged into one pipe, of which the last
OUTPUT_LIMIT bytes are kept. When its timeout passes, or its task is asked
to stop (the tomb dies), the whole process group is sent SIGKILL.

The pipe is read until the hook exits and READ_GRACE more (a child it left
in the background may hold it), then the reader stops and the pipe is
closed: run_hook never returns with a thread still reading a descriptor
number it closed (which the daemon's next open file, socket or pipe would
reuse, and the reader would then read from).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import Tomb

from ..orphans import kill_group

log = logging.getLogger("managers.hookstate")

#: OUTPUT_LIMIT is how many bytes of a hook's output are kept (its last ones).
OUTPUT_LIMIT = 64 * 1024
#: POLL is how often a running hook's timeout and tomb are looked at, in seconds.
POLL = 0.05
#: READ_GRACE is how long the output is still read after the hook exits (a child it left may hold the pipe).
READ_GRACE = 1.0


@dataclass(frozen=True)
class HookRun:
    """HookRun is how a hook ended: its exit status (negative: a signal), its output, and why it was killed."""

    returncode: int
    output: str
    #: "timeout" or "stopped" when the daemon killed it, "" otherwise.
    killed: str = ""

    @property
    def ok(self) -> bool:
        """ok says whether the hook succeeded (exit status 0)."""
        return self.returncode == 0 and not self.killed

    def problem(self, timeout: float) -> str:
        """problem tells in words why the hook failed."""
        if self.killed == "timeout":
            why = f"killed after its timeout of {timeout:g} s"
        elif self.killed == "stopped":
            why = "killed: its task was asked to stop"
        elif self.returncode < 0:
            why = f"killed by signal {-self.returncode}"
        else:
            why = f"exit status {self.returncode}"
        tail = " ".join(self.output.split())
        if len(tail) > 400:
            tail = "..." + tail[-400:]
        return f"{why}: {tail}" if tail else why


def run_hook(argv: list[str], env: dict[str, str], cwd: Path, timeout: float, tomb: Tomb,
             started: Callable[[int], None] | None = None) -> HookRun:
    """run_hook runs argv until it exits, its timeout passes or tomb dies; OSError if it cannot be started.

    started, if given, is called with the pid (the process group) as soon as the process runs.
    """
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    assert proc.stdout is not None
    if started is not None:
        try:
            started(proc.pid)
        except BaseException:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            raise
    buf = bytearray()
    lock = threading.Lock()
    stop = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        with contextlib.suppress(OSError, ValueError):
            while not stop.is_set():
                if not poller.poll(POLL * 1000):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                with lock:
                    buf.extend(chunk)
                    if len(buf) > OUTPUT_LIMIT:
                        del buf[:len(buf) - OUTPUT_LIMIT]

    reader = threading.Thread(target=read, name=f"hook-output-{proc.pid}", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    killed = ""
    while True:
        try:
            code = proc.wait(POLL)
            break
        except subprocess.TimeoutExpired:
            pass
        if tomb.is_dying():
            killed = "stopped"
        elif time.monotonic() >= deadline:
            killed = "timeout"
        if killed:
            log.warning("killing hook %s (process group %d): %s", argv[0], proc.pid,
                        "its timeout passed" if killed == "timeout" else "its task is stopping")
            kill_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
            break
    reader.join(READ_GRACE)
    stop.set()  # a child left in the background holds the pipe: stop reading it before closing it
    reader.join()
    if killed:
        kill_group(proc.pid, signal.SIGKILL)  # anything of the group that escaped the first signal
    with contextlib.suppress(OSError):
        proc.stdout.close()
    with lock:
        output = bytes(buf).decode("utf-8", errors="replace")
    return HookRun(code, output, killed)
