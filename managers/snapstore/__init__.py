# SPDX-License-Identifier: GPL-3.0-or-later
"""snapstore: the snap store, where snaps come from (a directory, a file:// or an http(s):// URL).

directory.py is SnapStore, a store directory read and (for tools) written:
push, release; http.py the same store read over HTTP (HttpSnapStore) and
the read-only server of a store directory; channels.py the channels'
names; records.py what a store says of a snap; files.py how its files are
written. Not to be confused with the engine's store (engine/store), the
database seam.
"""

from __future__ import annotations

from .channels import DEFAULT_CHANNEL, DEFAULT_TRACK, RISKS, parse_channel, short_channel
from .directory import SnapStore
from .http import HttpSnapStore, is_http, make_server, open_snap_store, serve_in_thread
from .records import StoreListing, StoreSnap, is_transient, location_path

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_TRACK",
    "RISKS",
    "HttpSnapStore",
    "SnapStore",
    "StoreListing",
    "StoreSnap",
    "is_http",
    "is_transient",
    "location_path",
    "make_server",
    "open_snap_store",
    "parse_channel",
    "serve_in_thread",
    "short_channel",
]
