# SPDX-License-Identifier: GPL-3.0-or-later
"""Processes a killed daemon left behind: their run-time records, and what /proc says of them.

The service supervisor (servicestate) and the hook manager (hookstate)
both start processes that lead a session and process group of their own,
so that a SIGKILL of the daemon leaves them running. Both keep a run-time
record per process (a small JSON file renamed into place) holding its pid,
its start time (field 22 of /proc/<pid>/stat) and the boot id; after a
restart, a record whose pid still runs with the same start time in the
same boot names that very process (a pid reused by another process never
matches). For the instant between the fork and the record, both scan /proc
for the session leaders that carry their mark (find_leaders).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("managers.orphans")

#: EnvMatch says whether a process's environment (its NUL-separated entries, as bytes) is one of ours.
EnvMatch = Callable[[list[bytes]], bool]


def boot_id() -> str:
    """boot_id identifies this boot of the machine (a pid and a start time mean nothing across boots)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[bytes] | None:
    """_stat is /proc/<pid>/stat from field 3 (the state) on, or None if pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything: count from its end.
    return raw[raw.rindex(b")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """process_start_time is field 22 of /proc/<pid>/stat (clock ticks after boot), or None if pid is gone."""
    fields = _stat(pid)
    if fields is None or fields[0] == b"Z":  # a zombie has ended already
        return None
    return int(fields[19])


def _processes() -> Iterator[tuple[int, list[bytes]]]:
    """_processes yields every live (not zombie) process with its stat fields from field 3 on."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is not None and fields[0] != b"Z":
            yield int(entry), fields


def _environ(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return None


def find_leaders(argv: Sequence[str], match: EnvMatch) -> list[int]:
    """find_leaders lists the session leaders whose command line ends with argv and whose environment matches.

    It finds a process whose daemon died between starting it and recording
    it. A process of another user cannot be read and is not found; nor one
    that exec'd another command line.
    """
    tail = [a.encode() for a in argv]
    found = []
    for pid, fields in _processes():
        try:
            if int(fields[3]) != pid:  # field 6, the session: ours lead their own
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except (OSError, ValueError, IndexError):
            continue
        env = _environ(pid) if cmdline[-len(tail):] == tail else None
        if env is not None and match(env):
            found.append(pid)
    return sorted(found)


def group_members(pgid: int, match: EnvMatch | None = None) -> list[int]:
    """group_members lists the live processes of process group pgid (with match: those whose environment matches)."""
    found = []
    for pid, fields in _processes():
        with contextlib.suppress(ValueError, IndexError):
            if int(fields[2]) == pgid and (match is None or ((env := _environ(pid)) is not None and match(env))):
                found.append(pid)
    return sorted(found)


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


def kill_group_and_wait(pgid: int, timeout: float = 10.0) -> bool:
    """kill_group_and_wait sends SIGKILL to a group and waits until none of it is left; False if some is, at timeout.

    A killed process whose parent is gone may stay a zombie (a PID 1 that
    does not reap): a zombie counts as ended.
    """
    deadline = time.monotonic() + timeout
    while True:
        kill_group(pgid, signal.SIGKILL)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def wait_for_exit(pid: int) -> None:
    """wait_for_exit returns when process pid (not necessarily a child) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        os.close(fd)


def write_record(path: Path, data: dict[str, Any]) -> None:
    """write_record writes a run-time record as JSON, renamed into place.

    Not synced: a record only matters while this boot lasts (a crash of the
    daemon loses nothing the kernel holds; a power cut makes the boot id
    differ anyway).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_record(path: Path) -> dict[str, Any] | None:
    """read_record reads a run-time record; None if there is none or it cannot be read (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring the unreadable run-time record %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def record_of(pid: int) -> dict[str, Any]:
    """record_of is what a record says of a process that runs now: its pid, start time and the boot."""
    return {"pid": pid, "start-time": process_start_time(pid), "boot-id": boot_id()}


def still_running(rec: dict[str, Any], boot: str | None = None) -> bool:
    """still_running says whether the process a record names runs now: same pid, start time and boot."""
    pid = rec.get("pid")
    return (isinstance(pid, int) and rec.get("boot-id") == (boot if boot is not None else boot_id())
            and process_start_time(pid) == rec.get("start-time"))
