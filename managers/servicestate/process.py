# SPDX-License-Identifier: GPL-3.0-or-later
"""What runs for a service, what is known of it, and the processes of the machine as /proc shows them.

ServiceSpec is what the supervisor starts, ServiceStatus what it knows of a
service right now; the functions here find a service a daemon that died
left without a record, give a service's user its directories and say how
a process ended. What /proc says of processes (a start time, the boot, a
process group) is in managers/orphans.py, shared with the hook manager.
"""

from __future__ import annotations

import os
import pwd
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..orphans import find_leaders

#: DEFAULT_RESTART_DELAY is the delay before a restart when the snap says none (systemd's RestartSec).
DEFAULT_RESTART_DELAY = 0.1
#: DEFAULT_STOP_TIMEOUT is how long a stop waits after SIGTERM before SIGKILL (snapd's default).
DEFAULT_STOP_TIMEOUT = 10.0

@dataclass(frozen=True)
class ServiceSpec:
    """ServiceSpec is what runs for one service of one revision."""

    #: "<snap>.<app>"
    name: str
    revision: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    daemon: str = "simple"
    restart_condition: str = "on-failure"
    restart_delay: float = DEFAULT_RESTART_DELAY
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    #: The user it runs as (its primary group, no supplementary groups); None: the daemon's user.
    user: str | None = None
    #: The directories given to that user before each start (recursively): $SNAP_DATA, $SNAP_COMMON.
    owned: tuple[str, ...] = ()

@dataclass(frozen=True)
class ServiceStatus:
    """ServiceStatus is what the supervisor knows of a service right now."""

    name: str
    #: "active" (running, or a oneshot that succeeded), "inactive" or "failed".
    active: str
    pid: int | None = None
    revision: str | None = None
    #: When it last started or ended (the clock's time).
    since: datetime | None = None
    #: How its last process ended: "status N", "signal NAME", or "unknown" (it ended while not watched).
    last_exit: str | None = None
    #: Restarts since the service was last started on purpose.
    restarts: int = 0


def give_to_user(spec: ServiceSpec) -> tuple[int, int]:
    """give_to_user looks up the service's user and gives it the service's directories; it returns its uid and gid."""
    pw = pwd.getpwnam(str(spec.user))
    for top in spec.owned:
        if not os.path.isdir(top):
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                st = os.lstat(name)
                if (st.st_uid, st.st_gid) != (pw.pw_uid, pw.pw_gid):
                    os.lchown(name, pw.pw_uid, pw.pw_gid)
    return pw.pw_uid, pw.pw_gid


def find_orphans(spec: ServiceSpec) -> list[int]:
    """find_orphans lists the session leaders running spec: its command line, and its $SNAP, in the environment.

    It finds a service whose daemon died between starting it and recording
    it (the record is written just after the fork; orphans.find_leaders).
    """
    snap = f"SNAP={spec.env.get('SNAP', '')}".encode()
    return find_leaders(spec.argv, lambda env: snap in env)


def describe_exit(code: int | None) -> str:
    """describe_exit says how a process ended from its return code (negative: a signal)."""
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
