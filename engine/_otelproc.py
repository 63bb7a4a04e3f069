# SPDX-License-Identifier: GPL-3.0-or-later
"""Tracing in a helper process: the spans of runs made and exported by the OpenTelemetry SDK in a process of the
engine's own, when the OTEL_* variables alone ask for traces.

The SDK costs a span some 1.5 us of CPU to make and hand to its batch
processor, and its OTLP exporter some 25 us more to encode it, all under the
GIL of the process that makes it: more than a busy runner's 5 % (W1: 50 to
75 us of CPU a task; docs/performance.md, "Timings and traces"). Here the
engine's process only notes the runs (engine._otelnotes) and its tracing
thread sends them, a batch at a time, as frames of a pickle down a pipe to
the helper: `python -P engine/_otelspans.py FD`, which imports nothing of
the engine, configures the SDK from the same variables and makes the same
spans (engine._otelspans.main).

What keeps it from hurting the engine:
- the runner never waits for it: runs wait for the tracing thread (at most
  engine._otelnotes.WAITING, then dropped and counted), and only that
  thread writes to the pipe (a full pipe blocks it alone);
- the helper ends at the end of its input: when the engine closes the pipe
  (close: the rest handed over, flushed, CLOSE_WAIT seconds at most, then
  killed), or when the engine's process dies (its end of the pipe closes
  with it), never an orphan; it ignores SIGINT and SIGTERM for that reason;
- a helper that dies, fails to start or does not answer is logged once (a
  warning of engine.tracing), and the engine goes on untraced;
- a process that forks (without exec) leaves its tracer behind in the
  child: there the tracer is ended and its ends of the pipes closed, so one
  helper exports, and it still sees the end of its input when the engine
  ends (the pipes' ends are not inherited across exec).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._otelnotes import TracerBase

if TYPE_CHECKING:
    from .timings import Run
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How long the helper may take to start (import the SDK, make its provider), in seconds.
START_WAIT = 60.0
#: How long a flush waits for the helper to export, and close for it to end, in seconds (the OTLP exporter's own
#: timeout is 10 s a batch).
FLUSH_WAIT = 60.0
CLOSE_WAIT = 30.0
#: The helper: a module that imports nothing of the engine, run by its path.
HELPER = Path(__file__).with_name("_otelspans.py")

_tracers: weakref.WeakSet[ProcessTracer] = weakref.WeakSet()


class ProcessTracer(TracerBase):
    """ProcessTracer hands task runs over to a helper process that makes and exports their spans.

    task_run notes a run (lock held); submit hands the runs a commit wrote
    to the tracer's thread, which writes them to the helper.
    """

    def __init__(self, w: UnitOfWork) -> None:
        super().__init__(w)
        read_end, self._pipe = os.pipe()  # the runs, to the helper's standard input
        self._answers, answer_end = os.pipe()  # its answers
        # The helper imports what this process can, from where it can (a pex or zipapp puts its packages on
        # sys.path at run time), in the same order.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._proc = subprocess.Popen([sys.executable, "-P", str(HELPER), str(answer_end)], env=env,
                                          stdin=read_end, pass_fds=(answer_end,), close_fds=True)
        except BaseException:
            os.close(self._pipe)
            os.close(self._answers)
            raise
        finally:
            os.close(read_end)
            os.close(answer_end)
        #: pid is the helper's process id.
        self.pid = self._proc.pid
        #: helper_cpu_seconds is the CPU time the helper spent since it was ready, as of its last answer; and
        #: helper_start_cpu_seconds what it spent to start (bench.timings shows them).
        self.helper_cpu_seconds = 0.0
        self.helper_start_cpu_seconds = 0.0
        self._ready = False
        self._buffer = b""
        self._warned = False
        _tracers.add(self)
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """flush waits until the spans of the runs submitted so far are made and exported by the helper."""
        return super().flush(timeout) and not self.ended

    def hand(self, runs: list[Run], flush: bool, closing: bool) -> bool:
        try:
            if not self._ready:
                first = self._answer(START_WAIT)
                if not first.startswith("ready "):
                    return self._gone(f"could not start: {first.partition(' ')[2]}" if first else "did not start")
                self.helper_start_cpu_seconds = float(first.split()[1])
                self._ready = True
            if runs:
                # Each run's end as a POSIX timestamp: a third of what pickling a datetime costs.
                self._send(("runs", [(r[0], r[1], r[2], r[3], r[4].timestamp(), r[5], r[6]) for r in runs]))
            if flush:
                self._send(("flush",))
                self._answered("flushed", FLUSH_WAIT)
            if closing:
                self._send(("close",))
                os.close(self._pipe)
                self._pipe = -1
                self._answered("closed", CLOSE_WAIT)
        except _Gone as e:
            return self._gone(str(e))
        except OSError as e:  # BrokenPipeError: the helper died
            return self._gone(f"{type(e).__name__}: {e}")
        finally:
            self.cpu_seconds = time.thread_time()
        return True

    def _send(self, message: tuple[Any, ...]) -> None:
        body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(body).to_bytes(4, "big") + body)
        while view:
            view = view[os.write(self._pipe, view):]

    def _answered(self, word: str, timeout: float) -> None:
        line = self._answer(timeout)
        if not line.startswith(word + " "):
            raise _Gone(f"answered {line!r}" if line else "did not answer")
        self.helper_cpu_seconds = float(line.split()[1]) - self.helper_start_cpu_seconds

    def _answer(self, timeout: float) -> str:
        """_answer is the helper's next line, or "" when it ended or did not answer within timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                return ""
            part = os.read(self._answers, 4096)
            if not part:
                return ""
            self._buffer += part
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def _gone(self, why: str) -> bool:
        """_gone ends tracing: the helper is ended (killed if it lives on), one warning is logged, and this tracer
        leaves the engine, which goes on untraced."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
        try:
            code = self._proc.wait(CLOSE_WAIT if self._ready else 0.5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        if not self._warned:
            self._warned = True
            log.warning("the tracing helper process (pid %d) %s (exit code %s); going on without traces",
                        self.pid, why, code)
        timings = self._w.timings
        if timings.tracer is self:
            timings.tracer = None
        return False

    def close(self) -> None:
        """close hands the runs left over to the helper, which ends the open change spans, exports what is left
        and ends; CLOSE_WAIT seconds at most, then it is killed."""
        with self._mu:
            self._closing = True
        self._hurry.set()
        self._wake.set()
        self._thread.join(CLOSE_WAIT + 5)
        if self._thread.is_alive():  # the helper does not read its input: the thread is stuck writing to it
            self._proc.kill()
            self._thread.join(CLOSE_WAIT)
        if self._proc.poll() is None:
            try:
                self._proc.wait(CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._answers >= 0:
            os.close(self._answers)
            self._answers = -1
        _tracers.discard(self)

    def forked(self) -> None:
        """forked ends this tracer in a child made by fork (without exec): the helper is its parent's alone."""
        self.ended = True
        self._mu = threading.Lock()  # a thread of the parent may have held it: none runs here
        for fd in (self._pipe, self._answers):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pipe = self._answers = -1
        self._proc.returncode = 0  # not this process's child: never to be waited for here
        timings = self._w.timings
        if timings.tracer is self:
            timings.tracer = None


class _Gone(Exception):
    """_Gone says that the helper did not answer as it should."""


def _after_fork() -> None:
    for tracer in list(_tracers):
        tracer.forked()
    _tracers.clear()


os.register_at_fork(after_in_child=_after_fork)
