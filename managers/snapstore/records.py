# SPDX-License-Identifier: GPL-3.0-or-later
"""What a snap store says of a snap (StoreSnap, StoreListing), where a store is, and which errors may pass."""

from __future__ import annotations

import errno
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreError

#: TRANSIENT are the errno values a download retries: the store may answer next time.
TRANSIENT = frozenset({errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY,
                       errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET, errno.ECONNABORTED,
                       errno.EHOSTUNREACH})
#: SMALL_FILE is how much of a store's small file (channels, a revision entry, store.yaml) is read;
#: LARGE_FILE of an assertion (snapd's limits: 128 KiB of headers, 2 MiB of body) or index.yaml.
SMALL_FILE = 65536
LARGE_FILE = 4 * 1024 * 1024


def is_transient(exc: BaseException) -> bool:
    """is_transient says whether an I/O error may go away if the operation is tried again."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT


@dataclass(frozen=True)
class StoreSnap:
    """StoreSnap is one revision of a snap as the store offers it."""

    name: str
    revision: str
    snap_id: str
    sha3_384: str
    size: int
    path: Path
    version: str = ""
    summary: str = ""
    description: str = ""


@dataclass
class StoreListing:
    """StoreListing is what the store has of one snap: its revisions and which one each channel has."""

    name: str
    snap_id: str
    revisions: list[str] = field(default_factory=list)
    #: channel -> revision, as released (no fallback).
    channels: dict[str, str] = field(default_factory=dict)


def location_path(location: str | Path) -> Path:
    """location_path turns a store location (a directory or a file:// URL) into a directory."""
    text = str(location)
    if "://" in text:
        url = urllib.parse.urlparse(text)
        if url.scheme != "file" or url.netloc not in ("", "localhost"):
            raise StoreError(f"cannot use store {text}: only local directories, file:// and http(s):// URLs "
                             "are supported")
        return Path(urllib.parse.unquote(url.path))
    return Path(text)
