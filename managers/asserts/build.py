# SPDX-License-Identifier: GPL-3.0-or-later
"""build: the signed assertions a store and its publishers make, one function per type.

Tools, tests and the demo use these; the system itself only verifies.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from .assertion import Assertion, sign
from .keys import PrivateKey, PublicKey


def now_text(when: datetime | None = None) -> str:
    """now_text is a time as assertions write it (RFC 3339, UTC, to the second)."""
    return f"{(when or datetime.now(UTC)).astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def snap_id_for(name: str) -> str:
    """snap_id_for derives a stable 32-character snap id from a snap name (for test stores)."""
    return hashlib.sha256(f"snap-id:{name}".encode()).hexdigest()[:32]


def account(root: PrivateKey, authority_id: str, account_id: str, display_name: str, *,
            timestamp: str | None = None, revision: int = 0, validation: str = "unproven") -> Assertion:
    """account is the trusted root's statement that an account exists."""
    return sign({"type": "account", "authority-id": authority_id, "account-id": account_id,
                 "display-name": display_name, "validation": validation, "timestamp": timestamp or now_text(),
                 "revision": revision}, root)


def account_key(root: PrivateKey, authority_id: str, account_id: str, key: PublicKey, *, name: str = "default",
                since: str = "2000-01-01T00:00:00Z", until: str | None = None, revision: int = 0) -> Assertion:
    """account_key is the trusted root's statement that key signs for account_id."""
    headers = {"type": "account-key", "authority-id": authority_id, "account-id": account_id, "name": name,
               "public-key-sha3-384": key.id, "since": since, "revision": revision}
    if until is not None:
        headers["until"] = until
    return sign(headers, root, body=key.to_pem().strip())


def snap_declaration(root: PrivateKey, authority_id: str, snap_name: str, publisher_id: str, *,
                     snap_id: str | None = None, timestamp: str | None = None, revision: int = 0) -> Assertion:
    """snap_declaration is the trusted root's statement that snap_name is snap_id, published by publisher_id."""
    return sign({"type": "snap-declaration", "authority-id": authority_id, "series": "16",
                 "snap-id": snap_id or snap_id_for(snap_name), "snap-name": snap_name,
                 "publisher-id": publisher_id, "timestamp": timestamp or now_text(), "revision": revision}, root)


def snap_revision(key: PrivateKey, authority_id: str, digest: str, size: int, snap_id: str, snap_revision: int,
                  developer_id: str, *, timestamp: str | None = None, revision: int = 0) -> Assertion:
    """snap_revision is the statement that the file with digest and size is snap_revision of snap_id."""
    return sign({"type": "snap-revision", "authority-id": authority_id, "snap-sha3-384": digest,
                 "snap-size": size, "snap-id": snap_id, "snap-revision": snap_revision,
                 "developer-id": developer_id, "timestamp": timestamp or now_text(), "revision": revision}, key)
