# SPDX-License-Identifier: GPL-3.0-or-later
"""CtlServer: `overlord ctl` for hooks run by an overlord that serves no API (a SystemOverlord in a program).

Under the daemon, a hook's `overlord ctl` posts to the daemon's socket
(POST /v2/snapctl). An overlord embedded in a program has no such socket,
so the hook manager serves that one endpoint itself, on a Unix socket in a
private directory (0700: the daemon's user only, which is who hooks run
as), for as long as it runs. It answers with the daemon's envelopes, and
acts exactly as the daemon's endpoint does: the hook's token alone names
the snap, through the function the configuration manager gives (run_ctl).
"""

from __future__ import annotations

import http.server
import json
import logging
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("managers.hookstate")

#: CtlFunction runs `ctl ARGS` for the hook of a token (taking the state lock itself); it returns the output,
#: and raises PermissionError for a token no running hook has, ValueError for a bad command.
CtlFunction = Callable[[str, list[str]], str]
#: MAX_BODY is the largest request accepted, in bytes (the daemon's bound).
MAX_BODY = 1024 * 1024


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    ctl: CtlFunction


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ctl server: " + format, *args)

    def address_string(self) -> str:
        return "hook"  # a Unix socket has no client address

    def do_POST(self) -> None:
        if self.path != "/v2/snapctl":
            self._answer(404, "not-found", "cannot find it: only /v2/snapctl is served here")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError("the body is too large")
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError('the body must be {"context-id": TOKEN, "args": [...]}')
            token, args = body.get("context-id"), body.get("args")
            if not isinstance(token, str) or not isinstance(args, list) or \
                    not all(isinstance(a, str) for a in args):
                raise ValueError('the body must be {"context-id": TOKEN, "args": [...]}')
        except ValueError as e:
            self._answer(400, "bad-request", f"cannot run ctl: {e}")
            return
        except RecursionError:
            self._answer(400, "bad-request", "cannot run ctl: the body nests too deeply")
            return
        try:
            out = self.server.ctl(token, args)
        except PermissionError as e:
            self._answer(403, "permission-denied", str(e))
        except ValueError as e:
            self._answer(400, "bad-request", str(e))
        except Exception:
            log.exception("internal error: ctl %s failed", args[:1])
            self._answer(500, "internal-error", "internal error: cannot run ctl (the log has details)")
        else:
            self._send(200, {"type": "sync", "status-code": 200, "status": "OK",
                             "result": {"stdout": out, "stderr": ""}})

    def _answer(self, status: int, kind: str, message: str) -> None:
        self._send(status, {"type": "error", "status-code": status, "status": self.responses[status][0],
                            "result": {"message": message, "kind": kind}})

    def _send(self, status: int, envelope: dict[str, Any]) -> None:
        data = json.dumps(envelope).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class CtlServer:
    """CtlServer serves POST /v2/snapctl on a private Unix socket, in a thread of its own."""

    def __init__(self, ctl: CtlFunction) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="overlord-ctl-"))  # 0700
        self.socket = self._dir / "ctl.socket"
        self._server = _Server(str(self.socket), _Handler)
        self._server.ctl = ctl
        self._thread = threading.Thread(target=self._server.serve_forever, name="managers-ctl", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """close stops serving and removes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)
