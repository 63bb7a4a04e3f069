# SPDX-License-Identifier: GPL-3.0-or-later
"""AssertManager: the system's database of assertions and the trusted root they are checked against."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine import State, TaskRunner

from ..asserts import Assertion, PublicKey, decode_stream, load_public_key
from . import assertstate
from .assertstate import Fetch, TrustedRoot
from .book import AssertionBook

log = logging.getLogger("managers.assertstate")

#: DEFAULT_AUTHORITY is the account id of the trusted root unless configured otherwise.
DEFAULT_AUTHORITY = "root"


class AssertManager:
    """AssertManager keeps assertions, each verified up to the trusted root before it is stored.

    It owns no task kinds: adding assertions is synchronous (like snapd's
    ``snap ack``); the snap manager's validate-snap task uses it. Every
    method needs the state lock.
    """

    def __init__(self, state: State, runner: TaskRunner, *, trusted_key: PublicKey | str | Path | None = None,
                 trusted_authority: str = DEFAULT_AUTHORITY) -> None:
        self._state = state
        self._runner = runner
        key = load_public_key(trusted_key) if isinstance(trusted_key, (str, Path)) else trusted_key
        self.trusted: TrustedRoot | None = TrustedRoot(trusted_authority, key) if key is not None else None
        if self.trusted is None:
            log.info("no trusted root key: only dangerous (unasserted) snaps can be installed")

    # -- the manager protocol ---------------------------------------------------

    def ensure(self) -> None:
        """ensure has nothing to do: assertions are added synchronously."""

    # -- verbs ------------------------------------------------------------------

    def add(self, text: str | bytes) -> list[Assertion]:
        """add verifies the assertions of text (one or a stream) and stores them, all or none.

        A newer revision replaces the stored one; the same one again is a
        no-op; an older one is refused (managers.errors.AssertionRevisionError). A
        broken chain raises AssertionVerifyError naming the missing or wrong
        link; a malformed text InvalidAssertionError.
        """
        return self.add_many(decode_stream(text))

    def add_many(self, assertions: Iterable[Assertion], *, keep_newer: bool = False) -> list[Assertion]:
        """add_many verifies and stores decoded assertions, all or none (see assertstate.add_many)."""
        return assertstate.add_many(self._state, assertions, self.trusted, keep_newer=keep_newer)

    def verify_many(self, assertions: Iterable[Assertion], *, keep_newer: bool = False) -> list[Assertion]:
        """verify_many checks assertions as add_many does but stores nothing (a seed is checked whole first)."""
        return assertstate.verify_many(self._state, assertions, self.trusted, keep_newer=keep_newer)

    def get(self, type: str, primary_key: Sequence[str]) -> Assertion | None:
        """get returns the stored assertion of type with primary_key, or None."""
        return assertstate.stored(self._state, type, primary_key)

    def find(self, type: str, headers: Mapping[str, str] | None = None) -> list[Assertion]:
        """find returns the stored assertions of type whose headers have the given values."""
        return assertstate.find(self._state, type, headers)

    def fetch(self, fetch: Fetch, type: str, primary_key: Sequence[str]) -> list[Assertion]:
        """fetch gets an assertion and what it needs from fetch (a store) and adds them.

        What the database has already is not fetched again; a stored
        revision as new or newer than the store's is kept.
        """
        def have(typ: str, pk: tuple[str, ...]) -> bool:
            return AssertionBook(self._state).get(typ, pk) is not None

        found = assertstate.fetch_chain(fetch, type, primary_key, self.trusted, have)
        return self.add_many(found, keep_newer=True)
