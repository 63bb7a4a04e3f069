# SPDX-License-Identifier: GPL-3.0-or-later
"""What a run of bench.pg costs each process: CPU seconds of the runner hosts, the server's processes, the bench.

A Watch reads /proc (Linux) while the parent waits for the run's changes to be ready, every time it polls: the
CPU time (user + system, all threads) of each runner process, of each process of the PostgreSQL server by role
(the backends, the WAL writer, the checkpointer, autovacuum, the rest), of this process, and of the whole machine
(so that what other programs took of the cores shows beside). A process seen at the first look counts from
there; one that appears later (an autovacuum worker, a backend opened late) counts whole. Also, from the
server's statistics at the go and at the end: the checkpoints begun, the transactions committed and rolled back,
the deadlocks, and autovacuum's passes over the tasks table.
Nothing here is asserted; where /proc is not there, the figures are empty.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How often, at most, the server's processes are looked for again (seconds).
RESCAN = 0.5
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: The server's figures read at the go and at the end (name: SQL returning one number).
_STATS = {
    "checkpoints": "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
    "commits": "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    "rollbacks": "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    "deadlocks": "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    "autovacuums": "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_user_tables "
                   "WHERE relname IN ('tasks', 'changes')",
}


def _cpu(pid: int) -> float | None:
    """_cpu is a process's CPU seconds so far (user + system, every thread), None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine() -> tuple[float, float]:
    """_machine is the machine's (busy, total) CPU seconds so far, over every core."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(x) for x in first[:8]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def _role(pid: int) -> str:
    """_role names a server process by its title: backend, walwriter, checkpointer, autovacuum or other."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    for role, marks in (("autovacuum", ("autovacuum",)), ("walwriter", ("walwriter",)),
                        ("checkpointer", ("checkpointer",)), ("backend", ("[local]", "idle", "SELECT", "UPDATE"))):
        if any(m in title for m in marks):
            return role
    return "other"


def _children(ppid: int) -> list[int]:
    """_children are the processes whose parent is ppid."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        if int(raw[raw.rindex(b")") + 2:].split()[1]) == ppid:
            found.append(int(d))
    return found


@dataclass
class Watch:
    """Watch follows the CPU of a run's processes: the runner hosts (hosts), the server under postmaster."""

    hosts: list[int]
    postmaster: int | None
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)
    _server: set[int] = field(default_factory=set)
    _machine0: tuple[float, float] = (0.0, 0.0)
    _machine1: tuple[float, float] = (0.0, 0.0)
    _self0: float = 0.0
    _self1: float = 0.0
    _rescan: float = 0.0
    _stats0: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def start(self, conn: Any = None) -> None:
        """start takes the first look (at the go); conn, a connection to the run's database, reads its stats."""
        self._self0 = self._self1 = os.times().user + os.times().system
        self._machine0 = self._machine1 = _machine()
        if conn is not None:
            self._stats0 = _read_stats(conn)
        self._look(first=True)

    def look(self) -> None:
        """look reads every watched process's CPU again (call it as often as the run is polled)."""
        self._look(first=False)

    def stop(self, conn: Any = None) -> None:
        """stop takes the last look (at the end of the run)."""
        self._look(first=False)
        self._machine1 = _machine()
        self._self1 = os.times().user + os.times().system
        if conn is not None and self._stats0:
            end = _read_stats(conn)
            self.stats = {k: end[k] - self._stats0.get(k, 0) for k in end}

    def _look(self, *, first: bool) -> None:
        if not os.path.isdir("/proc"):
            return
        now = time.monotonic()
        if self.postmaster is not None and (first or now >= self._rescan):
            # (The server's processes looked for again at most every RESCAN s: a walk of /proc costs the bench
            # CPU that the hosts would use; an autovacuum worker lives longer than that.)
            self._rescan = now + RESCAN
            self._server.update([self.postmaster, *_children(self.postmaster)])
        pids = [*self.hosts, *self._server]
        for pid in pids:
            cpu = _cpu(pid)
            if cpu is None:
                continue
            if pid not in self._first:
                self._first[pid] = cpu if first else 0.0
                self._roles[pid] = "host" if pid in self.hosts else _role(pid)
            elif self._roles.get(pid) == "other" and pid in self._server:
                self._roles[pid] = _role(pid)  # (a backend's title says more once it ran a statement)
            self._last[pid] = cpu

    def figures(self, wall: float) -> dict[str, Any]:
        """figures are the CPU seconds each watched process took, by role, over wall seconds of the run."""
        used = {pid: self._last[pid] - self._first[pid] for pid in self._first}
        roles: dict[str, float] = {}
        for pid, s in used.items():
            if pid in self.hosts:
                continue
            role = self._roles[pid]
            roles[role] = roles.get(role, 0.0) + s
        busy = self._machine1[0] - self._machine0[0]
        total = self._machine1[1] - self._machine0[1]
        cores = (os.cpu_count() or 1)
        ours = sum(used.values()) + (self._self1 - self._self0)
        return {
            "hosts_cpu_s": [round(used.get(pid, 0.0), 2) for pid in self.hosts],
            "server_cpu_s": {k: round(v, 2) for k, v in sorted(roles.items())},
            "bench_cpu_s": round(self._self1 - self._self0, 2),
            "machine_busy_cores": round(busy / total * cores, 2) if total else 0.0,
            "others_cpu_s": round(max(busy - ours, 0.0), 2),
            "wall_s": round(wall, 3),
            "stats": dict(self.stats),
        }


def _read_stats(conn: Any) -> dict[str, int]:
    """_read_stats reads the server's figures (_STATS) on conn, as of now."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return {k: int(conn.execute(q).fetchone()[0] or 0) for k, q in _STATS.items()}


def postmaster_of(data: Path) -> int | None:
    """postmaster_of is the server's main process (the first line of postmaster.pid in its data directory)."""
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def describe(f: dict[str, Any]) -> str:
    """describe says a run's CPU figures in one line."""
    if not f.get("wall_s"):
        return ""
    hosts = " + ".join(f"{s:.2f}" for s in f["hosts_cpu_s"])
    server = ", ".join(f"{k} {v:.2f}" for k, v in f["server_cpu_s"].items())
    stats = f.get("stats") or {}
    extra = ", ".join(f"{k} {v:,}" for k, v in stats.items())
    return (f"cpu s over {f['wall_s']:.2f} s: hosts {hosts}; server {server}; bench {f['bench_cpu_s']:.2f}; "
            f"other programs {f['others_cpu_s']:.2f}; machine {f['machine_busy_cores']:.2f} of "
            f"{os.cpu_count()} cores busy" + (f"; {extra}" if extra else ""))
