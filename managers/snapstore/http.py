# SPDX-License-Identifier: GPL-3.0-or-later
"""A store over HTTP: the same layout as a store directory, read with GET (and Range to resume downloads).

``HttpSnapStore(url)`` reads a store that ``serve()`` (``overlord store serve DIR``)
or any static web server publishes. It cannot list directories, so it reads
``index.yaml`` (every snap's revisions, written by push and release) for the
names and revisions; the rest is the directory store's files, checked the
same way. Downloads resume with ``Range: bytes=N-`` and are verified by the
snap manager as any download (size and sha3-384). Network errors come out as
OSErrors with a transient errno (ECONNRESET, ETIMEDOUT, ...), so the
download task's retry policy applies.

A store may be slow or hostile, so every request is bounded (docs/daemon.md,
"Limits and threats"): a connection within CONNECT_TIMEOUT, each wait for
bytes within READ_TIMEOUT, the whole of a metadata request (index.yaml, a
revision entry, channels, an assertion) within the store's timeout (default
DEFAULT_TIMEOUT, `overlord daemon --store-timeout`), a download within that
timeout plus its size at MIN_DOWNLOAD_RATE; a metadata answer larger than
its bound (4 bytes per character of what is read of it) is refused, with
one line naming the store. The deadline covers every read and write of the
socket (a store trickling a byte at a time is cut off), not only the waits
between bytes: the connections are httpcore's, through a network backend
that caps each socket operation's timeout by the time left.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import errno
import http.server
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpcore

from ..asserts.build import snap_id_for
from ..errors import SnapNotFoundError, StoreError
from ..snap import valid_snap_name
from .directory import SnapStore
from .records import LARGE_FILE, SMALL_FILE, StoreSnap

log = logging.getLogger("managers.snapstore")

#: DEFAULT_TIMEOUT is how long one request for a store's metadata may take, all of it, in seconds: less than
#: the client's 30 s (overlord.client), so that `overlord install` shows the store's error, not its own.
DEFAULT_TIMEOUT = 20.0
#: CONNECT_TIMEOUT is how long connecting to the store may take; READ_TIMEOUT how long the store may send
#: nothing (waiting for its answer, or between two parts of it); both are cut to the request's deadline.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 15.0
#: MIN_DOWNLOAD_RATE (bytes per second): a download's deadline is the timeout plus its size at this rate.
MIN_DOWNLOAD_RATE = 16 * 1024
#: HTTP_ERRORS are what httpcore raises when a request fails.
HTTP_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
               httpcore.ProxyError, httpcore.ConnectionNotAvailable)


# -- the deadline of a request -----------------------------------------------------------------------

#: _DEADLINE is the time.monotonic() by which the request in progress in this thread must be over (None: no
#: deadline); _DeadlineStream cuts every socket operation's timeout to what is left of it.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("store_deadline", default=None)


@contextlib.contextmanager
def _until(deadline: float) -> Iterator[None]:
    """_until makes the socket operations of this thread end by deadline (an outer, earlier one stays)."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """_bounded is timeout cut to what is left of the deadline; error when nothing is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """_DeadlineStream is a socket stream whose every operation ends by the deadline of its request."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """_DeadlineBackend connects (by the deadline) and gives _DeadlineStreams."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _bounded(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _bounded(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def is_http(location: str | Path) -> bool:
    """is_http says whether a store location is an http:// or https:// URL."""
    return str(location).startswith(("http://", "https://"))


def open_snap_store(location: str | Path, *, timeout: float | None = None) -> SnapStore:
    """open_snap_store is the store at location: a directory, a file:// URL, or an http(s):// URL.

    timeout bounds each request to an HTTP store (default DEFAULT_TIMEOUT); a directory has none.
    """
    if is_http(location):
        return HttpSnapStore(str(location), timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
    return SnapStore(location)


def _os_error(e: Exception, url: str, timeout: float) -> OSError:
    """_os_error turns an httpcore failure into an OSError whose errno says whether trying again may help."""
    if isinstance(e, httpcore.TimeoutException):
        return OSError(errno.ETIMEDOUT, f"cannot download {url}: the store did not send it in time "
                                        f"({type(e).__name__}; the bound is {timeout:g} s and its size at "
                                        f"{MIN_DOWNLOAD_RATE // 1024} KiB/s)")
    return OSError(errno.ECONNRESET, f"cannot download {url}: {type(e).__name__}: {e}")


class HttpSnapStore(SnapStore):
    """HttpSnapStore reads a store published over HTTP (read only); timeout bounds each metadata request."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise StoreError(f"cannot use store {url} with timeout {timeout!r}: give a positive number of seconds")
        self.location = url
        self.base = url if url.endswith("/") else url + "/"
        self.root = Path("/nonexistent-http-store")  # never a directory: writes refuse
        self.timeout = float(timeout)
        self._pool = httpcore.ConnectionPool(network_backend=_DeadlineBackend(), retries=0)

    def _timeouts(self, deadline: float) -> dict[str, float]:
        """_timeouts are httpcore's timeouts of a request that must end by deadline (the backend cuts them too)."""
        left = max(deadline - time.monotonic(), 0.001)
        return {"connect": min(CONNECT_TIMEOUT, left), "read": min(READ_TIMEOUT, left),
                "write": min(READ_TIMEOUT, left), "pool": left}

    def _send(self, url: str, deadline: float, headers: dict[str, str] | None = None) -> httpcore.Response:
        """_send starts a GET of url that must end by deadline; its body is read from the response's stream."""
        with _until(deadline):
            return self._pool.handle_request(httpcore.Request(
                "GET", url, headers=[("Host", urllib.parse.urlsplit(url).netloc.rpartition("@")[2]),
                                     ("Accept", "*/*"), *(headers or {}).items()],
                extensions={"timeout": self._timeouts(deadline)}))

    def _url(self, rel: str) -> str:
        return self.base + urllib.parse.quote(rel)

    def _where(self, rel: str) -> str:
        return self._url(rel)

    def _check_dir(self) -> None:
        """_check_dir has nothing to check before reading: the server answers, or the read fails."""

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """_writing refuses: a store served over HTTP is read only."""
        raise StoreError(f"cannot write to the store {self.location}: a store served over HTTP is read only")
        yield  # pragma: no cover

    def _read_text(self, rel: str, limit: int = SMALL_FILE) -> str | None:
        """_read_text is a metadata file of the store (None: 404), read whole by the deadline and refused when
        it is larger than limit characters (4 bytes each at most)."""
        url = self._url(rel)
        cap = 4 * limit
        too_large = (f"cannot read store entry {url}: the store's answer is larger than {cap} bytes, the most "
                     "an entry of a store may have")
        body = bytearray()
        deadline = time.monotonic() + self.timeout
        try:
            rsp = self._send(url, deadline)
            try:
                if rsp.status == 404:
                    return None
                if rsp.status != 200:
                    raise StoreError(f"cannot read store entry {url}: HTTP {rsp.status}")
                length = _content_length(rsp)
                if length is not None and length > cap:
                    raise StoreError(too_large)
                with _until(deadline):
                    for chunk in rsp.iter_stream():  # what is past the bound is never read
                        body += chunk
                        if len(body) > cap:
                            raise StoreError(too_large)
            finally:
                rsp.close()
        except httpcore.TimeoutException:
            raise StoreError(f"cannot read store entry {url}: the store did not answer within {self.timeout:g} s "
                             "(overlord daemon --store-timeout)") from None
        except HTTP_ERRORS as e:
            raise StoreError(f"cannot read store entry {url}: {type(e).__name__}: {e}") from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoreError(f"cannot read store entry {url}: {e}") from None
        if len(text) > limit:
            raise StoreError(f"cannot read store entry {url}: the store's answer is longer than {limit} characters, "
                             "the most an entry of a store may have")
        return text

    def _revisions_index(self) -> dict[str, list[int]]:
        data = self._yaml_map("index.yaml", LARGE_FILE)
        if data is None:
            raise StoreError(f"cannot use store {self.location}: it has no index.yaml (run overlord store init on "
                             "its directory, or push or release once, to write it)")
        snaps = data.get("snaps") or {}
        if not isinstance(snaps, dict):
            raise StoreError(f"cannot read {self._url('index.yaml')}: snaps is not a mapping")
        out = {}
        for name, revs in snaps.items():
            if valid_snap_name(name) and isinstance(revs, list):
                out[str(name)] = sorted((r for r in revs if isinstance(r, int) and not isinstance(r, bool)
                                         and r > 0), reverse=True)
        return out

    def revisions(self, name: str) -> list[int]:
        """revisions are the revisions the store has of name, newest first (from index.yaml)."""
        return self._revisions_index().get(name, [])

    def names(self) -> list[str]:
        """names are the snaps the store has a revision of, sorted."""
        return sorted(n for n, revs in self._revisions_index().items() if revs)

    def snap(self, name: str, revision: str | None = None, *, channel: str | None = None) -> StoreSnap:
        """snap is as for a directory store; a given revision is read directly, without index.yaml."""
        if revision is not None and valid_snap_name(name) and revision.isdigit():
            if self._read_text(f"snaps/{name}/{revision}.yaml") is None:
                raise SnapNotFoundError(f"cannot find revision {revision} of snap {name!r} in the store "
                                        f"{self.location}")
            return self._read_meta(name, revision)
        return super().snap(name, revision, channel=channel)

    def open(self, snap: StoreSnap) -> BinaryIO:
        """open is a reader of the snap file that downloads from where it is sought to (Range), by a deadline:
        the timeout plus the file's size at MIN_DOWNLOAD_RATE."""
        return _HttpReader(self, self._url(f"snaps/{snap.name}/{snap.revision}.snap"),  # type: ignore[return-value]
                           self.timeout + snap.size / MIN_DOWNLOAD_RATE)

    def declaration(self, name: str) -> Any:
        """declaration is the snap-declaration of name (found by the snap id its revisions name): one read of
        index.yaml, and no local directory listed."""
        revs = self.revisions(name)
        ids = ([self.snap(name, str(revs[0])).snap_id] if revs else []) + [snap_id_for(name)]
        for sid in ids:
            a = self._decoded("snap-declaration", ("16", sid))
            if a is not None and a.header("snap-name") == name:
                return a
        return None


def _content_length(rsp: httpcore.Response) -> int | None:
    for name, value in rsp.headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _HttpReader:
    """_HttpReader is the file-like object fetch_blob reads: seek(n) before the first read resumes at n."""

    def __init__(self, store: HttpSnapStore, url: str, budget: float) -> None:
        self.store = store
        self.url = url
        self.budget = budget
        self.deadline = 0.0
        self.offset = 0
        self._stream: httpcore.Response | None = None
        self._iter: Any = None
        self._buf = b""

    def __enter__(self) -> _HttpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seek(self, offset: int) -> None:
        if self._stream is not None:
            raise OSError(errno.ESPIPE, "cannot seek an HTTP download once it started")
        self.offset = offset

    def _start(self) -> None:
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        self.deadline = time.monotonic() + self.budget
        try:
            self._stream = self.store._send(self.url, self.deadline, headers)
        except HTTP_ERRORS as e:
            raise _os_error(e, self.url, self.store.timeout) from None
        status = self._stream.status
        if status == 404:
            self.close()
            raise FileNotFoundError(errno.ENOENT, f"cannot download {self.url}: HTTP 404")
        if status >= 500:
            self.close()
            raise OSError(errno.EAGAIN, f"cannot download {self.url}: HTTP {status}")
        if status not in (200, 206):
            self.close()
            raise OSError(errno.EIO, f"cannot download {self.url}: HTTP {status}")
        self._iter = self._stream.iter_stream()
        if self.offset and status == 200:  # the server ignored Range: skip what is there already
            skip = self.offset
            while skip > 0:
                chunk = self._next()
                if not chunk:
                    break
                if len(chunk) > skip:
                    self._buf = chunk[skip:]
                skip -= len(chunk)

    def _next(self) -> bytes:
        try:
            with _until(self.deadline):
                return bytes(next(self._iter, b""))
        except HTTP_ERRORS as e:
            raise _os_error(e, self.url, self.store.timeout) from None

    def read(self, n: int = -1) -> bytes:
        if self._stream is None:
            self._start()
        if self._buf:
            out, self._buf = self._buf[:n] if n > 0 else self._buf, self._buf[n:] if n > 0 else b""
            return out
        chunk = self._next()
        if n > 0 and len(chunk) > n:
            chunk, self._buf = chunk[:n], chunk[n:]
        return chunk

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


# -- serving a store directory ---------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})\Z")
#: REQUESTS_KEPT is how many GETs a server remembers (_Handler.requests, for tests).
REQUESTS_KEPT = 256


class _Handler(http.server.BaseHTTPRequestHandler):
    """_Handler serves the files of a store directory: GET and HEAD, Range, no listings, nothing hidden."""

    server_version = "overlord-store"
    root: Path
    #: requests records (path, Range header) of the last REQUESTS_KEPT GETs, for tests (a server runs for ever).
    requests: collections.deque[tuple[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        log.info("store serve: %s %s", self.address_string(), format % args)

    def _file(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None  # no listings, no dot files (.staging, .lock), no escapes
        path = self.root.joinpath(*parts)
        try:
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(self.root.resolve()):
                return path
        except OSError:
            return None
        return None

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("Range", "")))
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = self._file()
        if path is None:
            self.send_error(404, "not found")
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if m is None or int(m.group(1)) >= max(size, 1) or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(left, 256 * 1024))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    """make_server is a read-only HTTP server of a store directory (call serve_forever; port 0: any free one)."""
    root = Path(directory).absolute()
    if not root.is_dir():
        raise StoreError(f"cannot serve {root}: it is not a directory")
    handler = type("StoreHandler", (_Handler,), {"root": root, "requests": collections.deque(maxlen=REQUESTS_KEPT)})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(directory: str | Path, host: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, str]:
    """serve_in_thread serves a store directory from a thread on a free port; it returns the server and its URL."""
    server = make_server(directory, host, 0)
    threading.Thread(target=server.serve_forever, name="store-serve", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"


__all__ = ["CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "MIN_DOWNLOAD_RATE", "READ_TIMEOUT", "HttpSnapStore", "is_http",
           "make_server", "open_snap_store", "serve_in_thread"]
