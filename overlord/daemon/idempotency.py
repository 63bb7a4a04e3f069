# SPDX-License-Identifier: GPL-3.0-or-later
"""ChangeRequest: how every request that makes a change honours its Idempotency-Key header, in one place.

A handler that makes a change describes what it asks (``what``, a verb,
and ``request``, the request's meaning as JSON: the same for two requests
that ask the same thing, whatever their formatting or endpoint: a snap
action's SnapAction.meaning) and calls ChangeRequest.run with a function
that makes the change under the state lock. With a key:

1. the key is looked up first, before any check: a change it names is the
   answer (a retried install of a snap the first request installed gets
   its change, not "already installed"), provided the request is the same
   (its digest is kept on the change, REQUEST_DIGEST_KEY); another request
   under the same key is a ChangeConflictError (409 snap-change-conflict,
   as a key of another kind of change is for new_change);
2. otherwise the change is made, and the key claimed for it in the same
   unit of work (State.claim_change_key: one INSERT ... ON CONFLICT). When
   another daemon sharing the database claimed it first, the unit of work
   is rolled back and the lookup answers with that daemon's change.

Without a key, the change is made as it always was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine import ChangeConflictError

from .errors import ApiError, ErrorKind

if TYPE_CHECKING:
    from engine import Change, State

#: REQUEST_DIGEST_KEY is the change data that keeps the digest of the keyed request that made the change.
REQUEST_DIGEST_KEY = "request-digest"
#: CLAIM_ATTEMPTS bounds the rounds of a request that loses its key to another daemon and looks again.
CLAIM_ATTEMPTS = 3

R = TypeVar("R")


class _Lost(Exception):
    """_Lost rolls back a unit of work whose key another daemon claimed first."""


class ChangeRequest:
    """ChangeRequest is a request that makes a change: its idempotency key (or None), its verb and its digest."""

    def __init__(self, key: str | None, header: str | None, what: str, request: Any) -> None:
        #: The key as the engine stores it (scoped to the caller's uid); header is the header's value.
        self.key = key
        self.header = header
        self.what = what
        self.digest = hashlib.sha256(json.dumps([what, request], sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=False).encode()).hexdigest()

    def existing(self, st: State) -> Change | None:
        """existing is the change the key names already (lock held); None without a key or a change.

        ChangeConflictError when the key names a change another request made.
        """
        if self.key is None:
            return None
        chg = st.change_by_key(self.key)
        if chg is None:
            return None
        digest = chg.get(REQUEST_DIGEST_KEY, None)
        if digest is not None and digest != self.digest:
            raise ChangeConflictError(chg.id, f"cannot {self.what} with key {self.header!r}: it names change "
                                              f"{chg.id} ({chg.kind}), which another request made",
                                      change_kind=chg.kind, subject=self.header)
        return chg

    def run(self, st: State, make: Callable[..., Change], reply: Callable[[Change], R], *,
            locked: Callable[[str | None, Callable[..., R]], R] | None = None) -> R:
        """run answers reply(change) for the change the key names, or the change make() makes.

        make and reply run with the lock held, in one unit of work; reply's
        result is what the handler answers (a change handle is no use
        outside the lock). The lock is taken here, or by locked(key,
        attempt), which must call attempt with the lock held, passing it
        what make takes, and let what it raises through (so that the unit
        is rolled back): the snap verbs read the store first, without the
        lock (not when key names a change already), and make gets its
        answers.
        """
        def attempt(*given: Any) -> R:
            chg = self.existing(st)
            if chg is None:
                chg = make(*given)
                if self.key is not None:
                    chg.set(REQUEST_DIGEST_KEY, self.digest)
                    if st.claim_change_key(self.key, chg) != chg:
                        raise _Lost()  # rolls back the change made; the lookup finds the other one
            return reply(chg)

        for _ in range(CLAIM_ATTEMPTS):
            try:
                if locked is not None:
                    return locked(self.key, attempt)
                with st:
                    return attempt()
            except _Lost:
                continue
        raise ApiError(503, ErrorKind.DATABASE_BUSY, f"cannot {self.what}: the change of key {self.header!r} "
                                                     "could not be found or made; try again")
