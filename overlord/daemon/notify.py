# SPDX-License-Identifier: GPL-3.0-or-later
"""sd_notify: tell systemd (or any supervisor listening on $NOTIFY_SOCKET) how the daemon is doing."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("overlord.daemon")


def notify(message: str) -> bool:
    """notify sends message (such as "READY=1") to $NOTIFY_SOCKET; False when unset or unreachable."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("cannot notify %s of %r: %s", os.environ.get("NOTIFY_SOCKET"), message, e.strerror or e)
        return False
    return True
