# SPDX-License-Identifier: GPL-3.0-or-later
"""engine.testing: a kit for testing handlers and managers built on the engine.

- `FakeClock`: a clock to hand to `State.open`/`Overlord`, moved by hand.
- `temp_state()`: a State on a real SQLite file in a temporary directory.
- `settle(o, clock=...)`: snapd's Settle, skipping time on a fake clock.
- `run_change(o, chg)`: runs a change to its end, returns its tasks' statuses;
  `drive(runner, st, chg)` does the same with a TaskRunner alone.
- `check_idempotent(do, setup, ...)`: interrupts a handler at each of its
  writes to the state (and each call of a side effect you name), runs it
  again, and checks that it ends as a clean run does.

The pytest plugin `engine.pytest_plugin` (registered as a `pytest11` entry
point) gives the fixtures `engine_clock`, `engine_state` and
`engine_overlord`. Nothing here imports pytest. docs/testing.md tells how to
use it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tenacity

from .change import Change
from .overlord import Overlord
from .runs import Handler
from .state import State
from .status import Status
from .task import Task
from .taskrunner import TaskRunner
from .tomb import Tomb

__all__ = [
    "FakeClock",
    "IdempotenceError",
    "IdempotenceReport",
    "Interrupted",
    "check_idempotent",
    "drive",
    "run_change",
    "settle",
    "temp_state",
]

#: START is when a FakeClock starts unless told otherwise.
START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """FakeClock is a clock for a State under test: it stands still until advanced or set."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or START
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float = 0, **kw: float) -> datetime:
        """advance moves the clock on by seconds (and timedelta keywords: minutes=, hours=, days=)."""
        with self._lock:
            self.now += timedelta(seconds=seconds, **kw)
            return self.now

    def set(self, when: datetime) -> None:
        """set puts the clock at when, an aware datetime."""
        with self._lock:
            self.now = when


@contextlib.contextmanager
def temp_state(directory: str | Path | None = None, *, clock: Callable[[], datetime] | None = None) -> Iterator[State]:
    """temp_state gives a State on a new SQLite file in a temporary directory, closed and removed afterwards."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="engine-test-") as tmp:
        st = State.open(Path(tmp) / "state.db", clock=clock)
        try:
            yield st
        finally:
            st.close()


def settle(o: Overlord, *, clock: FakeClock | None = None, timeout: float = 60.0) -> None:
    """settle runs o's ensure passes until nothing is left to do (snapd's Settle).

    With a FakeClock (the one the overlord was opened with), time is skipped
    instead of waited for: a retry or an at-time n seconds away moves the
    clock n seconds on. It raises TimeoutError("Settle is not converging")
    when work keeps coming past timeout seconds of real time.
    """
    o.settle(timeout, advance=None if clock is None else clock.advance)


def run_change(o: Overlord, change: Change | str, *, clock: FakeClock | None = None,
               timeout: float = 60.0) -> list[tuple[str, Status]]:
    """run_change settles o and returns (kind, status) of each of the change's tasks, in order.

    The change may still be unready at the end (a task in Wait, a kind with
    no handler): the statuses say so.
    """
    if isinstance(change, str):
        cid = change
    else:
        with o.state:
            cid = change.id
    settle(o, clock=clock, timeout=timeout)
    with o.state:
        chg = o.state.change(cid)
        if chg is None:
            raise LookupError(f"cannot run change {cid}: no such change")
        return [(t.kind, t.status) for t in chg.tasks()]


class Interrupted(BaseException):
    """Interrupted cuts a handler short where check_idempotent stands for a crash.

    It is a BaseException so that a handler's `except Exception` cannot catch it.
    """


class IdempotenceError(AssertionError):
    """IdempotenceError means a handler, interrupted and run again, does not end as a clean run does."""


@dataclass
class IdempotenceReport:
    """IdempotenceReport says what check_idempotent tried: each interruption point and the clean end."""

    points: list[str] = field(default_factory=list)
    clean: dict[str, Any] = field(default_factory=dict)


class _Probe:
    """_Probe counts the points where a handler can be cut short, and cuts it at one of them."""

    def __init__(self, stop_at: int | None) -> None:
        self.stop_at = stop_at
        self.points: list[str] = []
        self.image: Callable[[], None] | None = None  # takes the crash image
        self.active = threading.local()
        self.cut = False

    def point(self, what: str) -> None:
        if not getattr(self.active, "on", False) or self.cut:
            return
        self.points.append(what)
        if self.stop_at is not None and len(self.points) == self.stop_at:
            self.cut = True
            if self.image is not None:
                self.image()
            raise Interrupted(what)


class _ProbedState(State):
    """_ProbedState is a State that tells the probe of each commit the handler under test makes."""

    probe: _Probe | None = None
    _probe_depth = 0

    def lock(self, begin: bool = False) -> None:
        super().lock(begin)
        self._probe_depth += 1

    def unlock(self) -> None:
        self._probe_depth -= 1
        super().unlock()
        if self._probe_depth == 0 and self.probe is not None:
            self.probe.point("a commit")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.unlock()
            return
        self._probe_depth -= 1
        super().__exit__(exc_type, exc, tb)


def _dump(st: State, cid: str, state_keys: Sequence[str], snapshot: Callable[[], Any] | None) -> dict[str, Any]:
    """_dump is what a run ends with: the change's tasks (status, data), its data, state keys, the world."""
    with st:
        chg = st.change(cid)
        assert chg is not None
        out: dict[str, Any] = {
            "change": {"status": chg.status.value, "data": _data(chg)},
            "tasks": [{"id": t.id, "kind": t.kind, "status": t.status.value, "data": _data(t)} for t in chg.tasks()],
            "state": {k: st.get(k, None) for k in state_keys},
        }
    if snapshot is not None:
        out["world"] = snapshot()
    return out


def _data(obj: Change | Task) -> dict[str, Any]:
    return {k: json.loads(json.dumps(obj.get(k))) for k in obj.keys()}  # noqa: SIM118 - no dict


def _image(src: Path, dst: Path) -> Callable[[], None]:
    """_image copies what src holds committed to dst: the file a SIGKILL at this moment would leave."""
    def take() -> None:
        with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as a, \
                contextlib.closing(sqlite3.connect(dst)) as b:
            a.backup(b)
    return take


def drive(runner: TaskRunner, st: State, change: Change | str, *, clock: FakeClock | None = None,
          timeout: float = 60.0) -> list[tuple[str, Status]]:
    """drive runs a TaskRunner alone (no Overlord) until the change is ready: snapd's ensureChange in tests.

    It runs ensure and wait while the runner asks for another pass now, or
    a pass still moves a task on (a Retry() for the next pass); with a
    FakeClock it also skips to a pass asked for later (a retry, an at-time).
    It returns (kind, status) of each of the change's tasks, and raises
    AssertionError, with the statuses, when the change is not ready and a
    pass changes nothing (a task in Wait, a kind nobody handles).
    The state's ensure_before hook keeps receiving what the runner asks.
    """
    asked: list[float] = []

    def hear(delay: float) -> None:
        asked.append(delay)
        if previous is not None:
            previous(delay)

    previous = st.set_ensure_before_hook(hear)
    with st:
        cid = change if isinstance(change, str) else change.id
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    seen: list[tuple[Status, int]] | None = None
    try:
        while not deadline.is_set():
            asked.clear()
            runner.ensure()
            runner.wait()
            with st:
                chg = st.change(cid)
                if chg is None:
                    raise LookupError(f"cannot drive change {cid}: no such change")
                tasks = chg.tasks()
                statuses = [(t.kind, t.status) for t in tasks]
                if chg.status.ready:  # not is_ready(): a task added to a ready change runs again
                    return statuses
                now = [(t.status, t.attempts) for t in tasks]
            soonest = min(asked, default=None)
            if soonest is not None and soonest > 0 and clock is not None:
                clock.advance(soonest)
            elif soonest is None or soonest > 0:
                if now == seen:
                    shown = " ".join(f"{kind}:{status.value}" for kind, status in statuses)
                    raise AssertionError(f"change {cid} is not ready and a pass changes nothing: {shown}")
                seen = now
        raise TimeoutError(f"cannot run change {cid} to its end within {timeout} s")
    finally:
        timer.cancel()
        st.set_ensure_before_hook(previous)


def check_idempotent(
    do: Handler,
    setup: Callable[[State], Task],
    *,
    undo: Handler | None = None,
    retry: tenacity.BaseRetrying | None = None,
    handlers: Mapping[str, tuple[Handler, Handler | None]] | None = None,
    side_effects: Sequence[tuple[object, str]] = (),
    snapshot: Callable[[], Any] | None = None,
    state_keys: Sequence[str] = (),
    timeout: float = 60.0,
) -> IdempotenceReport:
    """check_idempotent checks that do, cut short anywhere and run again, ends as a clean run does.

    setup(state) is called with the lock held on a new State each run: it
    makes the change, returns the task whose kind do handles, and puts the
    world outside the state back as it was at the start (the same files,
    say). The clean run counts the points where a crash could cut the
    handler: after each of its commits to the state, and after each call of
    a side effect named in side_effects ((module_or_object, "attribute")
    pairs, wrapped for the run). Then, for each point, a new run is cut
    there (Interrupted), the database is taken as a SIGKILL would leave it,
    opened again and run to the end; the change's tasks (status and data),
    its data, the state keys named in state_keys and snapshot() of the world
    must equal the clean run's. Otherwise IdempotenceError says at which
    point and what differs. handlers gives the (do, undo) of other kinds in
    the change. Time is a FakeClock: retries are skipped, not waited for.
    """
    clean_probe = _Probe(stop_at=None)
    clean = _run(do, undo, retry, handlers, setup, clean_probe, side_effects, snapshot, state_keys, timeout)
    report = IdempotenceReport(points=list(clean_probe.points), clean=clean)
    for n, what in enumerate(clean_probe.points, start=1):
        probe = _Probe(stop_at=n)
        end = _run(do, undo, retry, handlers, setup, probe, side_effects, snapshot, state_keys, timeout)
        if end != clean:
            diff = {k: (end.get(k), clean.get(k)) for k in clean.keys() | end.keys() if end.get(k) != clean.get(k)}
            lines = "; ".join(f"{k}: {got!r} instead of {want!r}" for k, (got, want) in sorted(diff.items()))
            raise IdempotenceError(f"handler {getattr(do, '__qualname__', do)!r} is not idempotent: cut short after "
                                   f"{what} (point {n} of {len(clean_probe.points)}) and run again, it ends with "
                                   f"{lines}")
    return report


def _run(do: Handler, undo: Handler | None, retry: tenacity.BaseRetrying | None,
         handlers: Mapping[str, tuple[Handler, Handler | None]] | None, setup: Callable[[State], Task],
         probe: _Probe, side_effects: Sequence[tuple[object, str]], snapshot: Callable[[], Any] | None,
         state_keys: Sequence[str], timeout: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="engine-idempotent-"))
    clock = FakeClock()
    try:
        st = _ProbedState.open(tmp / "state.db", clock=clock)
        assert isinstance(st, _ProbedState)
        with st:
            task = setup(st)
            kind, tid = task.kind, task.id
            chg = task.change()
            if chg is None:
                raise ValueError("cannot check a handler: setup must add its task to a change")
            cid = chg.id
        probe.image = _image(tmp / "state.db", tmp / "crash.db")

        def probed(t: Task, tomb: Tomb) -> Any:
            with t.state:
                other = t.id != tid
            if other:
                return do(t, tomb)
            probe.active.on = True
            try:
                return do(t, tomb)
            finally:
                probe.active.on = False

        originals = [(obj, name, getattr(obj, name)) for obj, name in side_effects]
        for obj, name, fn in originals:
            setattr(obj, name, _wrap(fn, name, probe))
        st.probe = probe
        try:
            _run_to_end(st, cid, {kind: (probed, undo), **(handlers or {})}, kind, retry, clock, timeout)
        finally:
            st.probe = None
            for obj, name, fn in originals:
                setattr(obj, name, fn)
        if not probe.cut:
            end = _dump(st, cid, state_keys, snapshot)
            st.close()
            return end
        st.close()
        # The restart after the crash: the database as the crash left it, run to the end.
        st2 = State.open(tmp / "crash.db", clock=clock)
        try:
            _run_to_end(st2, cid, {kind: (do, undo), **(handlers or {})}, kind, retry, clock, timeout)
            return _dump(st2, cid, state_keys, snapshot)
        finally:
            st2.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_to_end(st: State, cid: str, handlers: Mapping[str, tuple[Handler, Handler | None]], kind: str,
                retry: tenacity.BaseRetrying | None, clock: FakeClock, timeout: float) -> None:
    """_run_to_end runs the change with a runner of these handlers (retry for kind's) until it is ready."""
    runner = TaskRunner(st)
    for k, (do, undo) in handlers.items():
        runner.add_handler(k, do, undo, retry=retry if k == kind else None)
    try:
        drive(runner, st, cid, clock=clock, timeout=timeout)
    except AssertionError:
        pass  # a change left unready (a task in Wait): its end is compared as it is
    finally:
        runner.stop()


def _wrap(fn: Callable[..., Any], name: str, probe: _Probe) -> Callable[..., Any]:
    def wrapped(*args: Any, **kw: Any) -> Any:
        result = fn(*args, **kw)
        probe.point(f"a call of {name}")
        return result
    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapped
