# SPDX-License-Identifier: GPL-3.0-or-later
"""servicestate: the ServiceManager, which runs the snaps' services under the daemon's own supervisor.

servicemgr.py holds the manager (the snap manager's service runner, the
service-control change, the listing and the logs); supervisor.py the
Supervisor, which runs each service as a process group, restarts it,
keeps its log and adopts it after a restart of the daemon; process.py what
runs (ServiceSpec), what is known of it (ServiceStatus) and what /proc
says of processes; logs.py the services' log files, rotated and read.
"""

from __future__ import annotations

from ..orphans import process_start_time
from .logs import LOG_MAX, read_log_lines
from .process import DEFAULT_RESTART_DELAY, DEFAULT_STOP_TIMEOUT, ServiceSpec, ServiceStatus
from .servicemgr import ACTIONS, SERVICES_KEY, ServiceInfo, ServiceManager
from .supervisor import START_LIMIT_BURST, START_LIMIT_INTERVAL, Supervisor

__all__ = [
    "ACTIONS",
    "DEFAULT_RESTART_DELAY",
    "DEFAULT_STOP_TIMEOUT",
    "LOG_MAX",
    "SERVICES_KEY",
    "START_LIMIT_BURST",
    "START_LIMIT_INTERVAL",
    "ServiceInfo",
    "ServiceManager",
    "ServiceSpec",
    "ServiceStatus",
    "Supervisor",
    "process_start_time",
    "read_log_lines",
]
