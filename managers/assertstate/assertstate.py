# SPDX-License-Identifier: GPL-3.0-or-later
"""The assertion database's verbs: verify a chain to the trusted root, add, look up, fetch.

Every function here needs the state lock (except fetch_chain, which only
reads the fetch function it is given).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine import State

from ..asserts import Assertion, PublicKey, decode, parse_time
from ..errors import AssertionVerifyError, InvalidAssertionError
from .book import AssertionBook

log = logging.getLogger("managers.assertstate")

#: Key is an assertion's type and primary key.
Key = tuple[str, tuple[str, ...]]
Lookup = Callable[[str, tuple[str, ...]], Assertion | None]
#: Fetch returns the text of the assertion of a type with a primary key, or None.
Fetch = Callable[[str, tuple[str, ...]], str | None]

_DECODED = "managers.assertstate.decoded"

#: MAX_CLOCK_SKEW is how far in the future (by the State's clock) an assertion's timestamp may be:
#: a signer's clock a little ahead of ours is tolerated, a future-dated assertion is not.
MAX_CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class TrustedRoot:
    """TrustedRoot is the key every chain must reach, and the account it speaks for."""

    authority_id: str
    key: PublicKey


def stored(st: State, type: str, primary_key: Sequence[str]) -> Assertion | None:
    """stored returns the assertion kept in the state database, decoded, or None."""
    row = AssertionBook(st).get(type, primary_key)
    if row is None:
        return None
    cache: dict[str, Assertion] | None = st.cached(_DECODED)
    if cache is None:
        cache = {}
        st.cache(_DECODED, cache)
    a = cache.get(row.text)
    if a is None:
        a = decode(row.text)
        if len(cache) > 1024:
            cache.clear()
        cache[row.text] = a
    return a


def find(st: State, type: str, headers: Mapping[str, str] | None = None) -> list[Assertion]:
    """find returns the stored assertions of type whose headers have the given values."""
    out = []
    for row in AssertionBook(st).find(type, headers):
        a = stored(st, row.type, row.primary_key)
        if a is not None:
            out.append(a)
    return out


def _text(when: datetime) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%SZ}"


def verify(a: Assertion, lookup: Lookup, trusted: TrustedRoot | None, now: datetime | None = None) -> None:
    """verify checks a's signature and every link of its chain to the trusted root.

    lookup finds the assertions it needs (signing keys, prerequisites); an
    AssertionVerifyError names the first link that is missing or wrong.

    The assertion's own timestamp must fall in its signing key's validity
    (snapd's rule). Given now (the State's clock: a time the signer does
    not choose), the signing key must also be valid now (snapd's "signed
    with expired public key"), and the timestamp may not be later than now
    plus MAX_CLOCK_SKEW: back-dating or future-dating cannot stretch a key.
    """
    what = f"cannot add {a.ref}"
    if trusted is None:
        raise AssertionVerifyError(f"{what}: no trusted root key is configured")
    stamp = a.header("timestamp")
    if now is not None and stamp and parse_time(stamp) > now + MAX_CLOCK_SKEW:
        minutes = int(MAX_CLOCK_SKEW.total_seconds() // 60)
        raise AssertionVerifyError(f"{what}: its timestamp {stamp} is in the future (now is {_text(now)}, "
                                   f"allowing {minutes} minutes of clock skew)")
    key_id = a.sign_key_id
    if key_id == trusted.key.id:
        if a.authority_id != trusted.authority_id:
            raise AssertionVerifyError(f"{what}: it is signed with the trusted root key, but its authority-id "
                                       f"is {a.authority_id!r}, not {trusted.authority_id!r}")
        key = trusted.key
    else:
        account_key = lookup("account-key", (key_id,))
        if account_key is None:
            raise AssertionVerifyError(f"{what}: no account-key for its signing key {key_id} "
                                       "(sign-key-sha3-384)")
        owner = account_key.header("account-id")
        if owner != a.authority_id:
            raise AssertionVerifyError(f"{what}: its signing key {key_id} belongs to account {owner!r}, "
                                       f"not to its authority-id {a.authority_id!r}")
        since, until = account_key.header("since"), account_key.header("until")
        validity = f"valid since {since}{' until ' + until if until else ''}"

        def valid_at(t: datetime) -> bool:
            return parse_time(since) <= t and not (until and t >= parse_time(until))

        when = stamp or a.header("since")
        if when and not valid_at(parse_time(when)):
            raise AssertionVerifyError(f"{what}: its signing key {key_id} is not valid at {when} ({validity})")
        if now is not None and not valid_at(now):
            state = "expired" if until and now >= parse_time(until) else "not valid yet"
            raise AssertionVerifyError(f"{what}: its signing key {key_id} is {state} (now is {_text(now)}, "
                                       f"key {validity})")
        key = PublicKey.from_pem(account_key.body, f"account-key {key_id}")
    if not a.verify(key):
        raise AssertionVerifyError(f"{what}: its signature does not verify with key {key_id}")
    if a.type.root_only and a.authority_id != trusted.authority_id:
        raise AssertionVerifyError(f"{what}: only the trusted root ({trusted.authority_id}) may sign "
                                   f"{a.type_name} assertions, not {a.authority_id!r}")
    for typ, pk in a.prerequisites():
        if typ == "account" and pk == (trusted.authority_id,):
            continue  # the trusted root's own account is known by configuration
        if lookup(typ, pk) is None:
            raise AssertionVerifyError(f"{what}: it needs {typ} {'/'.join(pk)}, which is not known")
    if a.type_name == "snap-revision":
        developer = a.header("developer-id")
        if a.authority_id not in (trusted.authority_id, developer):
            raise AssertionVerifyError(f"{what}: it must be signed by the trusted root or by its developer "
                                       f"{developer!r}, not by {a.authority_id!r}")
        decl = lookup("snap-declaration", ("16", a.header("snap-id")))
        if decl is not None and a.authority_id != trusted.authority_id \
                and decl.header("publisher-id") != developer:
            raise AssertionVerifyError(
                f"{what}: its developer {developer!r} is not the publisher of snap id {a.header('snap-id')} "
                f"(snap-declaration {decl.header('snap-name')!r} says {decl.header('publisher-id')!r})")


def add_many(st: State, assertions: Iterable[Assertion], trusted: TrustedRoot | None, *,
             keep_newer: bool = False) -> list[Assertion]:
    """add_many verifies assertions (in any order) and stores them all, or none.

    Each may rely on the others and on what is stored. With keep_newer, one
    whose stored revision is as new or newer is skipped (what a fetch from
    the store wants); otherwise it is refused like the engine refuses it.
    """
    good = verify_many(st, assertions, trusted, keep_newer=keep_newer)
    book = AssertionBook(st)
    for a in good:
        if book.put(a.type_name, a.primary_key, a.revision, a.text, dict(a.headers)):
            log.debug("added %s revision %d", a.ref, a.revision)
    return good


def needs(a: Assertion, trusted: TrustedRoot | None) -> list[Key]:
    """needs lists the assertions verify looks up for a: its signing key's account-key and its prerequisites."""
    if trusted is None:
        return []  # verify refuses it before looking anything up
    out: list[Key] = []
    if a.sign_key_id != trusted.key.id:
        out.append(("account-key", (a.sign_key_id,)))
    for typ, pk in a.prerequisites():
        if not (typ == "account" and pk == (trusted.authority_id,)):
            out.append((typ, pk))
    if a.type_name == "snap-revision":
        out.append(("snap-declaration", ("16", a.header("snap-id"))))
    return out


def _dependency_order(todo: list[Assertion], trusted: TrustedRoot | None) -> list[Assertion]:
    """_dependency_order puts what each assertion needs of the others before it (Kahn's algorithm, stable).

    Linear in the assertions and their needs. Those in a circle of needs
    come last, in the order given (verify refuses them unless the database
    has what they need).
    """
    index = {(a.type_name, a.primary_key): i for i, a in enumerate(todo)}
    blockers = [0] * len(todo)
    unblocks: list[list[int]] = [[] for _ in todo]
    for i, a in enumerate(todo):
        for j in {index.get(k) for k in needs(a, trusted)}:
            if j is not None and j != i:
                blockers[i] += 1
                unblocks[j].append(i)
    ready = deque(i for i, n in enumerate(blockers) if n == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in unblocks[i]:
            blockers[j] -= 1
            if blockers[j] == 0:
                ready.append(j)
    order += [i for i, n in enumerate(blockers) if n > 0]
    return [todo[i] for i in order]


def verify_many(st: State, assertions: Iterable[Assertion], trusted: TrustedRoot | None, *,
                keep_newer: bool = False) -> list[Assertion]:
    """verify_many checks assertions as add_many does, storing nothing; it returns those add_many would store.

    Any order is fine: each is verified once, after what it needs of the
    others (so a stream in the worst order costs what the best one does).
    Key validity and timestamps are judged against the State's clock (see
    verify). The first assertion given that does not verify is the one the
    AssertionVerifyError names.
    """
    todo = list(assertions)
    seen: dict[Key, Assertion] = {}
    for a in todo:
        k = (a.type_name, a.primary_key)
        if k in seen and seen[k].text != a.text:
            raise InvalidAssertionError(f"cannot add {a.ref}: given twice, with different content")
        seen[k] = a
    todo = list(seen.values())
    book = AssertionBook(st)
    good: dict[Key, Assertion] = {}
    now = book.now()  # the State's clock, which the signer does not choose

    def lookup(typ: str, pk: tuple[str, ...]) -> Assertion | None:
        return good.get((typ, pk)) or stored(st, typ, pk)

    if keep_newer:
        kept = []
        for a in todo:
            row = book.get(a.type_name, a.primary_key)
            if row is not None and row.revision >= a.revision:
                continue
            kept.append(a)
        todo = kept
    failed: set[Key] = set()
    for a in _dependency_order(todo, trusted):
        try:
            verify(a, lookup, trusted, now)
        except AssertionVerifyError:
            failed.add((a.type_name, a.primary_key))
        else:
            good[(a.type_name, a.primary_key)] = a
    # What failed is tried again until nothing more verifies: once, when needs() named all that verify looks up.
    left = [a for a in todo if (a.type_name, a.primary_key) in failed]
    while left:
        errors: list[tuple[Assertion, AssertionVerifyError]] = []
        for a in left:
            try:
                verify(a, lookup, trusted, now)
            except AssertionVerifyError as e:
                errors.append((a, e))
            else:
                good[(a.type_name, a.primary_key)] = a
        if len(errors) == len(left):
            raise errors[0][1]
        left = [a for a, _ in errors]
    return list(good.values())


def fetch_chain(fetch: Fetch, type: str, primary_key: Sequence[str], trusted: TrustedRoot | None,
                have: Callable[[str, tuple[str, ...]], bool] | None = None) -> list[Assertion]:
    """fetch_chain fetches an assertion and, recursively, what it needs: prerequisites and signing keys.

    What fetch does not have is left out (verifying names it); what have()
    says is known already is not fetched again.
    """
    out: list[Assertion] = []
    queue = [(type, tuple(primary_key))]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while queue:
        k = queue.pop(0)
        if k in done:
            continue
        done.add(k)
        if k != (type, tuple(primary_key)) and have is not None and have(*k):
            continue
        text = fetch(*k)
        if text is None:
            continue
        a = decode(text)
        if (a.type_name, a.primary_key) != k:
            raise InvalidAssertionError(f"cannot fetch {k[0]} {'/'.join(k[1])}: the store gave {a.ref}")
        out.append(a)
        if trusted is None or a.sign_key_id != trusted.key.id:
            queue.append(("account-key", (a.sign_key_id,)))
        for prereq in a.prerequisites():
            if trusted is not None and prereq == ("account", (trusted.authority_id,)):
                continue
            queue.append(prereq)
    out.reverse()  # prerequisites first
    return out
