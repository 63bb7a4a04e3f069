# SPDX-License-Identifier: GPL-3.0-or-later
"""ServiceManager: runs the services of the installed snaps, and the service-control changes.

It is the snap manager's service runner: start-snap-services and
stop-snap-services (the snap manager's tasks, with their undo) record a
service active or inactive and then call start/stop here, which the
Supervisor carries out with real processes. Its ensure adopts or starts,
once after the daemon starts, every enabled service that should run, and
then starts the restarts that are due.

The state key "services" holds what the operator decided that outlives a
refresh: {"disabled": {snap: [app, ...]}}, the services that are not
started with their snap (install-mode: disable, or `overlord stop
--disable`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import Change, State, Task, TaskRunner, Tomb

from ..errors import ManagerError, SnapNotInstalledError, SnapOperationError
from ..snap import SnapInfo
from ..snap.environ import command_argv, snap_environment
from ..snap.info import service_order
from ..snapstate import SNAPS_KEY, SnapManager, all_snap_states, check_conflicts, get_snap_state, snap_key
from .logs import read_log_lines, read_log_since
from .process import DEFAULT_RESTART_DELAY, DEFAULT_STOP_TIMEOUT, ServiceSpec, ServiceStatus
from .supervisor import Supervisor

log = logging.getLogger("managers.servicestate")

#: SERVICES_KEY is the state key of the service manager.
SERVICES_KEY = "services"
#: ACTIONS are what a service-control change does.
ACTIONS = ("start", "stop", "restart")


@dataclass(frozen=True)
class ServiceInfo:
    """ServiceInfo is one service of an installed snap as `overlord services` shows it."""

    snap: str
    app: str
    daemon: str
    #: Whether it starts with its snap (and with the daemon).
    enabled: bool
    status: ServiceStatus

    @property
    def name(self) -> str:
        """name is "<snap>.<app>"."""
        return f"{self.snap}.{self.app}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ServiceManager:
    """ServiceManager supervises the services of the snaps the SnapManager installs."""

    def __init__(self, state: State, runner: TaskRunner, snap_manager: SnapManager, *, run_dir: str | Path,
                 clock: Callable[[], datetime] | None = None, stop_services: bool = False,
                 service_user: str | None = None) -> None:
        self.state = state
        self.runner = runner
        self.snap_manager = snap_manager
        self.backend = snap_manager.backend
        #: Whether stop() stops the services (default: they keep running, like snapd's under systemd).
        self.stop_at_exit = stop_services
        #: The user the services run as (None: the daemon's, root in production, like snapd's).
        self.service_user = service_user
        self._warnings: list[str] = []
        self._wmu = threading.Lock()
        self._recovered = False
        self._stopped = False
        self._cleanup = True  # once at the start, then after each discard-snap
        with state:
            state.add_task_status_changed_handler(self._removed)
        self.supervisor = Supervisor(run_dir, clock or _utc_now, wake=self._wake, warn=self._warn)
        snap_manager.service_runner = self
        runner.add_handler("service-control", self.do_service_control)
        snap_manager.add_affected_snaps("service-control", lambda t: sorted({s.split(".")[0] for s in
                                                                              t.get("services", [])}))

    # -- the manager protocol ----------------------------------------------------------

    def start_up(self) -> None:
        """start_up creates the run-time directory (private to the daemon)."""
        self.supervisor.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def ensure(self) -> None:
        """ensure recovers the services once (adopting or starting them), then starts the due restarts."""
        if not self._recovered:
            with self.state:
                wanted = self._wanted()
            self._recovered = True
            self.supervisor.recover(wanted)
            self.supervisor.start_housekeeping()
        delay = self.supervisor.tick()
        with self._wmu:
            warnings, self._warnings = self._warnings, []
            cleanup, self._cleanup = self._cleanup, False
        if warnings or delay is not None or cleanup:
            with self.state:
                for message in warnings:
                    self.state.add_warning(message)
                if delay is not None:
                    self.state.ensure_before(delay)
                if cleanup:
                    installed = set(self.state.get(SNAPS_KEY, {}))
                    disabled = self._disabled()
                    if set(disabled) - installed:
                        self._set_disabled({k: v for k, v in disabled.items() if k in installed})
            if cleanup:
                for name in self.supervisor.known():  # a removed snap's services: their records and logs go too
                    if name.partition(".")[0] not in installed:
                        self.supervisor.forget(name)

    def _removed(self, task: Task, old: Any, new: Any) -> bool:
        """_removed notes that a snap's revision was discarded: the next ensure cleans up after removed snaps."""
        if task.kind == "discard-snap" and str(new) == "Done":
            with self._wmu:
                self._cleanup = True
        return False

    def stop(self) -> None:
        """stop leaves the services running (they are adopted at the next start) unless stop_services."""
        self._stopped = True
        self.supervisor.stop_housekeeping()
        if self.stop_at_exit:
            self.supervisor.stop_all(state="down")

    def _wake(self, delay: float) -> None:
        if self._stopped:  # the overlord is gone; services left running wait for the next one
            return
        try:
            with self.state:
                self.state.ensure_before(delay)
        except Exception as e:  # a closing State: the next overlord recovers the service
            log.debug("cannot ask for an ensure pass: %s", e)

    def _warn(self, message: str) -> None:
        with self._wmu:
            self._warnings.append(message)
        self._wake(0)

    # -- what should run -------------------------------------------------------------------

    def _disabled(self) -> dict[str, list[str]]:
        data = self.state.get(SERVICES_KEY, {})
        return {k: list(v) for k, v in dict(data.get("disabled", {})).items()}

    def _set_disabled(self, disabled: dict[str, list[str]]) -> None:
        data = dict(self.state.get(SERVICES_KEY, {}))
        data["disabled"] = {k: sorted(set(v)) for k, v in sorted(disabled.items()) if v}
        self.state.set(SERVICES_KEY, data if data["disabled"] else None)

    def spec(self, info: SnapInfo, app: str) -> ServiceSpec:
        """spec is what runs for one service of info's revision."""
        a = info.apps[app]
        env = snap_environment(info, self.backend)
        return ServiceSpec(
            name=f"{info.name}.{app}", revision=info.revision, argv=tuple(command_argv(a, env)), env=env,
            cwd=env["SNAP_DATA"], daemon=a.daemon or "simple", restart_condition=a.restart_condition or "on-failure",
            restart_delay=a.restart_delay if a.restart_delay is not None else DEFAULT_RESTART_DELAY,
            stop_timeout=a.stop_timeout if a.stop_timeout is not None else DEFAULT_STOP_TIMEOUT,
            user=self.service_user,
            owned=(env["SNAP_DATA"], env["SNAP_COMMON"]) if self.service_user is not None else ())

    def _wanted(self) -> dict[str, ServiceSpec]:
        """_wanted are the services that should run, in start order (lock held)."""
        disabled = self._disabled()
        out: dict[str, ServiceSpec] = {}
        for name, snapst in all_snap_states(self.state).items():
            if not snapst.active:
                continue
            records = self.backend.services(name)
            info = snapst.info
            for app in service_order(list(info.apps.values())):
                rec = records.get(app.name)
                if rec is None or not rec.get("active") or rec.get("revision") != info.revision:
                    continue
                if app.name in disabled.get(name, []):
                    continue
                out[f"{name}.{app.name}"] = self.spec(info, app.name)
        return out

    # -- the snap manager's service runner --------------------------------------------------------

    def startable(self, info: SnapInfo) -> list[str]:
        """startable are info's services not disabled (install-mode: disable counts at the first install)."""
        disabled = self._disabled()
        if info.name not in disabled and self.backend.linked_revision(info.name) == info.revision:
            snapst = get_snap_state(self.state, info.name)
            first = snapst is None or len(snapst.sequence) <= 1
            off = [a.name for a in info.services if a.install_mode == "disable"]
            if first and off:
                disabled[info.name] = off
                self._set_disabled(disabled)
        return [a.name for a in info.services if a.name not in disabled.get(info.name, [])]

    def start_services(self, info: SnapInfo, apps: list[str]) -> None:
        """start starts services of info's revision, ordered by before/after."""
        wanted = set(apps)
        for app in service_order(list(info.apps.values())):
            if app.name in wanted:
                self.supervisor.start(self.spec(info, app.name))

    def stop_services(self, name: str, apps: list[str]) -> None:
        """stop_services stops services of a snap, in the reverse of their start order."""
        order = sorted(apps)
        revision = self.backend.linked_revision(name)
        if revision is not None:
            with contextlib.suppress(ManagerError):
                info = self.backend.read_info(name, revision)
                order = [a.name for a in service_order(list(info.apps.values()))]
        for app in reversed([a for a in order if a in apps] + [a for a in sorted(apps) if a not in order]):
            self.supervisor.stop(f"{name}.{app}")

    # -- reading -----------------------------------------------------------------------------

    def services(self, names: Sequence[str] = ()) -> list[ServiceInfo]:
        """services lists the services of the installed snaps, or of those named (SNAP or SNAP.APP) (lock held)."""
        disabled = self._disabled()
        out = []
        for snapst in self._select(names, "list"):
            info = snapst[0].info
            for app in info.services:
                if snapst[1] is not None and app.name not in snapst[1]:
                    continue
                out.append(ServiceInfo(info.name, app.name, app.daemon or "simple",
                                       app.name not in disabled.get(info.name, []),
                                       self.supervisor.status(f"{info.name}.{app.name}")))
        return out

    def _select(self, names: Sequence[str], verb: str) -> list[tuple[Any, set[str] | None]]:
        """_select resolves SNAP and SNAP.APP names to (SnapState, apps or None for all) (lock held)."""
        if not names:
            return [(s, None) for s in all_snap_states(self.state).values()]
        picked: dict[str, tuple[Any, set[str] | None]] = {}
        for n in names:
            snap, _, app = n.partition(".")
            snapst = get_snap_state(self.state, snap)
            if snapst is None:
                raise SnapNotInstalledError(f"cannot {verb} service {n!r}: snap {snap!r} is not installed")
            info = snapst.info
            if app:
                a = info.apps.get(app)
                if a is None or not a.daemon:
                    raise SnapOperationError(f"cannot {verb} service {n!r}: snap {snap!r} has no service {app!r}")
            elif not info.services:
                raise SnapOperationError(f"cannot {verb} the services of snap {snap!r}: it has none")
            prev = picked.get(snap)
            if app and (prev is None or prev[1] is not None):
                picked[snap] = (snapst, (prev[1] if prev else set()) | {app})  # type: ignore[operator]
            else:
                picked[snap] = (snapst, None)
        return list(picked.values())

    def logs(self, names: Sequence[str] = (), n: int | None = 10) -> list[tuple[str, str]]:
        """logs returns the last n lines (None: all) of each service's log, as (service, line) (lock held)."""
        out: list[tuple[str, str]] = []
        for s in self.services(names):
            out.extend((s.name, line) for line in read_log_lines(self.supervisor.log_path(s.name), n,
                                                                 self.supervisor.log_max))
        return out

    def logs_since(self, names: Sequence[str], cursor: Mapping[str, tuple[int, int]]
                   ) -> tuple[list[tuple[str, str]], dict[str, tuple[int, int]]]:
        """logs_since returns the lines written since cursor (per service: inode, offset) and the new cursor.

        A service missing from cursor gives no lines, only its cursor: ask with
        an empty one first, then again with what came back (`logs -f`) (lock held).
        """
        out: list[tuple[str, str]] = []
        after: dict[str, tuple[int, int]] = {}
        for s in self.services(names):
            lines, after[s.name] = read_log_since(self.supervisor.log_path(s.name), cursor.get(s.name))
            out.extend((s.name, line) for line in lines)
        return out, after

    # -- service-control ----------------------------------------------------------------------

    def control(self, action: str, names: Sequence[str], *, enable: bool = False, disable: bool = False) -> Change:
        """control makes a "service-control" change: start, stop or restart services (lock held).

        names are SNAP (all its services) or SNAP.APP. enable (start,
        restart) also makes them start with their snap and the daemon;
        disable (stop) makes them not. It is the one entry point of the
        operator's verbs and the REST API; `overlord ctl` in a hook adds
        control_task's task to the hook's own change instead.
        """
        check_conflicts(self.snap_manager, sorted({n.split(".")[0] for n in names}))  # before anything is made
        t = self.control_task(action, names, enable=enable, disable=disable)
        services: list[str] = t.get("services")
        snaps = sorted({s.split(".")[0] for s in services})
        quoted = ", ".join(f'"{s}"' for s in services)
        what = {"start": "Start", "stop": "Stop", "restart": "Restart"}[action]
        chg = self.state.new_change("service-control", f"{what} service{'s' if len(services) > 1 else ''} {quoted}",
                                    affects=[snap_key(s) for s in snaps])
        chg.add_task(t)
        chg.set("snap-names", snaps)
        self.state.ensure_before(0)
        return chg

    def control_task(self, action: str, names: Sequence[str], *, enable: bool = False,
                     disable: bool = False) -> Task:
        """control_task is the "service-control" task of a service command, in no change yet (lock held).

        It raises ValueError for a bad action or flags, and the snap errors
        for a snap or service that is not there or not active.
        """
        if action not in ACTIONS:
            raise ValueError(f"cannot {action} services: the action must be one of {', '.join(ACTIONS)}")
        if (enable and action == "stop") or (disable and action != "stop"):
            raise ValueError(f"cannot {action} services with --{'enable' if enable else 'disable'}: "
                             "--enable goes with start and restart, --disable with stop")
        if not names:
            raise ValueError(f"cannot {action} services: name at least one snap or service")
        services = []
        for snapst, apps in self._select(names, action):
            if not snapst.active:
                raise SnapOperationError(f"cannot {action} the services of snap {snapst.name!r}: it is disabled")
            for app in service_order(list(snapst.info.apps.values())):
                if apps is None or app.name in apps:
                    services.append(f"{snapst.name}.{app.name}")
        quoted = ", ".join(f'"{s}"' for s in services)
        t = self.state.new_task("service-control", f"Run service command {action!r} for services {quoted}")
        t.set("action", action)
        t.set("services", services)
        t.set("enable", enable)
        t.set("disable", disable)
        return t

    def do_service_control(self, task: Task, tomb: Tomb) -> None:
        """do_service_control carries out a service-control task (no undo: like snapd's, it is not reverted)."""
        with task.state:
            action = task.get("action")
            services: list[str] = task.get("services")
            enable, disable = task.get("enable", False), task.get("disable", False)
            by_snap: dict[str, list[str]] = {}
            for s in services:
                snap, _, app = s.partition(".")
                by_snap.setdefault(snap, []).append(app)
            infos = {}
            for snap in by_snap:
                snapst = get_snap_state(task.state, snap)
                if snapst is None or not snapst.active:
                    raise ManagerError(f"cannot {action} the services of snap {snap!r}: it is not installed "
                                       "and enabled any more")
                infos[snap] = snapst.info
            if enable or disable:
                d = self._disabled()
                for snap, apps in by_snap.items():
                    d[snap] = [a for a in d.get(snap, []) if a not in apps] + (apps if disable else [])
                self._set_disabled(d)
        for snap, apps in by_snap.items():
            info = infos[snap]
            if action in ("stop", "restart"):
                self.backend.stop_services(snap, apps)
                self.stop_services(snap, apps)
            if action in ("start", "restart"):
                self.backend.start_services(info, apps)
                self.start_services(info, apps)
        with task.state:
            task.logf("%s: %s", action, ", ".join(services))
