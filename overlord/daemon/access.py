# SPDX-License-Identifier: GPL-3.0-or-later
"""Who may do what: the peer credentials of a socket connection, and the access rules.

Like snapd: any local user may read (GET); a request that changes anything
(POST) needs uid 0, or membership of the group the daemon was started with
(``--group``). The decision rests on the kernel's SO_PEERCRED record of the
connecting process, never on anything the client sends.
"""

from __future__ import annotations

import grp
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCred:
    """PeerCred is the pid, uid and gid of the process at the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_cred(sock: Any) -> PeerCred | None:
    """peer_cred reads SO_PEERCRED from a connected Unix socket (None when it cannot be read)."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)


@dataclass(frozen=True)
class AccessPolicy:
    """AccessPolicy decides from peer credentials whether a request may change anything."""

    #: The group whose members may POST besides root; None: root only.
    group: str | None = None

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

    def may_write(self, cred: PeerCred | None) -> bool:
        """may_write says whether a caller may make a request that changes something."""
        if cred is None:
            return False
        if cred.uid == 0:
            return True
        gid = self.group_id()
        if gid is None:
            return False
        if cred.gid == gid:
            return True
        # Supplementary groups are not in SO_PEERCRED: ask the group database about the peer's user.
        try:
            name = pwd.getpwuid(cred.uid).pw_name
            return name in grp.getgrgid(gid).gr_mem
        except KeyError:
            return False

    def describe(self) -> str:
        """describe says in words who may change things."""
        return "root" if self.group is None else f"root or members of group {self.group}"
