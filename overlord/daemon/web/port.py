# SPDX-License-Identifier: GPL-3.0-or-later
"""The web port (``overlord daemon --web 127.0.0.1:PORT``): a loopback TCP port serving the web view read only.

A browser cannot reach a Unix socket, so the daemon may also listen on a
loopback TCP port. That port must give nobody more than the socket gives
everyone (docs/daemon.md, "The web view"):

- only where the socket is open to every local user (others_reach): a
  daemon whose socket only root can reach refuses --web rather than show
  the others what the socket hides from them;
- loopback only: parse_address refuses any address that is not 127.0.0.0/8,
  ::1 or "localhost", so only processes of this machine (and of its network
  namespace) can connect: the same people who can connect to the socket;
- read only, and only what the page reads: PortGuard answers GET and HEAD of
  the page, its files and the GETs it makes (changes, notices, warnings),
  and refuses every other method and path before any handler runs;
- no credentials: a TCP peer has no SO_PEERCRED record, so its requests are
  those of a peer whose credentials cannot be read (never root, never the
  group): every rule of the API that looks at the caller refuses it;
- no DNS rebinding: a page of another site that made a browser resolve its
  name to 127.0.0.1 is refused, since its requests name that site in
  ``Host``: only a loopback address or ``localhost`` is served.

Its connections count, all together, as one user of the connection bounds
(``--max-user-connections``), so the port cannot take root's reserve.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from ..errors import ErrorKind

#: WEB_PORT_KEY marks, in the ASGI scope's extensions, a request that came through the web port.
WEB_PORT_KEY = "overlord.web_port"
#: The paths the web port serves (anything else is the socket's alone): the page, its files, what it reads.
ALLOWED_PATHS = re.compile(r"/|/web/?|/web/changes/[^/]+|/web/static/[^/]+|/v2/changes|/v2/changes/[^/]+"
                           r"|/v2/notices|/v2/warnings")
#: The methods the web port answers: it only reads.
ALLOWED_METHODS = frozenset({"GET", "HEAD"})

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def parse_address(text: str) -> tuple[str, int]:
    """parse_address reads --web's HOST:PORT (or PORT alone: 127.0.0.1); HOST must be a loopback address.

    PORT 0 lets the system pick a free port (the daemon logs it and GET
    /v2/system-info tells it). ValueError, one line, for anything else.
    """
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", raw
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"cannot serve the web view on {text!r}: give HOST:PORT with a port from 0 to 65535, "
                         "e.g. 127.0.0.1:8080")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"cannot serve the web view on {text!r}: {host!r} is not an IP address (give a loopback "
                         "address such as 127.0.0.1 or ::1, or localhost)") from None
    if not ip.is_loopback:
        raise ValueError(f"cannot serve the web view on {text!r}: {host} is not a loopback address; the page "
                         "shows the system's changes to whoever connects, so it is served on 127.0.0.1 or ::1 "
                         "only (reach it from elsewhere through ssh -L)")
    return str(ip), int(port_text)


def bind_port(host: str, port: int) -> socket.socket:
    """bind_port listens on host:port (TCP); OSError when it cannot (a port in use, say)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def others_reach(path: Path) -> str | None:
    """others_reach says why users other than the owner cannot connect to the socket at path (None: they can).

    Connecting needs search permission on every directory above the socket
    and write permission on it; the web port lets every local user in, so it
    is served only where the socket lets them in too.
    """
    try:
        target = path.resolve()
        for d in reversed(target.parents):
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return f"the directory {d} is closed to other users"
        if not os.stat(target).st_mode & stat.S_IWOTH:
            return f"the socket {target} is closed to other users"
    except OSError as e:
        return f"cannot check who may reach {path}: {e.strerror or e}"
    return None


def url_of(sock: socket.socket) -> str:
    """url_of is the web view's address on a bound port, for people: http://127.0.0.1:PORT/."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_web_connection(sock: Any) -> bool:
    """is_web_connection says whether a connection came through a TCP (web) port rather than the Unix socket."""
    return sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)


def loopback_host(value: str | None) -> bool:
    """loopback_host says whether a Host header names this machine: localhost or a loopback address."""
    if not value:
        return False
    host = value.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(method: str, path: str, host: str | None) -> tuple[int, ErrorKind, str] | None:
    """refusal is why the web port does not serve a request (status, error kind, message), or None."""
    if not loopback_host(host):
        return (403, ErrorKind.PERMISSION_DENIED, f"cannot serve host {host or '(none)'!r} on the web port: only "
                "localhost or a loopback address (a page of another site is not let in)")
    if method not in ALLOWED_METHODS:
        return (405, ErrorKind.METHOD_NOT_ALLOWED, f"method {method} is not allowed on the web port: it only reads "
                "(the socket serves the whole API)")
    if ALLOWED_PATHS.fullmatch(path) is None:
        return (404, ErrorKind.NOT_FOUND, f"cannot find endpoint {path!r} on the web port: it serves the web view and "
                "what the page reads (the socket serves the whole API)")
    return None


class PortGuard:
    """PortGuard is the ASGI layer that lets through the web port only what the web view needs (see above).

    Requests that came through the Unix socket pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and (scope.get("extensions") or {}).get(WEB_PORT_KEY):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host")
            refused = refusal(scope.get("method", ""), scope.get("path", ""),
                              host.decode("latin-1") if host is not None else None)
            if refused is not None:
                await _answer(send, *refused)
                return
        await self.app(scope, receive, send)


async def _answer(send: Any, status: int, kind: ErrorKind, message: str) -> None:
    from http import HTTPStatus

    body = json.dumps({"type": "error", "status-code": status, "status": HTTPStatus(status).phrase,
                       "result": {"message": message, "kind": kind.value}}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
