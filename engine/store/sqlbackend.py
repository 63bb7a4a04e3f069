# SPDX-License-Identifier: GPL-3.0-or-later
"""SqlBackend: what a backend gives SqlStore (its statements, its connection's primitives); KeyVerbs: the
Store verbs of idempotency and affected keys (engine.keys), written over them.

engine.store.sqlstore's SqlStore adds the other verbs; a backend
(engine.store.sqlite, engine.store.postgresql) subclasses it and runs the
SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .base import Row
from .compiled import Catalog, Compiled


class SqlBackend:
    """SqlBackend declares what a backend provides: the compiled statements and the primitives that run them."""

    sql: Catalog
    target: str
    refusal: str | None = None
    shared = False
    runner_id: str | None = None
    lease = 0.0
    notify = False
    notify_notices = False

    # -- what a backend provides -----------------------------------------------------

    def query(self, c: Compiled, args: Sequence[Any] = ()) -> list[Row]:
        """query runs one SELECT and returns its rows."""
        raise NotImplementedError

    def query_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> list[Row]:
        """query_in runs a SELECT whose expanding parameter is ids."""
        raise NotImplementedError

    def each(self, c: Compiled, args: Sequence[Any], page: int) -> Iterator[Row]:
        """each yields the rows of a SELECT a page at a time."""
        raise NotImplementedError

    def execute(self, c: Compiled, args: Sequence[Any] = ()) -> int:
        """execute runs one statement in the write transaction; it returns the row count."""
        raise NotImplementedError

    def executemany(self, c: Compiled, rows: Sequence[Sequence[Any]]) -> None:
        """executemany runs one statement for many rows in the write transaction."""
        raise NotImplementedError

    def execute_in(self, c: Compiled, ids: Sequence[Any], args: Sequence[Any] = ()) -> None:
        """execute_in runs a statement whose expanding parameter is ids in the write transaction."""
        raise NotImplementedError

    def begin_write(self, relaxed: bool = False) -> None:
        """begin_write opens the write transaction."""
        raise NotImplementedError

    def _ids(self, name: str, args: Sequence[Any] = ()) -> list[int]:
        return [r[0] for r in self.query(self.sql[name], args)]


class KeyVerbs(SqlBackend):
    """KeyVerbs are the Store verbs of idempotency keys and affected keys (engine.keys)."""

    def claim_change_key(self, key: str, cid: int, expire: str, now: str) -> int | None:
        """claim_change_key makes key name change cid unless it names another unexpired change (write
        transaction); it returns cid when it did, else None (change_of_key says which change has it)."""
        rows = self.query(self.sql["claim_change_key"], (key, cid, expire, now))
        return int(rows[0][0]) if rows else None

    def change_of_key(self, key: str, now: str) -> int | None:
        """change_of_key returns the change an unexpired key names, or None."""
        rows = self.query(self.sql["change_of_key"], (key, now))
        return int(rows[0][0]) if rows else None

    def key_of_change(self, cid: int, now: str) -> str | None:
        """key_of_change returns the unexpired key that names a change, or None."""
        rows = self.query(self.sql["key_of_change"], (cid, now))
        return str(rows[0][0]) if rows else None

    def delete_expired_change_keys(self, now: str) -> int:
        """delete_expired_change_keys deletes the keys expired at now (prune); it returns how many."""
        return self.execute(self.sql["expired_change_keys"], (now,))

    def insert_affects(self, rows: Sequence[tuple[str, int, bool]]) -> None:
        """insert_affects records (key, change id, queued) rows."""
        if rows:
            self.executemany(self.sql["insert_affects"], rows)

    def affects_of_change(self, cid: int) -> list[str]:
        """affects_of_change lists the keys a change affects."""
        return [str(r[0]) for r in self.query(self.sql["affects_of_change"], (cid,))]

    def unready_affecting(self, keys: Sequence[str]) -> list[tuple[int, str]]:
        """unready_affecting lists (change id, key) for the unready changes (stored status) affecting keys."""
        return [(int(c), str(k)) for c, k in self.query_in(self.sql["unready_affecting"], keys)]

    def queued_changes(self) -> list[int]:
        """queued_changes lists the changes still marked queued."""
        return self._ids("queued_changes")

    def held_changes(self, ids: Sequence[int]) -> list[int]:
        """held_changes lists those of ids that an older unready change sharing a key holds back."""
        return [int(r[0]) for r in self.query_in(self.sql["held_changes"], ids)]

    def unqueue_changes(self, ids: Sequence[int]) -> None:
        """unqueue_changes marks changes as no longer queued (their turn came)."""
        self.execute_in(self.sql["unqueue_changes"], ids)

    def reopen_change(self, cid: int) -> None:
        """reopen_change makes a ready change's row unready again (engine.repair: a retry)."""
        self.execute(self.sql["reopen_change"], (cid,))
