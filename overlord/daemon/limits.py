# SPDX-License-Identifier: GPL-3.0-or-later
"""Bounds on the socket, so that no local user can starve the daemon (docs/daemon.md, "Limits and threats").

Every local user may connect to the socket. Without bounds, a user holding
idle connections (or sending their headers a byte at a time) takes the
daemon's file descriptors one by one until accept() fails and root's
requests wait forever. So:

- connections are counted per uid from the kernel's SO_PEERCRED record,
  read right at accept: a uid holding ``per_user`` connections gets its next
  one answered 503 (``too-many-connections``) and closed at once, and so
  do all of them together once they hold ``total - reserve`` connections;
- root and the daemon's own uid (who may change things) may open up to
  ``total`` connections, so at least ``reserve`` are always theirs;
- a connection that has not sent a complete request header within
  ``header_timeout`` seconds (from its start, or from the end of its
  previous answer) is closed by the server (see server.py);
- when accept() fails for want of a resource (EMFILE, ENFILE, ENOBUFS,
  ENOMEM) it is logged once per ``log_interval`` in one line, not per
  attempt; asyncio retries a second later. (Python 3.11's accept loop,
  left alone, logs a traceback for each of up to 2048 attempts per wake-up:
  hundreds of megabytes of log in seconds.)

GuardedListener is the listening socket that does the counting: asyncio's
server calls its accept(), which returns only the connections admitted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .access import AccessPolicy, PeerCred, peer_cred

log = logging.getLogger("overlord.daemon")

#: RESOURCE_ERRNOS are the accept() failures that mean "out of a resource": retried later, logged once per interval.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: FD_MARGIN is how many file descriptors are kept for everything but connections (the database, uploads,
#: snap files, threads, the store).
FD_MARGIN = 64
#: _PAUSE is how long accept() answers "nothing to accept" after a resource failure, so that asyncio's loop
#: (which goes on calling it up to 2048 times) stops at once; asyncio retries after a second.
_PAUSE = 0.2
#: _REJECT_BATCH is how many refused connections one accept() call closes before letting the event loop run.
_REJECT_BATCH = 64


@dataclass(frozen=True)
class Limits:
    """Limits are the bounds on the daemon's socket (docs/daemon.md, "Limits and threats")."""

    #: Connections open at once, everyone together (root's reserve included).
    total: int = 256
    #: Connections open at once per uid other than root and the daemon's own.
    per_user: int = 32
    #: Of total, how many only root and the daemon's uid may take (the others together get total - reserve).
    reserve: int = 16
    #: Seconds a connection gets to send a complete request header.
    header_timeout: float = 5.0
    #: Seconds between two log lines about the same resource problem.
    log_interval: float = 60.0

    def check(self) -> None:
        """check raises ValueError for bounds that cannot work together."""
        if self.total < 2 or self.per_user < 1 or self.header_timeout <= 0:
            raise ValueError("cannot use these connection limits: at least 2 connections, 1 per user and a "
                             "positive header timeout are needed")
        if not 1 <= self.reserve < self.total:
            raise ValueError(f"cannot use these connection limits: the reserve ({self.reserve}) must be at least 1 "
                             f"and less than the total ({self.total})")

    def fit_descriptors(self) -> Limits:
        """fit_descriptors raises the soft RLIMIT_NOFILE to the hard one, then lowers the bounds to fit in it.

        A process gets 1024 descriptors under systemd by default, and may raise
        that itself to the hard limit (as Go programs such as snapd do).
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = self.total + FD_MARGIN
        if soft != resource.RLIM_INFINITY and soft < want:
            target = want if hard == resource.RLIM_INFINITY else min(hard, max(want, soft))
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError):
                pass
        if soft == resource.RLIM_INFINITY or soft >= want:
            return self
        total = max(2, soft - FD_MARGIN)
        fitted = replace(self, total=total, reserve=max(1, min(self.reserve, total // 4)),
                         per_user=min(self.per_user, total))
        log.warning("only %d file descriptors: serving at most %d connections (%d per user, %d kept for root)",
                    soft, fitted.total, fitted.per_user, fitted.reserve)
        return fitted


class ConnectionGuard:
    """ConnectionGuard counts open connections per uid and admits or refuses new ones by the Limits."""

    def __init__(self, limits: Limits, policy: AccessPolicy) -> None:
        self.limits = limits
        self.policy = policy
        self._lock = threading.Lock()
        self._open = 0
        #: Of the open connections, those of users other than root and the daemon's.
        self._unprivileged = 0
        self._per_uid: dict[int, int] = {}
        #: Connections refused since the start, and accept() failures for want of a resource.
        self.refused = 0
        self.accept_failures = 0

    def admit(self, cred: PeerCred | None) -> Callable[[], None] | None:
        """admit takes a slot for a new connection: it returns the function that gives it back, or None (refused)."""
        uid = cred.uid if cred is not None else -1
        privileged = self.policy.privileged(cred)
        with self._lock:
            if privileged:
                ok = self._open < self.limits.total
            else:
                ok = (self._unprivileged < self.limits.total - self.limits.reserve
                      and self._per_uid.get(uid, 0) < self.limits.per_user)
            if not ok:
                self.refused += 1
                return None
            self._open += 1
            self._unprivileged += not privileged
            self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._open -= 1
                self._unprivileged -= not privileged
                left = self._per_uid[uid] - 1
                if left:
                    self._per_uid[uid] = left
                else:
                    del self._per_uid[uid]

        return release

    def open_connections(self, uid: int | None = None) -> int:
        """open_connections counts the connections open now (of uid only, if given)."""
        with self._lock:
            return self._open if uid is None else self._per_uid.get(uid, 0)

    def stats(self) -> dict[str, int | float]:
        """stats is what GET /v2/system-info tells about connections."""
        with self._lock:
            return {"open": self._open, "limit": self.limits.total, "per-user-limit": self.limits.per_user,
                    "reserved-for-root": self.limits.reserve, "header-timeout": self.limits.header_timeout,
                    "refused": self.refused, "accept-failures": self.accept_failures}


def _refusal(message: str) -> bytes:
    import json

    body = json.dumps({"type": "error", "status-code": 503, "status": "Service Unavailable",
                       "result": {"message": message, "kind": "too-many-connections"}}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class _Connection(socket.socket):
    """_Connection is an accepted connection that gives its slot back when it is closed (or collected)."""

    _release: Callable[[], None] | None = None

    def close(self) -> None:
        release, self._release = self._release, None
        try:
            super().close()
        finally:
            if release is not None:
                release()


class GuardedListener(socket.socket):
    """GuardedListener is the daemon's listening socket: its accept() admits connections by the ConnectionGuard.

    asyncio's server calls accept() until it raises BlockingIOError; each
    call here returns the next admitted connection, after closing (with a
    503) those over the bounds. A resource failure is logged once per
    interval and raised, once, for asyncio to pause the listener.
    """

    guard: ConnectionGuard
    where: str
    _paused_until = 0.0
    _failing_since: float | None = None
    _last_said = -1e18

    @classmethod
    def wrap(cls, sock: socket.socket, guard: ConnectionGuard, where: str) -> GuardedListener:
        """wrap takes over a bound, listening socket (sock is detached)."""
        listener = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.guard = guard
        listener.where = where
        return listener

    def accept(self) -> tuple[socket.socket, Any]:
        refused = 0
        while True:
            now = time.monotonic()
            if now < self._paused_until or refused >= _REJECT_BATCH:
                raise BlockingIOError(errno.EAGAIN, "accepting later")
            try:
                fd, addr = self._accept()  # type: ignore[attr-defined]  # socket.accept without the wrapping
            except OSError as e:
                if e.errno in RESOURCE_ERRNOS:
                    self._resource_failure(e, now)
                    self._paused_until = now + _PAUSE
                    raise _ResourceFailure(e.errno, e.strerror) from None
                raise
            conn = _Connection(self.family, self.type, self.proto, fileno=fd)
            if self._failing_since is not None:
                log.info("accepting connections on %s again, after %.1f s of failures", self.where,
                         now - self._failing_since)
                self._failing_since = None
            cred = peer_cred(conn)
            release = self.guard.admit(cred)
            if release is not None:
                conn._release = release
                weakref.finalize(conn, release)  # a connection dropped without close() still gives its slot back
                return conn, addr
            refused += 1
            self._refuse(conn, cred)

    def _refuse(self, conn: socket.socket, cred: PeerCred | None) -> None:
        uid = cred.uid if cred is not None else None
        limits = self.guard.limits
        if uid is not None and self.guard.open_connections(uid) >= limits.per_user \
                and not self.guard.policy.privileged(cred):
            message = (f"cannot serve another connection of uid {uid}: it has {limits.per_user} open already "
                       "(close some)")
        else:
            message = "cannot serve another connection: the daemon has too many open; try again later"
        log.debug("refused a connection of %s: %s", f"uid {uid}" if uid is not None else "an unknown peer", message)
        with contextlib.suppress(OSError):
            conn.send(_refusal(message), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        conn.close()

    def _resource_failure(self, e: OSError, now: float) -> None:
        self.guard.accept_failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_said < self.guard.limits.log_interval:
            return
        self._last_said = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error("cannot accept connections on %s: %s (%s; %d connections open, descriptor limit %s); new "
                  "connections wait; said again at most every %g s", self.where, e.strerror,
                  errno.errorcode.get(e.errno or 0, e.errno), self.guard.open_connections(),
                  "unlimited" if soft == resource.RLIM_INFINITY else soft, self.guard.limits.log_interval)


class _ResourceFailure(OSError):
    """_ResourceFailure is an accept() failure for want of a resource, already logged (asyncio pauses on it)."""


def exception_handler(loop: Any, context: dict[str, Any]) -> None:
    """exception_handler is the event loop's: failures the listener logged already are not logged again."""
    if isinstance(context.get("exception"), _ResourceFailure):
        return
    loop.default_exception_handler(context)


#: CLIENT_NOISE are uvicorn's warnings that any client can cause at will, one per request.
CLIENT_NOISE = ("Invalid HTTP request received.", "Unsupported upgrade request.",
                "No supported WebSocket library detected.")


class ClientNoiseFilter(logging.Filter):
    """ClientNoiseFilter lets each of uvicorn's client-caused warnings (CLIENT_NOISE) through once per interval,
    telling how many were left out since, so that no client can flood the log with them."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = next((n for n in CLIENT_NOISE if message.startswith(n)), None)
        if key is None:
            return True
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        record.msg = f"{key} (said at most every {self.interval:g} s; {left_out} more since it was last said)"
        record.args = ()
        return True
