# SPDX-License-Identifier: GPL-3.0-or-later
"""The store, read before the state lock is taken: store_lookup and StoreAnswers.

store_lookup (called without the lock; it takes it only for a moment to
read which snaps and channels it must ask about) returns StoreAnswers,
which install and refresh are given (found=) and use instead of the store.
Under the lock they decide again from the state as it is then (the snap
installed meanwhile, a conflict, another channel tracked): an answer they
need but were not given raises StaleLookupError, and
SnapManager.with_store_answers looks up again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import SnapNotFoundError, SnapOperationError, StoreError
from ..snapstore import DEFAULT_CHANNEL, SnapStore, StoreSnap, parse_channel
from .model import SnapManagerView, all_snap_states

log = logging.getLogger("managers.snapstate")


def need_store(sm: SnapManagerView) -> SnapStore:
    """need_store is the manager's store; StoreError when none is configured."""
    if sm.snap_store is None:
        raise StoreError("cannot reach a store: none is configured")
    return sm.snap_store


class StaleLookupError(SnapOperationError):
    """StaleLookupError: a verb needs a store answer that was not looked up (the state changed meanwhile)."""


def _answer_key(name: str, revision: str | None, channel: str | None) -> tuple[str, str]:
    return (name, f"revision {revision}") if revision is not None else (name, f"channel {channel or DEFAULT_CHANNEL}")


@dataclass
class StoreAnswers:
    """StoreAnswers is what the store said of the snaps a verb needs, read without the state lock.

    It answers snap() as the store does, from what was looked up: a
    StoreSnap, or the error the store gave (SnapNotFoundError, StoreError).
    A question that was not asked raises StaleLookupError.
    """

    location: str
    answers: dict[tuple[str, str], StoreSnap | SnapNotFoundError | StoreError] = field(default_factory=dict)

    def has(self, name: str, revision: str | None = None, *, channel: str | None = None) -> bool:
        """has says whether the question was asked (its answer may be an error)."""
        return _answer_key(name, revision, channel) in self.answers

    def names(self) -> list[str]:
        """names are the snaps the store has an answer (not an error) for."""
        return sorted({n for (n, _), a in self.answers.items() if isinstance(a, StoreSnap)})

    def failure(self) -> StoreError | None:
        """failure is the store error that ended the lookup (the store could not be read), or None."""
        return next((a for a in self.answers.values() if isinstance(a, StoreError)), None)

    def snap(self, name: str, revision: str | None = None, *, channel: str | None = None) -> StoreSnap:
        key = _answer_key(name, revision, channel)
        if key not in self.answers:
            raise StaleLookupError(f"cannot use what the store said of snap {name!r}: it was asked of another "
                                   f"{key[1].split()[0]} (the snap changed meanwhile); try again")
        answer = self.answers[key]
        if isinstance(answer, Exception):
            raise type(answer)(str(answer))
        return answer


def store_lookup(sm: SnapManagerView, verb: str, names: Sequence[str] | None, *, channel: str | None = None,
                 revision: str | None = None, skip: Iterable[str] = ()) -> StoreAnswers:
    """store_lookup asks the store what install or refresh of names will need; call it WITHOUT the state lock.

    The lock is taken for a moment to read the installed snaps (which ones
    install skips, which channel each refreshed snap tracks); the store is
    read after it is released. Not found is an answer; the first other
    store error ends the lookup (a store that does not answer is asked
    nothing more) and is the answer of the snap it was asked for. skip
    names snaps a refresh of everything leaves alone (held).
    """
    store = need_store(sm)
    full = full_channel(channel)
    st = sm.state
    with st:
        states = all_snap_states(st)
        questions: list[tuple[str, str | None, str | None]] = []
        if verb == "install":
            questions = [(n, revision, None if revision is not None else full) for n in names or () if n not in states]
        else:
            if names is None:
                skipped = set(skip)
                names = [n for n, s in states.items() if s.info.snap_id and s.active and n not in skipped]
            for n in names:
                snapst = states.get(n)
                if snapst is not None and snapst.info.snap_id:
                    questions.append((n, revision, None if revision is not None else (full or snapst.tracking)))
    out = StoreAnswers(store.location)
    for name, rev, ch in questions:
        key = _answer_key(name, rev, ch)
        try:
            out.answers[key] = store.snap(name, rev) if rev is not None else store.snap(name, channel=ch)
        except SnapNotFoundError as e:
            out.answers[key] = e
        except StoreError as e:
            out.answers[key] = e
            log.info("stopped asking the store %s: %s", store.location, e)
            break
    return out


def full_channel(channel: str | None) -> str | None:
    """full_channel is a channel's full name (None stays None); SnapOperationError for one that is not a channel."""
    if channel is None:
        return None
    try:
        return parse_channel(channel)
    except ValueError as e:
        raise SnapOperationError(str(e)) from None
