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
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ..asserts.build import snap_id_for
from ..errors import SnapNotFoundError, StoreError
from ..snap import valid_snap_name
from .directory import SnapStore
from .records import LARGE_FILE, SMALL_FILE, StoreSnap

log = logging.getLogger("managers.snapstore")

#: TIMEOUT is how long an HTTP store may take to answer (connect and each read), in seconds.
TIMEOUT = 30.0


def is_http(location: str | Path) -> bool:
    """is_http says whether a store location is an http:// or https:// URL."""
    return str(location).startswith(("http://", "https://"))


def open_snap_store(location: str | Path) -> SnapStore:
    """open_snap_store is the store at location: a directory, a file:// URL, or an http(s):// URL."""
    return HttpSnapStore(str(location)) if is_http(location) else SnapStore(location)


def _os_error(e: httpx.HTTPError, url: str) -> OSError:
    """_os_error turns an httpx failure into an OSError whose errno says whether trying again may help."""
    code = errno.ETIMEDOUT if isinstance(e, httpx.TimeoutException) else errno.ECONNRESET
    return OSError(code, f"cannot read {url}: {type(e).__name__}: {e}")


class HttpSnapStore(SnapStore):
    """HttpSnapStore reads a store published over HTTP (read only)."""

    def __init__(self, url: str) -> None:
        self.location = url
        self.base = url if url.endswith("/") else url + "/"
        self.root = Path("/nonexistent-http-store")  # never a directory: writes refuse
        self._client = httpx.Client(timeout=TIMEOUT, follow_redirects=False)

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
        url = self._url(rel)
        body = b""
        try:
            with self._client.stream("GET", url) as rsp:
                if rsp.status_code == 404:
                    return None
                if rsp.status_code != 200:
                    raise StoreError(f"cannot read store entry {url}: HTTP {rsp.status_code}")
                for chunk in rsp.iter_raw(65536):  # what is past the limit is not read
                    body += chunk
                    if len(body) > 4 * limit:
                        break
        except httpx.HTTPError as e:
            raise StoreError(f"cannot read store entry {url}: {type(e).__name__}: {e}") from None
        try:
            return body.decode("utf-8")[:limit]
        except UnicodeDecodeError as e:
            raise StoreError(f"cannot read store entry {url}: {e}") from None

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
        """open is a reader of the snap file that downloads from where it is sought to (Range)."""
        return _HttpReader(self._client, self._url(f"snaps/{snap.name}/{snap.revision}.snap"))  # type: ignore[return-value]

    def declaration(self, name: str) -> Any:
        """declaration is the snap-declaration of name (found by the snap id its revisions name)."""
        revs = self.revisions(name)
        ids = ([self.snap(name, str(revs[0])).snap_id] if revs else []) + [snap_id_for(name)]
        for sid in ids:
            a = self._decoded("snap-declaration", ("16", sid))
            if a is not None and a.header("snap-name") == name:
                return a
        return None


class _HttpReader:
    """_HttpReader is the file-like object fetch_blob reads: seek(n) before the first read resumes at n."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url
        self.offset = 0
        self._stream: Any = None
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
        try:
            req = self.client.build_request("GET", self.url, headers=headers)
            self._stream = self.client.send(req, stream=True)
        except httpx.HTTPError as e:
            raise _os_error(e, self.url) from None
        status = self._stream.status_code
        if status == 404:
            self.close()
            raise FileNotFoundError(errno.ENOENT, f"cannot download {self.url}: HTTP 404")
        if status >= 500:
            self.close()
            raise OSError(errno.EAGAIN, f"cannot download {self.url}: HTTP {status}")
        if status not in (200, 206):
            self.close()
            raise OSError(errno.EIO, f"cannot download {self.url}: HTTP {status}")
        self._iter = self._stream.iter_raw(256 * 1024)
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
            return next(self._iter, b"")
        except httpx.HTTPError as e:
            raise _os_error(e, self.url) from None

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

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    """_Handler serves the files of a store directory: GET and HEAD, Range, no listings, nothing hidden."""

    server_version = "overlord-store"
    root: Path
    #: requests records (path, Range header) of each GET, for tests.
    requests: list[tuple[str, str]]

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
            if m is None or int(m.group(1)) >= max(size, 1):
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
    handler = type("StoreHandler", (_Handler,), {"root": root, "requests": []})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(directory: str | Path, host: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, str]:
    """serve_in_thread serves a store directory from a thread on a free port; it returns the server and its URL."""
    server = make_server(directory, host, 0)
    threading.Thread(target=server.serve_forever, name="store-serve", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"


__all__ = ["HttpSnapStore", "is_http", "make_server", "open_snap_store", "serve_in_thread"]
