# SPDX-License-Identifier: GPL-3.0-or-later
"""Tracing in a helper process: the spans of runs made from the database's rows and exported by the OpenTelemetry
SDK in a process of the engine's own, when the OTEL_* variables alone ask for traces.

The SDK costs a span some 1.5 us of CPU to make and hand to its batch
processor, and its OTLP exporter some 25 us more to encode it, all under the
GIL of the process that makes it: more than a busy runner's 5 % (W1: 50 to
75 us of CPU a task; docs/performance.md, "Timings and traces"). Noting the
runs for a helper and sending them down a pipe still cost some 2.5 us a
run. Here the engine's process does nothing per run beyond writing its
timings (engine.timings, which it does anyway): the helper, `python -P
engine/_otelrows.py FD`, which imports nothing of the engine, reads the rows
of task_timing_batches from the database itself (every POLL seconds, and
when asked to flush) and makes the same spans. This process hands it, at
start, where the database is and the last row already there; at a flush,
the runs waiting for a batch are committed first, and the helper answers
once it exported what is written; at close, the same, then it ends.

What keeps it from hurting the engine:
- the runner never waits for it: nothing of a run goes through it;
- the helper ends at the end of its input: when the engine closes the pipe
  (close: CLOSE_WAIT seconds at most, then killed), or when the engine's
  process dies (its end of the pipe closes with it; the helper still reads
  the runs committed until then), never an orphan; it ignores SIGINT and
  SIGTERM for that reason;
- a helper that dies, fails to start or does not answer is logged once (a
  warning of engine.tracing, by a thread that waits for it), and the engine
  goes on untraced;
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
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EngineError

if TYPE_CHECKING:
    from .state import State
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How long the helper may take to start (import the SDK, make its provider, open the database), in seconds.
START_WAIT = 60.0
#: How long a flush waits for the helper to export, and close for it to end, in seconds (the OTLP exporter's own
#: timeout is 10 s a batch).
FLUSH_WAIT = 60.0
CLOSE_WAIT = 30.0
#: The helper: a module that imports nothing of the engine, run by its path.
HELPER = Path(__file__).with_name("_otelrows.py")

_tracers: weakref.WeakSet[ProcessTracer] = weakref.WeakSet()


def database_of(w: UnitOfWork) -> tuple[dict[str, str], str] | None:
    """database_of is where the helper finds w's database ({"sqlite": its file} or {"postgresql": a libpq URL}) and
    what names it in trace ids (the file's real path; the URL without user and password); None for a private
    in-memory database, which no other process can read."""
    store: Any = w.store
    raw = getattr(store, "raw", None)
    if isinstance(raw, sqlite3.Connection):
        files = [row[2] for row in raw.execute("PRAGMA database_list").fetchall() if row[1] == "main"]
        if not files or not files[0]:
            return None
        return {"sqlite": files[0]}, os.path.realpath(files[0])
    url = getattr(getattr(store, "_engine", None), "url", None)
    if url is None or url.get_backend_name() != "postgresql":
        return None
    libpq = url.set(drivername="postgresql")
    return ({"postgresql": libpq.render_as_string(hide_password=False)},
            libpq.set(username=None, password=None).render_as_string())


class ProcessTracer:
    """ProcessTracer has a helper process make and export the spans of the runs written to the database.

    Nothing is noted per run (notes is False: engine.timings notes no span);
    flush and close make the helper catch up with what is committed.
    """

    #: notes says whether engine.timings notes each run for this tracer (the in-process tracer's does).
    notes = False

    def __init__(self, w: UnitOfWork, state: State, database: tuple[dict[str, str], str]) -> None:
        self._w, self._state = w, state
        with state:  # the runs written from now on are traced
            after = w.store.last_timing_batch()
        read_end, self._pipe = os.pipe()  # to the helper's standard input
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
        #: helper_exports says how the helper exports, once it is ready: "requests" (the runs' spans encoded from
        #: the rows, sent by the SDK's OTLP/HTTP exporter) or "batches" (ReadableSpans to the SDK's batch processor).
        self.helper_exports = ""
        #: cpu_seconds is what this process spent on tracing outside the runs (bench.timings: none here).
        self.cpu_seconds = 0.0
        #: ended says that the helper was told to end, or is gone.
        self.ended = False
        self._mu = threading.Lock()  # one exchange with the helper at a time
        self._ready = False
        self._buffer = b""
        self._warned = False
        self._closing = False
        _tracers.add(self)
        with contextlib.suppress(OSError):  # (died at once: the watch says so)
            self._send(("start", database[0], after, database[1], self._writer()))  # (the pipe holds it)
        threading.Thread(target=self._watch, name="engine-tracing", daemon=True).start()

    def _writer(self) -> str:
        """_writer names the engine's batches of runs (engine.timings: their "by")."""
        return str(self._w.timings.writer)

    def _watch(self) -> None:
        """_watch waits for the helper's end: one that ends before it was told to is reported (_gone)."""
        code = self._proc.wait()
        with self._mu:
            if not self._closing and not self.ended:
                why = "died" if self._ready else "did not start"
                if not self._ready:
                    line = self._answer(0.5)
                    if line.startswith("error "):
                        why = f"could not start: {line[6:]}"
                    elif line.startswith("ready "):
                        why = "died"
                self._gone(why, code)

    def flush(self, timeout: float | None = None) -> bool:
        """flush commits the runs waiting for a batch, and waits until the helper exported the spans of every run
        written so far; False if it is gone or did not within timeout (FLUSH_WAIT)."""
        self._write_runs()
        with self._mu:
            if self.ended:
                return False
            try:
                self._started()
                self._send(("flush",))
                self._answered("flushed", FLUSH_WAIT if timeout is None else timeout)
            except (_Gone, OSError) as e:
                self._gone(str(e) or type(e).__name__)
                return False
            return True

    def close(self) -> None:
        """close commits the runs waiting for a batch, and has the helper export their spans, end the open change
        spans and end; CLOSE_WAIT seconds at most, then it is killed."""
        self._write_runs()
        with self._mu:
            if self.ended:
                _tracers.discard(self)
                return
            self._closing = True
            try:
                self._started()
                self._send(("close",))
                os.close(self._pipe)
                self._pipe = -1
                self._answered("closed", CLOSE_WAIT)
            except (_Gone, OSError) as e:
                self._gone(str(e) or type(e).__name__)
            self.ended = True
            self._end_process()
        _tracers.discard(self)

    def _write_runs(self) -> None:
        """_write_runs commits the runs waiting for a batch (engine.timings), for the helper to read them."""
        try:
            with self._state:
                self._w.timings.write_all()
        except EngineError:
            pass  # the State is closed or refuses writes: what was committed is what the helper reads

    def _started(self) -> None:
        if not self._ready:
            first = self._answer(START_WAIT)
            if not first.startswith("ready "):
                raise _Gone(f"could not start: {first.partition(' ')[2]}" if first else "did not start")
            words = first.split()
            self.helper_start_cpu_seconds = float(words[1])
            self.helper_exports = words[2] if len(words) > 2 else ""
            self._ready = True

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
        if self._answers < 0:
            return ""
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

    def _gone(self, why: str, code: int | None = None) -> None:
        """_gone ends tracing (_mu held): the helper is ended (killed if it lives on), one warning is logged, and
        this tracer leaves the engine, which goes on untraced."""
        self.ended = True
        ended = self._end_process()
        code = ended if code is None else code
        if not self._warned:
            self._warned = True
            log.warning("the tracing helper process (pid %d) %s (exit code %s); going on without traces",
                        self.pid, why, code)
        timings = self._w.timings
        if timings.tracer is self:
            timings.tracer = None

    def _end_process(self) -> int | None:
        """_end_process closes this side's pipes and waits for the helper, CLOSE_WAIT seconds at most (it exports
        what is left), then kills it; its exit code."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
        try:
            code = self._proc.wait(CLOSE_WAIT if self._ready else 0.5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        if self._answers >= 0:
            os.close(self._answers)
            self._answers = -1
        return code

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
