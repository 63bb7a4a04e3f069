# SPDX-License-Identifier: GPL-3.0-or-later
"""asserts: the assertion format, its types, and ed25519 keys (a library; no state).

Verifying chains of assertions against the state's database is
managers.assertstate's job.
"""

from __future__ import annotations

from .assertion import Assertion, check_headers, decode, decode_stream, sign
from .keys import (
    PrivateKey,
    PublicKey,
    create_key,
    encode_digest,
    file_sha3_384,
    load_private_key,
    load_public_key,
    sha3_384,
)
from .types import SERIES, TYPES, AssertionType, parse_time

__all__ = [
    "SERIES",
    "TYPES",
    "Assertion",
    "AssertionType",
    "PrivateKey",
    "PublicKey",
    "check_headers",
    "create_key",
    "decode",
    "decode_stream",
    "encode_digest",
    "file_sha3_384",
    "load_private_key",
    "load_public_key",
    "parse_time",
    "sha3_384",
    "sign",
]
