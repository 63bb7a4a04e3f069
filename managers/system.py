# SPDX-License-Identifier: GPL-3.0-or-later
"""SystemOverlord: the overlord of a system, with its managers in dependency order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tenacity

from engine import Manager, Overlord, State, TaskRunner

from .asserts import PublicKey
from .assertstate import DEFAULT_AUTHORITY, AssertManager
from .configstate import ConfigManager, ctl_function
from .firstboot import FirstBoot
from .hookstate import HookManager
from .ifacestate import InterfaceManager
from .servicestate import ServiceManager
from .snap import DEFAULT_LIMITS, Limits
from .snapstate import DEFAULT_RETAIN, SnapManager
from .snapstore import SnapStore


@dataclass(frozen=True)
class SystemManagers:
    """SystemManagers are the managers of a system, built on one state and task runner."""

    assert_manager: AssertManager
    snap_manager: SnapManager
    interface_manager: InterfaceManager
    first_boot: FirstBoot
    hook_manager: HookManager
    config_manager: ConfigManager
    service_manager: ServiceManager

    def __iter__(self) -> Iterator[Manager]:
        """__iter__ yields them in dependency order (the order they are added to an overlord in)."""
        yield from (self.assert_manager, self.snap_manager, self.interface_manager, self.hook_manager,
                    self.config_manager, self.first_boot, self.service_manager)


def system_managers(state: State, runner: TaskRunner, root: str | Path, *, store: str | Path | SnapStore | None = None,
                    trusted_key: PublicKey | str | Path | None = None, trusted_authority: str = DEFAULT_AUTHORITY,
                    retain: int = DEFAULT_RETAIN, limits: Limits = DEFAULT_LIMITS,
                    download_retry: tenacity.Retrying | None = None,
                    state_dir: str | Path | None = None, run_dir: str | Path | None = None,
                    clock: Callable[[], datetime] | None = None, stop_services: bool = False,
                    service_user: str | None = None, seed: str | Path | None = None) -> SystemManagers:
    """system_managers builds the managers of a system under root; add each to the overlord, in order.

    run_dir is where the service manager keeps its run-time records and the
    services' logs (default <root>/run/services); the hook manager keeps its
    records of running hooks in the "hooks" directory beside it; clock is the State's;
    stop_services: the service manager's stop() stops the services;
    service_user: the user they run as (default: the daemon's).

    SystemOverlord does this; an embedder with an overlord of its own (or a
    daemon's setup hook) can too. A state_dir under root (the database and
    keys) is never granted to a snap (system-files).
    """
    denied = []
    if state_dir is not None:
        with contextlib.suppress(ValueError):
            denied.append("/" + str(Path(state_dir).resolve().relative_to(Path(root).resolve())))
    am = AssertManager(state, runner, trusted_key=trusted_key, trusted_authority=trusted_authority)
    sm = SnapManager(state, runner, root=root, store=store, assert_manager=am, retain=retain, limits=limits,
                     download_retry=download_retry, clock=clock)
    im = InterfaceManager(state, runner, sm, assert_manager=am, denied_paths=denied)
    fb = FirstBoot(state, runner, snap_manager=sm, interface_manager=im, assert_manager=am, seed_dir=seed)
    services_dir = Path(run_dir) if run_dir is not None else Path(root) / "run" / "services"
    hm = HookManager(state, runner, sm, run_dir=services_dir.parent / "hooks")
    cm = ConfigManager(state, runner, sm, hm)
    svc = ServiceManager(state, runner, sm, run_dir=services_dir, clock=clock,
                         stop_services=stop_services, service_user=service_user)
    hm.ctl = ctl_function(hm, svc)  # `overlord ctl` in hooks when no daemon serves the API
    return SystemManagers(am, sm, im, fb, hm, cm, svc)


class SystemOverlord(Overlord):
    """SystemOverlord is an engine.Overlord whose database lives in state_dir, managing the system under root.

    The managers are added in dependency order: o.assert_manager (the
    assertions, checked against trusted_key for trusted_authority),
    o.snap_manager (snaps under root, from store: a directory or file://
    URL), o.interface_manager (connections and security profiles) and
    o.first_boot (seeding; from seed, a seed directory, by itself at first
    start when given), o.hook_manager (snaps' hooks; the records of running
    hooks in <state_dir>/hooks), o.config_manager
    (configuration, through the configure hook) and o.service_manager (the
    services, run by its supervisor; their records and logs in
    <state_dir>/services; stop_services: stopping the overlord stops them,
    otherwise they keep running). Other keyword arguments go to
    engine.Overlord (clock, workers, ...).
    """

    def __init__(self, state_dir: str | Path, root: str | Path, *, store: str | Path | SnapStore | None = None,
                 trusted_key: PublicKey | str | Path | None = None, trusted_authority: str = DEFAULT_AUTHORITY,
                 retain: int = DEFAULT_RETAIN, limits: Limits = DEFAULT_LIMITS,
                 download_retry: tenacity.Retrying | None = None, stop_services: bool = False,
                 service_user: str | None = None, seed: str | Path | None = None, **options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.root_dir = Path(root)
        if self.state_dir.absolute() == self.root_dir.absolute():
            raise ValueError("cannot use one directory as both the state directory and the system root")
        super().__init__(root=self.state_dir, **options)
        try:
            ms = system_managers(self.state, self.task_runner, self.root_dir, store=store, trusted_key=trusted_key,
                                 trusted_authority=trusted_authority, retain=retain, limits=limits,
                                 download_retry=download_retry, state_dir=self.state_dir,
                                 run_dir=self.state_dir / "services", clock=options.get("clock"),
                                 stop_services=stop_services, service_user=service_user, seed=seed)
        except BaseException:
            self.stop()
            raise
        self.assert_manager = ms.assert_manager
        self.snap_manager = ms.snap_manager
        self.interface_manager = ms.interface_manager
        self.first_boot = ms.first_boot
        self.hook_manager = ms.hook_manager
        self.config_manager = ms.config_manager
        self.service_manager = ms.service_manager
        for m in ms:
            self.add_manager(m)
