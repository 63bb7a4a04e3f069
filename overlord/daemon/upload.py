# SPDX-License-Identifier: GPL-3.0-or-later
"""Receiving a multipart/form-data upload (a snap file) straight into a file of the state directory.

The body is parsed as it arrives (python-multipart, Starlette's own form
parser), each file part written to ``<upload dir>/upload-XXXX.partial``
(mode 0600), so a large file never sits in memory; the whole body is
limited to MAX_UPLOAD bytes (413 beyond), a text field to MAX_FIELD bytes,
and a form to MAX_PARTS parts. Whatever the handler does not keep is
deleted when the request ends (Upload.discard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import ApiError, ErrorKind, bad_request, shown

#: MAX_UPLOAD is the largest upload accepted, in bytes (a snap's extracted files may hold up to 1 GiB).
MAX_UPLOAD = 1024 * 1024 * 1024
#: MAX_FIELD is the largest text field of a form, in bytes.
MAX_FIELD = 4096
#: MAX_PARTS is how many parts a form may have.
MAX_PARTS = 16
#: PARTIAL is the suffix of a file still being received.
PARTIAL = ".partial"


@dataclass
class UploadedFile:
    """UploadedFile is one file part of a form, received into path."""

    field: str
    filename: str
    path: Path
    size: int = 0
    #: Set by the handler that takes the file over (it is then not deleted with the request).
    kept: bool = False
    #: The SHA-256 of the bytes received, hashed as they arrive (what an idempotent upload compares).
    hash: Any = dataclasses.field(default_factory=hashlib.sha256, repr=False, compare=False)  # not `field`: shadowed

    def sha256(self) -> str:
        """sha256 is the hex SHA-256 of the file received."""
        return str(self.hash.hexdigest())


@dataclass
class Upload:
    """Upload is a received form: its text fields and its files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    def discard(self) -> None:
        """discard deletes the files no handler kept."""
        for f in self.files:
            if not f.kept:
                with contextlib.suppress(FileNotFoundError):
                    f.path.unlink()


def is_form(request: Request) -> bool:
    """is_form says whether a request carries a multipart/form-data body."""
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _too_large() -> ApiError:
    return ApiError(413, ErrorKind.REQUEST_TOO_LARGE, f"cannot read upload: it is larger than {MAX_UPLOAD} bytes")


class _Receiver:
    """_Receiver gets the parser's callbacks and writes what they carry where it goes."""

    def __init__(self, directory: Path, upload: Upload) -> None:
        self.directory = directory
        self.upload = upload
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, bytes] = {}
        self.name = ""
        self.value: bytearray | None = None
        self.file: IO[bytes] | None = None
        self.current: UploadedFile | None = None
        self.parts = 0
        self.ended = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise bad_request(f"cannot read upload: a form has at most {MAX_PARTS} parts")
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise bad_request("cannot read upload: a part has no Content-Disposition: form-data; name=...")
        self.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=PARTIAL, dir=self.directory)
            self.file = os.fdopen(fd, "wb")
            self.current = UploadedFile(self.name, os.path.basename(options[b"filename"].decode("utf-8", "replace")),
                                        Path(tmp))
            self.upload.files.append(self.current)
        else:
            self.value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.file is not None and self.current is not None:
            self.file.write(data[start:end])
            self.current.hash.update(data[start:end])
            self.current.size += end - start
        elif self.value is not None:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD:
                raise bad_request(f"cannot read upload: field {shown(self.name)} is longer than {MAX_FIELD} bytes")

    def on_part_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            self.current = None
        elif self.value is not None:
            try:
                self.upload.fields[self.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_request(f"cannot read upload: field {shown(self.name)} is not UTF-8 text") from None
            self.value = None

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def receive_form(request: Request, directory: Path) -> Upload:
    """receive_form reads a multipart/form-data body into an Upload; its errors are ApiErrors (the files go)."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise bad_request("cannot read upload: its Content-Type has no boundary")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
        raise _too_large()
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise ApiError(500, ErrorKind.INTERNAL_ERROR, f"internal error: cannot create {directory}: {e.strerror}") \
            from None
    upload = Upload()
    receiver = _Receiver(directory, upload)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end", "on_end")}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise _too_large()
            try:
                parser.write(chunk)
            except FormParserError as e:
                raise bad_request(f"cannot read upload: malformed multipart/form-data ({e})") from None
        if not receiver.ended:
            raise bad_request("cannot read upload: the body ends before the form does")
    except BaseException:
        receiver.close()
        upload.discard()
        raise
    return upload
