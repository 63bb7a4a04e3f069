# SPDX-License-Identifier: GPL-3.0-or-later
"""The daemon process: the overlord's loop, and uvicorn serving the API on the state directory's socket.

Daemon is the building block: it serves any overlord. Start: build the
overlord (the snap system's: factory.system_daemon, which opens the
database, DatabaseInUseError if another process holds it, and runs the
setup hook), bind the
socket (or take the one systemd passed), start the ensure loop, serve, and
only then tell systemd READY=1. The socket is served through limits.py's
GuardedListener (connections bounded per uid and overall, with a reserve for
root) and _GuardedProtocol (a header timeout). Stop (SIGTERM or SIGINT): stop accepting
connections, give requests in flight up to HTTP_GRACE seconds, remove the
socket (unless systemd owns it), then stop the overlord:
every running handler's tomb is killed and it gets stop_timeout seconds to
return (docs/daemon.md states the bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine import DatabaseCorruptError

from .access import AccessPolicy, peer_cred
from .api import PEER_CRED_KEY, Context, Endpoint, build_app
from .core import CORE_ENDPOINTS
from .limits import ClientNoiseFilter, ConnectionGuard, GuardedListener, Limits, exception_handler
from .notify import notify
from .web.pages import routes as web_routes
from .web.port import WEB_PORT_KEY, PortGuard, bind_port, is_web_connection, others_reach, url_of

if TYPE_CHECKING:
    from engine import Overlord, State

log = logging.getLogger("overlord.daemon")

#: HTTP_GRACE is how long requests in flight get to finish once the daemon is asked to stop.
HTTP_GRACE = 5.0
#: SOCKET_MODE: anyone may connect (and read); POST is decided per request from the peer's credentials.
SOCKET_MODE = 0o666

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class DaemonError(Exception):
    """DaemonError means the daemon cannot start; str() is one line starting "cannot"."""


class _GuardedProtocol(H11Protocol):
    """_GuardedProtocol is uvicorn's h11 protocol that hands each request the connection's peer credentials, and
    closes a connection that has not sent a complete request header within the header timeout.

    The timer starts when the connection does and again when an answer is
    complete (keep-alive); it stops when h11 has read a whole request header.
    """

    header_timeout: float = 5.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        web = is_web_connection(sock)  # the web port: no credentials, and only what PortGuard lets through
        cred = None if web else peer_cred(sock)
        app: ASGIApp = self.app

        async def with_cred(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            extensions = scope.get("extensions") or {}
            extensions[PEER_CRED_KEY] = cred
            extensions[WEB_PORT_KEY] = web
            scope["extensions"] = extensions
            await app(scope, receive, send)

        self.app = with_cred
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request header in %g s", self.header_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def _protocol(limits: Limits) -> type[H11Protocol]:
    """_protocol is the protocol class of a server with these limits."""
    return type("GuardedProtocol", (_GuardedProtocol,), {"header_timeout": limits.header_timeout})


#: What a log message may not hold as it is: C0 and C1 controls (newlines included) and DEL.
_LOG_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class OneLineFormatter(logging.Formatter):
    """OneLineFormatter writes each record's message on one line, its control characters escaped (\\n, \\x1b):
    a value a client or a handler chose (a path, a change's kind, a task's error) cannot forge a line of the
    log, nor send escape sequences to the terminal that reads it. A traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _LOG_CONTROL.sub(lambda m: repr(m.group())[1:-1], record.message)
        return super().formatMessage(record)


def setup_logging(level: str) -> None:
    """setup_logging sends log records to stderr: plain lines for journald, coloured ones on a terminal; each
    message on one line (OneLineFormatter)."""
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(OneLineFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per request only when debugging.
    logging.getLogger("uvicorn.access").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


def bind_socket(path: Path, mode: int = SOCKET_MODE) -> socket.socket:
    """bind_socket listens on a Unix socket at path, replacing a stale socket file left by a crash."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise DaemonError(f"cannot listen on {path}: it exists and is not a socket")
        try:
            path.unlink()  # the database lock is ours: no other daemon uses this state directory
        except OSError as e:
            raise DaemonError(f"cannot remove the stale socket {path}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise DaemonError(f"cannot listen on {path}: {e.strerror or e}") from None
    return sock


#: SD_LISTEN_FDS_START is the first descriptor systemd passes to a socket-activated service.
SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """inherited_socket returns the listening socket systemd passed (socket activation), or None.

    It follows sd_listen_fds: $LISTEN_PID must be this process and $LISTEN_FDS
    one descriptor, a Unix stream socket, at fd 3. The variables are then
    removed so that children do not take the socket for theirs.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = os.environ.get("LISTEN_FDS", "0")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count in ("", "0"):
        return None
    if count != "1":
        raise DaemonError(f"cannot use the sockets systemd passed: one Unix socket is expected, not {count}")
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as e:
        raise DaemonError(f"cannot use the socket systemd passed: {e.strerror or e}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise DaemonError("cannot use the socket systemd passed: it is not a Unix stream socket")
    os.set_inheritable(sock.fileno(), False)
    return sock


def remove_socket(path: Path, identity: tuple[int, int]) -> None:
    """remove_socket removes the socket file at path if it is still the one bound (device, inode)."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            path.unlink()


def log_resumed(st: State) -> None:
    """log_resumed says, one line each, which changes a start takes up again: those not ready (lock held)."""
    for chg in st.changes():
        try:
            status = chg.status
        except DatabaseCorruptError:  # a row edited by hand: the API names it (state-damaged); the start goes on
            continue
        if not status.ready:
            log.info("resuming change %s (%s): %s", chg.id, chg.kind, status.value)


#: MakeOverlord builds the overlord a daemon serves; it is called once, in Daemon.run().
MakeOverlord = Callable[[], "Overlord"]
#: OnStart is called with the overlord and where the socket is, before the loop starts (lock not held);
#: it may return more endpoints to serve.
OnStart = Callable[["Overlord", str], "Sequence[Endpoint] | None"]


class Daemon:
    """Daemon serves an overlord's REST API on a Unix socket and runs its ensure loop, until SIGTERM or SIGINT.

    It is the building block of any daemon built on the engine: hand it a
    function that makes your Overlord, the endpoints to serve (CORE_ENDPOINTS,
    the changes, tasks, warnings and system-info of any overlord, plus your
    own) and the access rules, and it does the rest as `overlord daemon` does:
    peer credentials on every request, the connection bounds, the header
    timeout, the envelopes and errors, READY=1 and socket activation for
    systemd, and a stop that lets requests finish and handlers return.
    """

    def __init__(self, make_overlord: MakeOverlord, *, socket_path: Path,
                 endpoints: Sequence[Endpoint] | None = None, policy: AccessPolicy | None = None,
                 limits: Limits | None = None, stop_timeout: float = 10.0,
                 info: Callable[[Overlord], Mapping[str, Any]] | None = None, upload_dir: Path | None = None,
                 on_start: OnStart | None = None, web: tuple[str, int] | None = None) -> None:
        policy = policy or AccessPolicy()
        policy.check()
        limits = limits or Limits()
        limits.check()
        self.make_overlord = make_overlord
        self.socket_path = socket_path
        self.endpoints = list(CORE_ENDPOINTS if endpoints is None else endpoints)
        self.policy = policy
        self.limits = limits
        self.stop_timeout = stop_timeout
        self.info = info
        self.upload_dir = upload_dir
        self.on_start = on_start
        #: The loopback address and port of the web view (--web), or None: the page is on the socket only.
        self.web = web
        self._signals: list[int] = []
        self._server: uvicorn.Server | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)
        server = self._server
        if server is not None:
            server.should_exit = True

    def run(self) -> int:
        """run serves until SIGTERM or SIGINT; it returns the exit status."""
        from importlib.metadata import PackageNotFoundError, version

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.limits = self.limits.fit_descriptors()
        o = self.make_overlord()
        try:
            try:
                pkg_version = version("overlord-engine")
            except PackageNotFoundError:
                pkg_version = "unknown"
            sock = inherited_socket()
            identity: tuple[int, int] | None = None  # the socket file to remove at stop: only one we bound
            if sock is None:
                sock = bind_socket(self.socket_path)
                st = os.lstat(self.socket_path)
                identity = (st.st_dev, st.st_ino)
            where = sock.getsockname() or str(self.socket_path)
            listeners: list[socket.socket] = [sock]
            web_url = None
            try:
                if self.web is not None:
                    closed = others_reach(Path(str(where)))
                    if closed is not None:
                        raise DaemonError(f"cannot serve the web view: {closed}, and the web port would show "
                                          "them what the socket does not (let them reach the socket: 0755 "
                                          "directories above it; or run without --web)")
                    web_sock = self._bind_web(*self.web)
                    listeners.append(web_sock)
                    web_url = url_of(web_sock)
                extra = list(self.on_start(o, str(where)) or []) if self.on_start is not None else []
                guard = ConnectionGuard(self.limits, self.policy)
                listeners = [GuardedListener.wrap(s, guard, str(where) if s is sock else str(web_url))
                             for s in listeners]
                with o.state:
                    log_resumed(o.state)
                ctx = Context(o, self.policy, upload_dir=self.upload_dir, info={
                    "version": pkg_version, "socket": str(where), "socket-activated": identity is None,
                    "pid": os.getpid(), "web": web_url, **(self.info(o) if self.info is not None else {}),
                }, connections=guard.stats)
                app = PortGuard(build_app(ctx, [*self.endpoints, *extra], web_routes(ctx)))
                o.loop()
                if not self._signals:
                    asyncio.run(self._serve(app, listeners, str(where), web_url))
            finally:
                if identity is not None:
                    remove_socket(self.socket_path, identity)
                for s in listeners:
                    s.close()
            notify("STOPPING=1")
            log.info("stopping the overlord (handlers get %g s to return)", self.stop_timeout)
        finally:
            o.stop()
        log.info("stopped")
        return 0

    @staticmethod
    def _bind_web(host: str, port: int) -> socket.socket:
        """_bind_web listens on the web view's loopback port (DaemonError, one line, when it cannot)."""
        try:
            return bind_port(host, port)
        except OSError as e:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise DaemonError(f"cannot serve the web view on {shown}: {e.strerror or e}") from None

    async def _serve(self, app: Any, sockets: list[socket.socket], where: str, web_url: str | None) -> None:
        asyncio.get_running_loop().set_exception_handler(exception_handler)
        noise = ClientNoiseFilter(self.limits.log_interval)
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(noise)
        try:
            await self._serve_app(app, sockets, where, web_url)
        finally:
            uvicorn_log.removeFilter(noise)

    async def _serve_app(self, app: Any, sockets: list[socket.socket], where: str, web_url: str | None) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None, http=_protocol(self.limits), ws="none",
                                timeout_graceful_shutdown=int(HTTP_GRACE), access_log=True)
        server = self._server = uvicorn.Server(config)
        if self._signals:
            return
        ready = asyncio.create_task(self._notify_ready(server, where, web_url))
        try:
            await server.serve(sockets=sockets)
        finally:
            ready.cancel()

    async def _notify_ready(self, server: uvicorn.Server, where: str, web_url: str | None) -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        log.info("serving the API on %s (POST for %s)", where, self.policy.describe())
        if web_url is not None:
            log.info("serving the web view, read only, on %s (and at /web/ on the socket)", web_url)
        notify("READY=1")
