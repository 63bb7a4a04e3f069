# SPDX-License-Identifier: GPL-3.0-or-later
"""The SQLite store: everything the engine does with a SQLite file, in one package.

Opening a file goes one way, each module below the next:

- ``checks``: what the file system and the file's first bytes say (a
  directory, a FIFO, several names, not SQLite, read-only), and the
  driver's errors as the engine's;
- ``lock``: the process's one descriptor of each database file, the
  writer's ``flock`` on it and on its write-ahead log, and whether the path
  still names the file;
- ``schema``: the schema's revision, created or upgraded by a writer,
  checked by a reader, and the schema objects the engine relies on
  (engine.store.objects);
- ``link``: the connection (through the file's URI filename, from its
  Location) and the read-only snapshots;
- ``store``: SQLiteStore, the Store verbs on that connection;
- ``inspect``: a report on a database of any revision (``overlord db``).
"""

from __future__ import annotations

from .link import make_engine
from .store import CATALOG, SQLiteStore

__all__ = ["CATALOG", "SQLiteStore", "make_engine"]
