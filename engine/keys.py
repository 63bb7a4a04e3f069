# SPDX-License-Identifier: GPL-3.0-or-later
"""Keys of changes: idempotency keys, and the keys a change affects (conflicts that can wait).

An idempotency key names at most one change while it lasts (KEY_RETENTION
after the change was made, unless the change is pruned first): a second
new_change with the key returns that change. The key is a row of
change_keys whose primary key is the key itself, claimed by one INSERT ...
ON CONFLICT in the unit of work's transaction, so that two hosts racing on a
key make one change between them (the second waits for the first's
transaction, then finds the key taken).

The keys a change affects ("snap:hello") are rows of change_affects, indexed
by key: "does anything unready affect these?" is one indexed query, not a
walk over tasks. A change made with on_conflict="queue" while older unready
changes affect its keys is marked queued; the runner holds its tasks back
until no older unready change shares a key with it (KeyBook.held).
docs/runner.md tells both with examples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import Pending
from ._values import check_name

if TYPE_CHECKING:
    from ._work import Work
    from .store import Store

log = logging.getLogger("engine.state")

#: KEY_RETENTION is how long an idempotency key names its change, by default (new_change's key_retention).
KEY_RETENTION = timedelta(hours=24)
#: MAX_KEY_LENGTH is the longest idempotency or affected key, in UTF-8 bytes.
MAX_KEY_LENGTH = 256
#: What a claim compares expiry times with to take a key over whatever its time (its change is gone).
_ALWAYS = "9999"


def check_change_key(key: Any, what: str) -> str:
    """check_change_key returns key if it can be an idempotency or affected key (non-empty text, 256 bytes)."""
    check_name(key, what)
    if not key or len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise ValueError(f"cannot use {what} {key!r}: it must be 1 to {MAX_KEY_LENGTH} bytes of text")
    return str(key)


def check_keys(keys: Iterable[str] | str, what: str) -> list[str]:
    """check_keys returns keys as a sorted list without duplicates (a lone str is one key)."""
    if isinstance(keys, str):
        keys = [keys]
    return sorted({check_change_key(k, what) for k in keys})


class KeyBook:
    """KeyBook is a unit of work's idempotency keys and affected keys, and what it must write of them."""

    def __init__(self, w: Work) -> None:
        self._w = w
        #: The keys this unit of work claimed (written at once; written again if its commit must be redone).
        self.claimed: dict[str, tuple[int, str]] = {}
        self.keys: Pending[str] = Pending()
        #: (key, change id, queued) rows to write.
        self.affects: Pending[tuple[str, int, bool]] = Pending()
        #: The changes new_change made in this unit of work (Change.is_new).
        self.made: Pending[int] = Pending()
        #: True once held() found no queued change, until one is queued here or the cache is dropped (a single
        #: writer is the only one to queue changes; another connection's write drops the cache).
        self.none_queued: bool | None = None

    @property
    def pending(self) -> bool:
        """pending says whether anything is left to write."""
        return bool(self.keys) or bool(self.affects)

    def pendings(self) -> tuple[Pending[str], Pending[tuple[str, int, bool]], Pending[int]]:
        """pendings returns the write bookkeeping, for commit and rollback."""
        return self.keys, self.affects, self.made

    def forget(self) -> None:
        """forget drops what was claimed but not written (a rollback)."""
        if not self.keys.done and not self.keys.todo:
            self.claimed.clear()

    # -- idempotency keys ----------------------------------------------------------------

    def find(self, key: str) -> int | None:
        """find returns the change an unexpired key names (this unit of work's claims first), or None."""
        got = self.claimed.get(key)
        if got is not None and (key in self.keys):
            return got[0]
        return self._w.store.change_of_key(key, _time.to_text(self._w.now()))

    def claim(self, key: str, cid: int, retention: float, *, take_over: bool = False) -> int | None:
        """claim makes key name change cid, in the write transaction; it returns None when it did, else the
        change the key names already. take_over claims a key whose change is gone, whatever its time.
        """
        w = self._w
        store = w.store
        now = w.now()
        expire = _time.to_text(now + timedelta(seconds=retention))
        if not self.keys.todo and not self.keys.done:
            self.claimed.clear()  # what earlier units of work claimed is committed
        store.begin_write()
        got = store.claim_change_key(key, cid, expire, _ALWAYS if take_over else _time.to_text(now))
        if got == cid:
            self.claimed[key] = (cid, expire)
            self.keys.add(key)
            self.keys.take()  # written; a commit that fails and is kept writes it again (flush)
            return None
        other = store.change_of_key(key, _time.to_text(now))
        if other is None:  # it expired between the two statements: try once more
            return self.claim(key, cid, retention, take_over=True)
        return other

    def key_of(self, cid: int) -> str | None:
        """key_of returns the unexpired key that names change cid, or None."""
        for key, (kcid, _) in self.claimed.items():
            if kcid == cid and key in self.keys:
                return key
        return self._w.store.key_of_change(cid, _time.to_text(self._w.now()))

    # -- affected keys -------------------------------------------------------------------

    def affect(self, cid: int, keys: list[str], queued: bool = False) -> None:
        """affect records that change cid affects keys (queued: it waits for the older unready ones)."""
        self.affects.update((k, cid, queued) for k in keys)
        if queued:
            self.none_queued = None

    def affects_of(self, cid: int) -> list[str]:
        """affects_of lists the keys change cid affects."""
        self._w.flush()
        return self._w.store.affects_of_change(cid)

    def unready_affecting(self, keys: list[str]) -> dict[int, list[str]]:
        """unready_affecting maps each unready change affecting some of keys to those keys."""
        if not keys:
            return {}
        w = self._w
        w.flush()
        out: dict[int, list[str]] = {}
        for cid, key in w.store.unready_affecting(keys):
            out.setdefault(cid, []).append(key)
        return out

    def held(self) -> set[int]:
        """held returns the queued changes that must wait still; those whose turn came are unqueued.

        Called by the runner at each pass and hand-on, lock held: one indexed
        query when nothing is queued (the usual case), and on a single writer
        none until a change is queued again.
        """
        store = self._w.store
        if self.none_queued:
            return set()
        queued = store.queued_changes()
        if not queued:
            self.none_queued = not store.shared  # (other hosts queue changes too)
            return set()
        held = set(store.held_changes(queued))
        free = [cid for cid in queued if cid not in held]
        if free:
            store.begin_write()
            store.unqueue_changes(free)
            log.info("queued changes %s may run: no older unready change affects their keys",
                     ", ".join(map(str, free)))
        return held

    # -- writing -------------------------------------------------------------------------

    def flush(self, store: Store) -> None:
        """flush writes the affected keys, and the keys of a commit being redone."""
        if self.keys:
            for key in self.keys.take():
                cid, expire = self.claimed[key]
                store.claim_change_key(key, cid, expire, _time.to_text(self._w.now()))
        if self.affects:
            store.insert_affects(self.affects.take())
        if self.made:
            self.made.take()  # what a failed commit put back: the changes are still this unit's

    def prune(self, now: str) -> None:
        """prune deletes the expired idempotency keys."""
        w = self._w
        w.flush()
        w.store.begin_write()
        n = w.store.delete_expired_change_keys(now)
        if n:
            log.debug("pruned %d expired change keys", n)
