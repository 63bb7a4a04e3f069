# SPDX-License-Identifier: GPL-3.0-or-later
"""Assertions: signed text documents in snapd's shape (headers, optional body, signature).

The signed content is the headers and, when there is one, a blank line and
the body; the encoded assertion is that content, a blank line, and the
signature (base64 of the 64-byte ed25519 signature) on one line::

    type: account
    authority-id: root
    account-id: acme
    display-name: ACME Corp
    timestamp: 2030-01-01T00:00:00Z
    sign-key-sha3-384: <id of the signing key>

    <signature>

Several assertions in one text (a stream) are separated by a blank line.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidAssertionError
from . import headers as hdr
from .keys import PrivateKey, PublicKey
from .types import COMMON, FORMATS, TYPES, AssertionType, parse_time

#: Size limits (snapd's): headers, body and signature.
MAX_HEADERS = 128 * 1024
MAX_BODY = 2 * 1024 * 1024
MAX_SIGNATURE = 128 * 1024
_BODY_LENGTH = re.compile(rb"^body-length: ([0-9]+)$", re.M)


@dataclass(frozen=True, eq=False)
class Assertion:
    """Assertion is one decoded (not yet verified) assertion."""

    headers: Mapping[str, Any]
    body: str
    content: bytes
    signature: bytes

    @property
    def type(self) -> AssertionType:
        """type is the assertion's AssertionType."""
        return TYPES[self.headers["type"]]

    @property
    def type_name(self) -> str:
        """type_name is the value of the type header."""
        return str(self.headers["type"])

    @property
    def authority_id(self) -> str:
        """authority_id is who signed it."""
        return str(self.headers["authority-id"])

    @property
    def revision(self) -> int:
        """revision is the revision header (0 when absent)."""
        return int(self.headers.get("revision", "0"))

    @property
    def sign_key_id(self) -> str:
        """sign_key_id is the id of the key that signed it."""
        return str(self.headers["sign-key-sha3-384"])

    @property
    def primary_key(self) -> tuple[str, ...]:
        """primary_key is the values of the type's primary-key headers."""
        return tuple(str(self.headers[h]) for h in self.type.primary_key)

    @property
    def ref(self) -> str:
        """ref names the assertion in messages: its type and primary key."""
        return f"{self.type_name} {'/'.join(self.primary_key)}"

    @property
    def text(self) -> str:
        """text is the encoded assertion, ending with a newline."""
        return (self.content + b"\n\n" + base64.b64encode(self.signature) + b"\n").decode()

    def header(self, name: str) -> str:
        """header returns a header's value as text ("" when absent)."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""

    def prerequisites(self) -> list[tuple[str, tuple[str, ...]]]:
        """prerequisites lists (type, primary key) of the assertions this one needs first."""
        return [(typ, tuple(p[1:] if p.startswith("=") else self.header(p) for p in parts))
                for typ, parts in self.type.prerequisites]

    def verify(self, key: PublicKey) -> bool:
        """verify says whether key signed this assertion."""
        return key.verify(self.signature, self.content)

    def __repr__(self) -> str:
        return f"<Assertion {self.ref} revision {self.revision}>"


def decode(text: str | bytes) -> Assertion:
    """decode reads exactly one assertion."""
    found = decode_stream(text)
    if len(found) != 1:
        raise InvalidAssertionError(f"cannot decode assertion: expected one, found {len(found)}")
    return found[0]


def decode_stream(text: str | bytes) -> list[Assertion]:
    """decode_stream reads the assertions of a stream (separated by blank lines)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    out: list[Assertion] = []
    pos = 0
    while True:
        while data[pos:pos + 1] == b"\n":
            pos += 1
        if pos >= len(data):
            return out
        n = len(out) + 1
        end_head = data.find(b"\n\n", pos)
        if end_head < 0:
            raise InvalidAssertionError(f"cannot decode assertion {n}: no blank line after the headers")
        head = data[pos:end_head]
        if len(head) > MAX_HEADERS:
            raise InvalidAssertionError(f"cannot decode assertion {n}: headers longer than {MAX_HEADERS} bytes")
        m = _BODY_LENGTH.search(head)
        digits = m.group(1) if m else b"0"
        # Its digits counted before int() reads them: past 4300 digits int() raises (and is quadratic before).
        length = int(digits) if len(digits) <= len(str(MAX_BODY)) else MAX_BODY + 1
        if length > MAX_BODY:
            raise InvalidAssertionError(f"cannot decode assertion {n}: body longer than {MAX_BODY} bytes")
        sig_start = end_head + 2
        if length:
            body_end = sig_start + length
            if data[body_end:body_end + 2] != b"\n\n":
                raise InvalidAssertionError(f"cannot decode assertion {n}: the body is not {length} bytes "
                                            "followed by a blank line (body-length)")
            content = data[pos:body_end]
            sig_start = body_end + 2
        else:
            content = head
        sig_end = data.find(b"\n", sig_start)
        sig_end = len(data) if sig_end < 0 else sig_end
        if sig_end - sig_start > MAX_SIGNATURE:
            raise InvalidAssertionError(f"cannot decode assertion {n}: signature too long")
        out.append(_assemble(content, head, data[sig_start:sig_end], length, n))
        pos = sig_end + 1


def _assemble(content: bytes, head: bytes, sig: bytes, length: int, n: int) -> Assertion:
    where = f"assertion {n}"
    try:
        head_text = head.decode("utf-8")
        body = content[len(head) + 2:].decode("utf-8") if length else ""
    except UnicodeDecodeError:
        raise InvalidAssertionError(f"cannot decode {where}: it is not UTF-8 text") from None
    try:
        headers = hdr.parse(head_text)
    except hdr.HeaderError as e:
        raise InvalidAssertionError(f"cannot decode {where}: {e}") from None
    if not head_text.startswith("type: "):
        raise InvalidAssertionError(f"cannot decode {where}: the first header must be type")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAssertionError(f"cannot decode {where}: the signature is not base64") from None
    if len(signature) != 64:
        raise InvalidAssertionError(f"cannot decode {where}: the signature is not an ed25519 signature")
    check_headers(headers, body, where)
    return Assertion(headers, body, content, signature)


def check_headers(headers: Mapping[str, Any], body: str, where: str = "assertion") -> None:
    """check_headers checks the headers an assertion of its type must have, and their formats."""
    typ = headers.get("type")
    if not isinstance(typ, str) or typ not in TYPES:
        known = ", ".join(sorted(TYPES))
        raise InvalidAssertionError(f"cannot use {where}: unknown type {typ!r} (known: {known})")
    t = TYPES[typ]
    where = f"{typ} {where}" if not where.startswith(typ) else where
    for name in ("authority-id", "sign-key-sha3-384", *t.primary_key, *t.required):
        if name not in headers:
            raise InvalidAssertionError(f"cannot use {where}: header {name!r} is missing")
    known_names = set(COMMON) | set(t.headers)
    for name, value in headers.items():
        if name not in known_names:
            raise InvalidAssertionError(f"cannot use {where}: unknown header {name!r}")
        if not isinstance(value, str):
            raise InvalidAssertionError(f"cannot use {where}: header {name!r} must be text")
        fmt = FORMATS.get(name)
        problem = fmt(value) if fmt is not None else (None if "\n" not in value else "must be on one line")
        if problem:
            shown = value if len(value) <= 80 else value[:40] + f"... ({len(value)} characters)"
            raise InvalidAssertionError(f"cannot use {where}: header {name!r} ({shown!r}) {problem}")
    size = len(body.encode())
    if int(headers.get("body-length", "0")) != size:
        raise InvalidAssertionError(f"cannot use {where}: body-length says {headers.get('body-length', '0')}, "
                                    f"the body has {size} bytes")
    if t.body == "required" and not body:
        raise InvalidAssertionError(f"cannot use {where}: it needs a body")
    if t.body == "forbidden" and body:
        raise InvalidAssertionError(f"cannot use {where}: it cannot have a body")
    if typ == "account-key":
        try:
            key = PublicKey.from_pem(body, f"the body of {where}")
        except Exception as e:
            raise InvalidAssertionError(str(e)) from None
        if key.id != headers["public-key-sha3-384"]:
            raise InvalidAssertionError(f"cannot use {where}: public-key-sha3-384 does not match the key "
                                        f"in the body ({key.id})")
        if "until" in headers and parse_time(headers["until"]) <= parse_time(headers["since"]):
            raise InvalidAssertionError(f"cannot use {where}: until is not after since")


def sign(headers: Mapping[str, Any], key: PrivateKey, body: str = "") -> Assertion:
    """sign makes an assertion of headers (and body) signed with key.

    sign-key-sha3-384 and body-length are set from the key and the body;
    revision 0 is left out, like snapd does.
    """
    final: dict[str, Any] = {k: v for k, v in headers.items() if k not in ("sign-key-sha3-384", "body-length")}
    for name, value in list(final.items()):
        if isinstance(value, int) and not isinstance(value, bool):
            final[name] = str(value)
    if final.get("revision") == "0":
        del final["revision"]
    if body:
        final["body-length"] = str(len(body.encode()))
    final["sign-key-sha3-384"] = key.id
    check_headers(final, body, "assertion to sign")
    t = TYPES[final["type"]]
    order = ["type", "authority-id", "revision", *t.primary_key]
    rest = {k: v for k, v in final.items() if k not in ("body-length", "sign-key-sha3-384")}
    try:
        text = hdr.encode(rest, order)
    except hdr.HeaderError as e:
        raise InvalidAssertionError(f"cannot sign {final['type']}: {e}") from None
    if body:
        text += f"\nbody-length: {final['body-length']}"
    text += f"\nsign-key-sha3-384: {key.id}"
    content = (text + ("\n\n" + body if body else "")).encode()
    return Assertion(final, body, content, key.sign(content))
