# SPDX-License-Identifier: GPL-3.0-or-later
"""The assertion format: headers, signing, decoding hostile text, keys."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from managers import InvalidAssertionError, KeyFileError
from managers.asserts import (
    PrivateKey,
    create_key,
    decode,
    decode_stream,
    load_private_key,
    load_public_key,
    sha3_384,
    sign,
)
from managers.asserts import headers as hdr
from managers.asserts.build import account, account_key, snap_declaration, snap_revision

T = "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("headers", [
    {"a": "x"},
    {"a": "two\nlines", "b": "one"},
    {"a": "  indented\n\nwith a blank line"},
    {"list": ["1", "2", "three words"]},
    {"map": {"k": "v", "other": ["x", "y"], "deep": {"z": "multi\nline"}}},
    {"list": [{"k": "v"}, ["nested", "list"], "last"]},
], ids=["one", "multiline", "blank-line", "list", "map", "nesting"])
def test_headers_round_trip(headers: dict[str, Any]) -> None:
    text = hdr.encode(headers, [])
    assert "\n\n" not in text
    assert hdr.parse(text) == headers


@pytest.mark.parametrize(("text", "message"), [
    ("no separator", "missing ':'"),
    ("Bad: name", "invalid header name"),
    ("a: 1\na: 2", "repeated header"),
    ("a:  two spaces", "one space"),
    ("a: trailing ", "one space"),
    ("a:\nnot indented", "expected a value"),
    ("a:", "expected a value"),
])
def test_bad_headers_are_refused(text: str, message: str) -> None:
    with pytest.raises(hdr.HeaderError, match=message):
        hdr.parse(text)


def test_sign_encode_decode(root_key: PrivateKey) -> None:
    a = account(root_key, "root", "acme", "ACME Corp", timestamp=T)
    assert a.text.startswith("type: account\nauthority-id: root\naccount-id: acme\n")
    assert f"\nsign-key-sha3-384: {root_key.id}\n\n" in a.text
    assert "revision" not in a.headers  # revision 0 is left out, like snapd
    b = decode(a.text)
    assert (b.ref, b.revision, b.authority_id, b.header("display-name")) == ("account acme", 0, "root", "ACME Corp")
    assert b.content == a.content and b.verify(root_key.public_key)
    assert not b.verify(PrivateKey.generate().public_key)
    # Deterministic: the same headers and key give the same text.
    assert account(root_key, "root", "acme", "ACME Corp", timestamp=T).text == a.text


def test_bodies_and_streams(root_key: PrivateKey, acme_key: PrivateKey) -> None:
    ak = account_key(root_key, "root", "acme", acme_key.public_key)
    decl = snap_declaration(root_key, "root", "hello", "acme", timestamp=T, revision=3)
    stream = "\n" + ak.text + "\n" + decl.text + "\n\n"
    got = decode_stream(stream)
    assert [a.ref for a in got] == [ak.ref, decl.ref]
    assert got[0].body == acme_key.public_key.to_pem().strip()
    assert got[0].header("body-length") == str(len(got[0].body))
    assert got[1].revision == 3 and got[1].primary_key == ("16", decl.header("snap-id"))
    assert all(a.verify(root_key.public_key) for a in got)
    assert decode_stream("") == []
    with pytest.raises(InvalidAssertionError, match="expected one, found 2"):
        decode(stream)


def _resign(a: Any, key: PrivateKey, **changes: Any) -> str:
    headers = {k: v for k, v in a.headers.items()}
    headers.update(changes)
    return sign({k: v for k, v in headers.items() if v is not None}, key, a.body).text


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda t: t.replace("type: account\n", "type: accnt\n"), "unknown type 'accnt'"),
    (lambda t: t.replace("display-name: ACME Corp\n", ""), "header 'display-name' is missing"),
    (lambda t: t.replace("account-id: acme\n", "account-id: acme\ncolour: red\n"), "unknown header 'colour'"),
    (lambda t: t.replace("timestamp: " + T, "timestamp: yesterday"), "is not an RFC 3339 time"),
    (lambda t: t.replace("account-id: acme", "account-id: ACME CORP"), "is not an account id"),
    (lambda t: t.rsplit("\n\n", 1)[0] + "\n\n!!!not base64!!!\n", "the signature is not base64"),
    (lambda t: t.rsplit("\n\n", 1)[0] + "\n\n" + base64.b64encode(b"short").decode() + "\n",
     "not an ed25519 signature"),
    (lambda t: t.split("\n\n")[0], "no blank line after the headers"),
    (lambda t: t.replace("type: account\nauthority-id: root\n", "authority-id: root\ntype: account\n"),
     "the first header must be type"),
    (lambda t: t.replace("display-name: ACME Corp", "display-name: \udcff"), "UTF-8"),
    # Integers are 64-bit, as snapd reads them (and SQLite stores them): 2**63 and 5,000 digits are refused.
    (lambda t: t.replace("authority-id: root\n", f"authority-id: root\nrevision: {2**63}\n"),
     r"header 'revision' \('9223372036854775808'\) must be an integer from 0 to 9223372036854775807 without "
     "leading zeros$"),
    (lambda t: t.replace("authority-id: root\n", f"authority-id: root\nrevision: {'9' * 5000}\n"),
     r"header 'revision' \('9{40}\.\.\. \(5000 characters\)'\) must be an integer from 0 to 9223372036854775807"),
])
def test_malformed_assertions_are_refused(root_key: PrivateKey, mangle: Any, message: str) -> None:
    text = account(root_key, "root", "acme", "ACME Corp", timestamp=T).text
    bad = mangle(text)
    data = bad.encode("utf-8", "surrogateescape")
    with pytest.raises(InvalidAssertionError, match=message):
        decode(data)


def test_bodies_are_checked(root_key: PrivateKey, acme_key: PrivateKey) -> None:
    ak = account_key(root_key, "root", "acme", acme_key.public_key)
    text = ak.text
    with pytest.raises(InvalidAssertionError, match=r"body-length|not .* bytes"):
        decode(text.replace(f"body-length: {len(ak.body)}", f"body-length: {len(ak.body) + 1}"))
    other = PrivateKey.generate().public_key
    with pytest.raises(InvalidAssertionError, match="does not match the key in the body"):
        sign({**ak.headers, "public-key-sha3-384": other.id}, root_key, ak.body)
    with pytest.raises(InvalidAssertionError, match="it needs a body"):
        sign({k: v for k, v in ak.headers.items() if k != "body-length"}, root_key)
    with pytest.raises(InvalidAssertionError, match="cannot have a body"):
        sign({"type": "account", "authority-id": "root", "account-id": "x", "display-name": "X",
              "timestamp": T}, root_key, "a body")
    with pytest.raises(InvalidAssertionError, match="until is not after since"):
        account_key(root_key, "root", "acme", acme_key.public_key, since=T, until="2029-01-01T00:00:00Z")
    with pytest.raises(InvalidAssertionError, match="must be an integer from 1 to 9223372036854775807"):
        snap_revision(acme_key, "acme", sha3_384(b"x"), 0, "a" * 32, 1, "acme")


def test_keys_files(tmp_path: Path) -> None:
    private, public, key = create_key(tmp_path, "publisher")
    assert (private.name, public.name) == ("publisher.pem", "publisher.pub.pem")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_private_key(private).id == key.id
    assert load_public_key(public) == key.public_key == load_public_key(private)
    assert len(key.id) == 64
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(tmp_path, "publisher")
    with pytest.raises(KeyFileError, match="lowercase"):
        create_key(tmp_path, "Bad Name")
    with pytest.raises(KeyFileError, match=r"cannot read key .*nothere\.pem"):
        load_private_key(tmp_path / "nothere.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_private_key(tmp_path / "junk.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(ec_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="not an ed25519 key"):
        load_private_key(tmp_path / "ec.pem")
    assert os.access(public, os.R_OK)
