# SPDX-License-Identifier: GPL-3.0-or-later
"""What runs for a service, what is known of it, and the processes of the machine as /proc shows them.

ServiceSpec is what the supervisor starts, ServiceStatus what it knows of a
service right now; the functions here read /proc
(a process's start time, the boot, the orphans of a daemon that died),
give a service's user its directories, and signal a process group.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger("managers.servicestate")

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


def boot_id() -> str:
    """boot_id identifies this boot of the machine (a pid and a start time mean nothing across boots)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> int | None:
    """process_start_time is field 22 of /proc/<pid>/stat (clock ticks after boot), or None if pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything: count from its end.
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has ended already
        return None
    return int(fields[19])


def find_orphans(spec: ServiceSpec) -> list[int]:
    """find_orphans lists the session leaders running spec: its command line, and its $SNAP, in the environment.

    It finds a service whose daemon died between starting it and recording
    it (the record is written just after the fork). A process of another
    user cannot be read and is not found; nor one that exec'd another
    command line.
    """
    snap = f"SNAP={spec.env.get('SNAP', '')}".encode()
    argv = [a.encode() for a in spec.argv]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[3]) != pid or fields[0] == b"Z":  # field 6, the session: a service leads its own
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            if cmdline[-len(argv):] != argv or snap not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
        except (OSError, ValueError, IndexError):
            continue
        found.append(pid)
    return sorted(found)


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


def kill_group(pgid: int, sig: int) -> bool:
    """kill_group signals a process group; False when it has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("cannot signal process group %d: permission denied", pgid)
        return False
    return True
