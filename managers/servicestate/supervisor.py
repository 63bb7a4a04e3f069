# SPDX-License-Identifier: GPL-3.0-or-later
"""Supervisor: the daemon's own service supervisor (no systemd assumed).

Each service runs as a real process in a session and process group of its
own (start_new_session), with the snap's environment only, its working
directory in the snap's data, stdin from /dev/null, stdout and stderr
appended to the service's log file, and no descriptor of the daemon
(close_fds). Stopping sends SIGTERM to the whole group, then SIGKILL to
what is left after the service's stop-timeout.

A thread per process waits for it to end. A service that ends while it is
wanted is restarted according to its restart-condition after its
restart-delay, doubled after each quick failure (back-off, at most
MAX_BACKOFF); a service started more than START_LIMIT_BURST times in
START_LIMIT_INTERVAL seconds is marked failed instead, and a warning says
so. Restarts are due at times of the injected clock (the State's): the
owner's ensure calls tick(), which starts the services that are due, and
wake(delay) asks for that pass.

Each service has a run-time record, <run_dir>/<name>.json: the pid, the
process's start time (field 22 of /proc/<pid>/stat), the boot id, the
revision, and whether it is running, exited or failed. After the daemon is
killed, recover() adopts a process whose pid, start time and boot match its
record (a pid reused by another process never matches), so a service never
runs twice; a process that is no longer wanted is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ManagerError
from ..orphans import (
    boot_id,
    kill_group,
    process_start_time,
    read_record,
    still_running,
    wait_for_exit,
    write_record,
)
from .logs import LOG_MAX, rotate_log
from .process import ServiceSpec, ServiceStatus, describe_exit, find_orphans, give_to_user

log = logging.getLogger("managers.servicestate")

#: START_LIMIT_BURST starts within START_LIMIT_INTERVAL seconds are allowed; one more marks the service failed.
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL = 10.0
#: MAX_BACKOFF bounds the doubled restart delay, in seconds.
MAX_BACKOFF = 30.0
#: ONESHOT_TIMEOUT is how long starting a oneshot service waits for it to end (systemd's TimeoutStartSec).
ONESHOT_TIMEOUT = 90.0
#: LOG_CHECK_INTERVAL is how often (real seconds) the logs are checked for rotation (and at each start).
LOG_CHECK_INTERVAL = 10.0

Clock = Callable[[], datetime]


@dataclass
class _Service:
    spec: ServiceSpec
    wanted: bool = False
    pid: int | None = None
    start_time: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    started_at: datetime | None = None
    starts: deque[datetime] = field(default_factory=deque)
    failures: int = 0
    restarts: int = 0
    restart_at: datetime | None = None
    failed: bool = False
    done: bool = False
    last_exit: str | None = None
    since: datetime | None = None


class Supervisor:
    """Supervisor runs services as process groups, restarts them and keeps their logs and records."""

    def __init__(self, run_dir: str | Path, clock: Clock, *, wake: Callable[[float], None] | None = None,
                 warn: Callable[[str], None] | None = None, log_max: int = LOG_MAX) -> None:
        self.run_dir = Path(run_dir)
        self.log_dir = self.run_dir / "logs"
        self.clock = clock
        self._wake = wake or (lambda delay: None)
        self._warn = warn or (lambda message: None)
        self.log_max = log_max
        self._mu = threading.RLock()
        self._services: dict[str, _Service] = {}
        self._boot = boot_id()
        self._housekeeper: threading.Thread | None = None
        self._housekeeping_stop = threading.Event()

    # -- files ---------------------------------------------------------------------------

    def record_path(self, name: str) -> Path:
        """record_path is the run-time record of a service."""
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """log_path is the log file of a service (rotated ones end in .1, .2)."""
        return self.log_dir / f"{name}.log"

    def _setup(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)

    def _write_record(self, svc: _Service, state: str) -> None:
        data = {"name": svc.spec.name, "revision": svc.spec.revision, "pid": svc.pid,
                "start-time": svc.start_time, "boot-id": self._boot, "state": state,
                "last-exit": svc.last_exit, "since": svc.since.isoformat() if svc.since else None}
        write_record(self.record_path(svc.spec.name), data)

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        return read_record(path)

    def _note(self, name: str, message: str) -> None:
        """_note appends one line of the supervisor's own to the service's log."""
        self.rotate(name)
        stamp = self.clock().astimezone().isoformat(timespec="seconds")
        with open(self.log_path(name), "ab") as f:
            f.write(f"{stamp} overlord: {message}\n".encode())

    def rotate(self, name: str) -> None:
        """rotate moves a log over the supervisor's log_max aside (logs.rotate_log)."""
        rotate_log(self.log_path(name), self.log_max)

    def start_housekeeping(self) -> None:
        """start_housekeeping starts the thread that rotates the logs every LOG_CHECK_INTERVAL seconds."""
        with self._mu:
            if self._housekeeper is not None:
                return
            self._housekeeping_stop.clear()
            self._housekeeper = threading.Thread(target=self._housekeep, name="service-logs", daemon=True)
            self._housekeeper.start()

    def stop_housekeeping(self) -> None:
        """stop_housekeeping stops that thread."""
        with self._mu:
            t, self._housekeeper = self._housekeeper, None
        self._housekeeping_stop.set()
        if t is not None:
            t.join(5)

    def _housekeep(self) -> None:
        while not self._housekeeping_stop.wait(LOG_CHECK_INTERVAL):
            self.rotate_all()

    def rotate_all(self) -> None:
        """rotate_all rotates every service log that has grown past the limit."""
        with self._mu:
            names = list(self._services)
        for name in names:
            try:
                self.rotate(name)
            except OSError as e:
                log.warning("cannot rotate the log of service %s: %s", name, e)

    # -- starting ------------------------------------------------------------------------

    def start(self, spec: ServiceSpec) -> None:
        """start makes a service wanted and running (a running copy of another revision is stopped first).

        It returns once the process runs (a oneshot: once it ended, which
        must be with status 0). ManagerError when it cannot be started.
        """
        with self._mu:
            svc = self._services.get(spec.name)
            if svc is not None and svc.pid is not None and svc.spec == spec:
                svc.wanted, svc.failed, svc.restart_at = True, False, None
                return
        if svc is not None and svc.pid is not None:
            self.stop(spec.name)
        with self._mu:
            svc = self._services.get(spec.name)
            if svc is None or svc.pid is None:
                svc = self._services[spec.name] = _Service(spec)
            svc.wanted, svc.failed, svc.done, svc.restart_at = True, False, False, None
            svc.starts.clear()
            svc.failures = svc.restarts = 0
            exited = self._spawn(svc)
        if spec.daemon == "oneshot":
            if not exited.wait(ONESHOT_TIMEOUT):
                self.stop(spec.name)
                raise ManagerError(f"cannot start service {spec.name}: it did not finish within "
                                   f"{ONESHOT_TIMEOUT:g} s")
            with self._mu:
                if not svc.done:
                    raise ManagerError(f"cannot start service {spec.name}: it ended with {svc.last_exit}")

    def _spawn(self, svc: _Service) -> threading.Event:
        """_spawn starts the service's process (lock held) and the thread that waits for it."""
        spec = svc.spec
        self._setup()
        self._note(spec.name, f"starting {spec.name} (revision {spec.revision})")
        try:
            ids = give_to_user(spec) if spec.user is not None else None
            with open(self.log_path(spec.name), "ab") as out:
                proc = subprocess.Popen(list(spec.argv), env=dict(spec.env), cwd=spec.cwd, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, close_fds=True,
                                        start_new_session=True, user=ids[0] if ids else None,
                                        group=ids[1] if ids else None, extra_groups=[] if ids else None)
        except (OSError, KeyError) as e:
            if isinstance(e, KeyError):
                e = OSError(f"there is no user {spec.user!r}")
            svc.wanted = False
            svc.failed = True
            svc.last_exit = f"not started: {e.strerror or e}"
            self._note(spec.name, f"cannot start: {e.strerror or e}")
            raise ManagerError(f"cannot start service {spec.name}: {e.strerror or e} ({spec.argv[0]})") from None
        now = self.clock()
        svc.pid, svc.start_time = proc.pid, process_start_time(proc.pid)
        svc.started_at = svc.since = now
        svc.starts.append(now)
        exited = svc.exited = threading.Event()
        self._write_record(svc, "running")
        log.info("started service %s (pid %d)", spec.name, proc.pid)
        threading.Thread(target=self._watch_child, args=(svc, proc, exited), name=f"service-{spec.name}",
                         daemon=True).start()
        return exited

    def _watch_child(self, svc: _Service, proc: subprocess.Popen[bytes], exited: threading.Event) -> None:
        code = proc.wait()
        self._ended(svc, proc.pid, code, exited)

    def _watch_adopted(self, svc: _Service, pid: int, exited: threading.Event) -> None:
        wait_for_exit(pid)
        self._ended(svc, pid, None, exited)

    def _ended(self, svc: _Service, pid: int, code: int | None, exited: threading.Event) -> None:
        """_ended records how a process ended and decides what comes next (a restart, or failed)."""
        delay: float | None = None
        warning: str | None = None
        with self._mu:
            if svc.pid != pid:
                exited.set()
                return
            now = self.clock()
            svc.pid = svc.start_time = None
            svc.last_exit = describe_exit(code)
            svc.since = now
            clean = code == 0
            state = "exited"
            if svc.wanted and svc.spec.daemon == "oneshot" and clean:
                svc.done = True
            elif svc.wanted:
                if self._restarts(svc.spec.restart_condition, code):
                    if svc.started_at is not None and now - svc.started_at > timedelta(seconds=START_LIMIT_INTERVAL):
                        svc.failures = 0  # it ran a good while: no back-off
                    recent = [t for t in svc.starts if now - t < timedelta(seconds=START_LIMIT_INTERVAL)]
                    if len(recent) >= START_LIMIT_BURST:
                        svc.failed, state = True, "failed"
                        warning = (f"service {svc.spec.name} failed: it was started {len(recent)} times within "
                                   f"{START_LIMIT_INTERVAL:g} s and ended each time (last: {svc.last_exit}); "
                                   f"see `overlord logs {svc.spec.name}`, then start it again")
                    else:
                        delay = min(svc.spec.restart_delay * 2 ** svc.failures, MAX_BACKOFF)
                        svc.failures += 1
                        svc.restart_at = now + timedelta(seconds=delay)
                elif not clean:
                    svc.failed, state = True, "failed"
            with contextlib.suppress(OSError):
                self._write_record(svc, state)
                self._note(svc.spec.name, f"{svc.spec.name} ended ({svc.last_exit})" +
                           (f"; restarting in {delay:g} s" if delay is not None else "") +
                           ("; failed: start limit reached" if warning else ""))
            log.log(logging.INFO if clean or not svc.wanted else logging.WARNING, "service %s (pid %d) ended: %s",
                    svc.spec.name, pid, svc.last_exit)
            exited.set()
        if warning is not None:
            log.warning("%s", warning)
            self._warn(warning)
        if delay is not None:
            self._wake(delay)

    @staticmethod
    def _restarts(condition: str, code: int | None) -> bool:
        """_restarts is systemd's Restart= rule: does a process that ended with code get restarted?"""
        clean = code == 0
        signalled = code is None or code < 0
        if condition == "always":
            return True
        if condition == "on-success":
            return clean
        if condition == "on-failure":
            return not clean
        if condition in ("on-abnormal", "on-abort"):
            return signalled
        return False  # never, no, on-watchdog (no watchdog here)

    def tick(self) -> float | None:
        """tick starts the services whose restart is due; it returns the seconds until the next one is, or None."""
        later: list[float] = []
        with self._mu:
            now = self.clock()
            for svc in list(self._services.values()):
                if svc.restart_at is None or not svc.wanted or svc.pid is not None:
                    continue
                if svc.restart_at > now:
                    later.append((svc.restart_at - now).total_seconds())
                    continue
                svc.restart_at = None
                svc.restarts += 1
                with contextlib.suppress(ManagerError):
                    self._spawn(svc)
        return min(later) if later else None

    # -- stopping ------------------------------------------------------------------------

    def stop(self, name: str, *, state: str = "exited") -> None:
        """stop makes a service unwanted and stops its process group: SIGTERM, SIGKILL after its stop-timeout.

        state is what its record says afterwards ("down": the daemon stopped it and starts it again).
        """
        with self._mu:
            svc = self._services.get(name)
            if svc is None:
                return
            svc.wanted, svc.restart_at, svc.failed, svc.done = False, None, False, False
            pid, exited, timeout = svc.pid, svc.exited, svc.spec.stop_timeout
        if pid is not None:
            self._terminate(name, pid, exited, timeout)
        with self._mu:
            if svc.pid is None:
                with contextlib.suppress(OSError):
                    self._write_record(svc, state)

    def _terminate(self, name: str, pgid: int, exited: threading.Event, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        kill_group(pgid, signal.SIGTERM)
        exited.wait(timeout)
        # The leader has ended (or the time is up): what is left of the group gets until the deadline.
        while kill_group(pgid, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        if kill_group(pgid, signal.SIGKILL):
            log.warning("service %s did not stop within %g s of SIGTERM: killed", name, timeout)
        if not exited.wait(timeout + 10):
            log.error("service %s (pid %d) survives SIGKILL", name, pgid)

    def stop_all(self, *, state: str = "exited") -> None:
        """stop_all stops every running service (in parallel)."""
        with self._mu:
            names = [n for n, s in self._services.items() if s.pid is not None or s.restart_at is not None]
        threads = [threading.Thread(target=self.stop, args=(n,), kwargs={"state": state}) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- after a restart of the daemon -------------------------------------------------------

    def recover(self, wanted: Mapping[str, ServiceSpec]) -> list[str]:
        """recover adopts the services left running by a previous daemon and starts the wanted ones that are not.

        A recorded process that is still alive (same pid, start time and boot)
        is adopted when it is wanted at the same revision, and stopped
        otherwise. A wanted service whose record says it ended on its own in
        this boot (exited, failed) stays so; the others start, in the order
        of wanted. It returns the services it started.
        """
        self._setup()
        alive: dict[str, dict[str, Any]] = {}
        ended: dict[str, dict[str, Any]] = {}
        for path in sorted(self.run_dir.glob("*.json")):
            rec = self._read_record(path)
            if rec is None or not isinstance(rec.get("name"), str):
                continue
            name, pid = rec["name"], rec.get("pid")
            same_boot = rec.get("boot-id") == self._boot
            if rec.get("state") == "running" and still_running(rec, self._boot):
                alive[name] = rec
            elif same_boot and rec.get("state") in ("exited", "failed"):
                ended[name] = rec
        for name, want in wanted.items():  # a process no record names (the daemon died as it started it)
            if name not in alive:
                for pid in find_orphans(want):
                    alive[name] = {"pid": pid, "start-time": process_start_time(pid), "revision": want.revision}
                    log.warning("found service %s (pid %d) running without a record: adopting it", name, pid)
                    break
        started = []
        for name, rec in alive.items():
            spec = wanted.get(name)
            svc = _Service(spec or ServiceSpec(name, str(rec.get("revision")), ("",), {}, "/"))
            svc.pid, svc.start_time = rec["pid"], rec["start-time"]
            svc.since = self.clock()
            exited = svc.exited
            with self._mu:
                self._services[name] = svc
            threading.Thread(target=self._watch_adopted, args=(svc, svc.pid, exited), name=f"service-{name}",
                             daemon=True).start()
            if spec is not None and spec.revision == rec.get("revision"):
                svc.wanted = True
                log.info("adopted service %s (pid %d) left running by the previous daemon", name, svc.pid)
            else:
                log.info("stopping service %s (pid %d): it is no longer wanted", name, svc.pid)
                self.stop(name)
        for name, spec in wanted.items():
            with self._mu:
                known = self._services.get(name)
                if known is not None and known.wanted:
                    continue
                rec = ended.get(name)
                if rec is not None and rec.get("revision") == spec.revision:
                    left = self._services[name] = _Service(spec)
                    left.failed = rec.get("state") == "failed"
                    left.done = spec.daemon == "oneshot" and rec.get("last-exit") == "status 0"
                    left.last_exit = rec.get("last-exit")
                    continue
            try:
                self.start(spec)
                started.append(name)
            except ManagerError as e:
                log.warning("%s", e)
        return started

    # -- reading -------------------------------------------------------------------------

    def status(self, name: str) -> ServiceStatus:
        """status tells whether a service runs, its pid and how it last ended."""
        with self._mu:
            found = self._services.get(name)
            if found is None:
                rec = self._read_record(self.record_path(name)) or {}
                since = rec.get("since")
                return ServiceStatus(name, "failed" if rec.get("state") == "failed" else "inactive",
                                     revision=rec.get("revision"), last_exit=rec.get("last-exit"),
                                     since=datetime.fromisoformat(since) if isinstance(since, str) else None)
            svc = found
            if svc.pid is not None or svc.done or (svc.wanted and svc.restart_at is not None):
                active = "active"
            else:
                active = "failed" if svc.failed else "inactive"
            return ServiceStatus(name, active, svc.pid, svc.spec.revision, svc.since, svc.last_exit, svc.restarts)

    def known(self) -> list[str]:
        """known lists the services the supervisor has a record of (running or not)."""
        with self._mu:
            names = set(self._services)
        names.update(p.name.removesuffix(".json") for p in self.run_dir.glob("*.json"))
        return sorted(names)

    def forget(self, name: str) -> None:
        """forget drops a stopped service's record and logs (its snap is gone)."""
        with self._mu:
            svc = self._services.get(name)
            if svc is not None and svc.pid is not None:
                return
            self._services.pop(name, None)
        for p in (self.record_path(name), *self.log_dir.glob(f"{name}.log*")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
