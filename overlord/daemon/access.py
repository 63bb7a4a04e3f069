# SPDX-License-Identifier: GPL-3.0-or-later
"""Who may do what: the peer credentials of a socket connection, and the access rules.

Like snapd: any local user may read (GET); a request that changes anything
(POST) needs uid 0 or the uid the daemon runs as, or membership of the group
the daemon was started with (``--group``). The decision rests on the
kernel's record of the connecting process, taken when it connected and
never on anything the client sends: SO_PEERCRED (pid, uid, gid) and
SO_PEERGROUPS (its supplementary groups), so a process that dropped the
group is refused whatever the group database says about its user.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

_UCRED = struct.Struct("3i")
#: SO_PEERGROUPS (Linux 4.13): the supplementary groups of the peer, as the kernel recorded them at connect().
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
#: The buffer first offered for SO_PEERGROUPS (64 groups); the kernel says when it needs more.
_GROUPS_FIRST = 64
#: NGROUPS_MAX on Linux: the most supplementary groups a process can have.
_NGROUPS_MAX = 65536


@dataclass(frozen=True)
class PeerCred:
    """PeerCred is the pid, uid, gid and supplementary groups of the process at the other end of a Unix socket.

    groups is None when the kernel cannot tell them (then no group grants anything).
    """

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] | None = None


def peer_cred(sock: Any) -> PeerCred | None:
    """peer_cred reads SO_PEERCRED and SO_PEERGROUPS from a connected Unix socket (None when it cannot be read).

    A TCP connection (the web port) has no such record: None, whoever is at the other end.
    """
    if sock is None or getattr(sock, "family", socket.AF_UNIX) != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid, peer_groups(sock))


def peer_groups(sock: Any) -> tuple[int, ...] | None:
    """peer_groups reads SO_PEERGROUPS: the peer's supplementary groups when it connected (None: unknown)."""
    size = _GROUPS_FIRST
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError as e:
            if e.errno == errno.ERANGE and size < _NGROUPS_MAX:
                size = _NGROUPS_MAX
                continue
            return None
        except AttributeError:
            return None
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


@dataclass(frozen=True)
class AccessPolicy:
    """AccessPolicy decides from peer credentials whether a request may change anything."""

    #: The group whose members may POST besides root; None: root only.
    group: str | None = None
    #: The uid the daemon runs as (it may POST too); None: this process's effective uid.
    own_uid: int | None = None

    def group_id(self) -> int | None:
        """group_id resolves the configured group (a name or a number) to its gid."""
        if self.group is None:
            return None
        if self.group.isdigit():
            return int(self.group)
        return grp.getgrnam(self.group).gr_gid

    def check(self) -> None:
        """check raises ValueError when the configured group does not exist."""
        try:
            self.group_id()
        except KeyError:
            raise ValueError(f"cannot use group {self.group!r}: there is no such group") from None

    def daemon_uid(self) -> int:
        """daemon_uid is the uid the daemon runs as."""
        return os.geteuid() if self.own_uid is None else self.own_uid

    def privileged(self, cred: PeerCred | None) -> bool:
        """privileged says whether the caller is root or the daemon's own uid (who always may write)."""
        return cred is not None and cred.uid in (0, self.daemon_uid())

    def may_write(self, cred: PeerCred | None) -> bool:
        """may_write says whether a caller may make a request that changes something.

        Root and the daemon's uid may; so may a process whose group, primary or
        supplementary, as the kernel recorded them when it connected, is the
        configured one. The group database is not asked: what counts is the
        groups the process holds, not those its user could have.
        """
        if cred is None:
            return False
        if self.privileged(cred):
            return True
        gid = self.group_id()
        if gid is None:
            return False
        return cred.gid == gid or (cred.groups is not None and gid in cred.groups)

    def describe(self) -> str:
        """describe says in words who may change things."""
        who = "root" if self.daemon_uid() == 0 else f"root or uid {self.daemon_uid()}"
        return who if self.group is None else f"{who} or members of group {self.group}"
