# SPDX-License-Identifier: GPL-3.0-or-later
"""AssertManager: every link of the chain to the trusted root, all-or-nothing adds, revisions, fetching."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import State, TaskRunner
from engine.testing import FakeClock
from managers import AssertionRevisionError, AssertionVerifyError
from managers.asserts import Assertion, PrivateKey, sha3_384, sign
from managers.asserts.build import account, account_key, snap_declaration, snap_id_for, snap_revision
from managers.assertstate import AssertionBook, AssertManager, assertstate, fetch_chain
from managers.snapstore import SnapStore

T = "2030-01-01T00:00:00Z"
DIGEST = sha3_384(b"the snap file")


@pytest.fixture
def am(st: State, root_key: PrivateKey) -> Iterator[AssertManager]:
    runner = TaskRunner(st)
    yield AssertManager(st, runner, trusted_key=root_key.public_key)
    runner.stop()


def chain(root: PrivateKey, acme: PrivateKey, **kw: Any) -> list[Assertion]:
    """chain is a good chain: acme's account and key, hello's declaration, a revision signed by acme."""
    return [account(root, "root", "acme", "ACME", timestamp=T),
            account_key(root, "root", "acme", acme.public_key),
            snap_declaration(root, "root", "hello", "acme", timestamp=T),
            snap_revision(acme, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme", timestamp=T, **kw)]


def test_a_good_chain_is_added_in_any_order(st: State, am: AssertManager, root_key: PrivateKey,
                                            acme_key: PrivateKey) -> None:
    good = chain(root_key, acme_key)
    with st:
        added = am.add("".join(a.text for a in reversed(good)))
        assert sorted(a.ref for a in added) == sorted(a.ref for a in good)
    with st:
        rev = am.get("snap-revision", (DIGEST,))
        assert rev is not None and rev.header("snap-size") == "1234"
        assert [a.header("snap-name") for a in am.find("snap-declaration", {"snap-name": "hello"})] == ["hello"]
        assert am.find("snap-declaration", {"snap-name": "world"}) == []
        # Adding the same again is a no-op.
        am.add(good[0].text)
        assert AssertionBook(st).get("account", ["acme"]).revision == 0  # type: ignore[union-attr]


def _other_key(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    return [*good[:3], snap_revision(PrivateKey.generate(), "acme", DIGEST, 1, snap_id_for("hello"), 1, "acme")]


def _key_of_another_account(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    evil = PrivateKey.generate()
    good = chain(root, acme)
    return [*good[:3], account(root, "root", "evil", "Evil", timestamp=T),
            account_key(root, "root", "evil", evil.public_key),
            sign({**snap_revision(evil, "acme", DIGEST, 1, snap_id_for("hello"), 1, "acme").headers}, evil)]


def _tampered(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    text = good[3].text.replace("snap-size: 1234", "snap-size: 9999")
    from managers.asserts import decode

    return [*good[:3], decode(text)]


def _root_key_other_authority(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    return [account(root, "canonical", "acme", "ACME", timestamp=T)]


def _publisher_signs_account(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    return [*good[:2], account(acme, "acme", "other", "Other", timestamp=T)]


def _missing_prerequisite(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    return [snap_declaration(root, "root", "hello", "nobody", timestamp=T)]


def _developer_not_publisher(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    decl = snap_declaration(root, "root", "hello", "other", timestamp=T)
    return [good[0], good[1], account(root, "root", "other", "Other", timestamp=T), decl, good[3]]


def _key_not_yet_valid(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    return [good[0], account_key(root, "root", "acme", acme.public_key, since="2031-01-01T00:00:00Z"), *good[2:]]


def _key_expired(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    return [good[0], account_key(root, "root", "acme", acme.public_key, until="2029-06-01T00:00:00Z"), *good[2:]]


def _back_dated_by_an_expired_key(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    # The key expired before now (the State's clock: 2030-01-01T12:00:00Z); the signer dates the
    # revision inside the key's validity, which it is free to do.
    good = chain(root, acme)
    return [good[0], account_key(root, "root", "acme", acme.public_key, until="2030-01-01T06:00:00Z"), good[2],
            snap_revision(acme, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme",
                          timestamp="2029-12-31T00:00:00Z")]


def _future_dated(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    good = chain(root, acme)
    return [*good[:3], snap_revision(acme, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme",
                                     timestamp="2030-01-01T12:10:01Z")]


def _future_dated_by_the_root(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    return [account(root, "root", "acme", "ACME", timestamp="2031-01-01T00:00:00Z")]


def _key_valid_only_from_the_near_future(root: PrivateKey, acme: PrivateKey) -> list[Assertion]:
    # Within the clock skew the timestamp passes, but the key is not valid now.
    good = chain(root, acme)
    return [good[0], account_key(root, "root", "acme", acme.public_key, since="2030-01-01T12:05:00Z"), good[2],
            snap_revision(acme, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme",
                          timestamp="2030-01-01T12:06:00Z")]


BROKEN: list[tuple[Callable[[PrivateKey, PrivateKey], list[Assertion]], str]] = [
    (_other_key, "no account-key for its signing key"),
    (_key_of_another_account, "belongs to account 'evil', not to its authority-id 'acme'"),
    (_tampered, "its signature does not verify"),
    (_root_key_other_authority, "signed with the trusted root key, but its authority-id is 'canonical'"),
    (_publisher_signs_account, "only the trusted root (root) may sign account assertions, not 'acme'"),
    (_missing_prerequisite, "it needs account nobody, which is not known"),
    (_developer_not_publisher, "its developer 'acme' is not the publisher of snap id"),
    (_key_not_yet_valid, "is not valid at 2030-01-01T00:00:00Z (valid since 2031-01-01T00:00:00Z)"),
    (_key_expired, "until 2029-06-01T00:00:00Z"),
    (_back_dated_by_an_expired_key, "is expired (now is 2030-01-01T12:00:00Z, key valid since "
                                    "2000-01-01T00:00:00Z until 2030-01-01T06:00:00Z)"),
    (_future_dated, "its timestamp 2030-01-01T12:10:01Z is in the future (now is 2030-01-01T12:00:00Z, "
                    "allowing 10 minutes of clock skew)"),
    (_future_dated_by_the_root, "its timestamp 2031-01-01T00:00:00Z is in the future"),
    (_key_valid_only_from_the_near_future, "is not valid yet (now is 2030-01-01T12:00:00Z"),
]


@pytest.mark.parametrize(("make", "message"), BROKEN, ids=[f.__name__.strip("_") for f, _ in BROKEN])
def test_a_broken_link_is_named_and_nothing_is_added(st: State, am: AssertManager, root_key: PrivateKey,
                                                     acme_key: PrivateKey, make: Any, message: str) -> None:
    batch = make(root_key, acme_key)
    with st:
        with pytest.raises(AssertionVerifyError) as e:
            am.add_many(batch)
        assert message in str(e.value)
        assert str(e.value).startswith("cannot add ")
        for a in batch:
            assert AssertionBook(st).get(a.type_name, a.primary_key) is None, f"{a.ref} was stored"


def test_key_validity_and_timestamps_are_judged_by_the_state_clock(st: State, am: AssertManager,
                                                                   root_key: PrivateKey, acme_key: PrivateKey,
                                                                   clock: FakeClock) -> None:
    """The State's clock, which the signer does not choose, decides; a small skew is tolerated."""
    good = chain(root_key, acme_key)
    key = account_key(root_key, "root", "acme", acme_key.public_key, until="2030-02-01T00:00:00Z")
    near = snap_revision(acme_key, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme",
                         timestamp="2030-01-01T12:09:59Z")  # within MAX_CLOCK_SKEW of now
    with st:
        am.add_many([good[0], key, good[2], near])
    later = snap_revision(acme_key, "acme", DIGEST, 1234, snap_id_for("hello"), 1, "acme",
                          timestamp="2030-01-15T00:00:00Z", revision=1)
    clock.set(datetime(2030, 2, 1, tzinfo=UTC))  # the key expires: what it signed before stays
    with st, pytest.raises(AssertionVerifyError, match="is expired"):
        am.add_many([later])
    with st:
        assert am.get("snap-revision", (DIGEST,)).revision == 0  # type: ignore[union-attr]
    clock.set(datetime(2030, 1, 31, tzinfo=UTC))
    with st:
        am.add_many([later])
        assert am.get("snap-revision", (DIGEST,)).revision == 1  # type: ignore[union-attr]


def developers(root: PrivateKey, n: int) -> list[Assertion]:
    """developers is n developers' chains (account, key, declaration, a revision they signed): 4 * n assertions."""
    out = []
    for d in range(n):
        key = PrivateKey.generate()
        dev, snap = f"dev{d}", f"snap{d}"
        out += [account(root, "root", dev, dev, timestamp=T), account_key(root, "root", dev, key.public_key),
                snap_declaration(root, "root", snap, dev, timestamp=T),
                snap_revision(key, dev, sha3_384(snap.encode()), 1, snap_id_for(snap), 1, dev, timestamp=T)]
    return out


@pytest.mark.sqlite_only
def test_any_order_costs_one_verification_per_assertion(st: State, root_key: PrivateKey,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream in the worst order (everything before what it needs) is verified as cheaply as the best one."""
    stream = developers(root_key, 500)
    calls = 0
    real = assertstate.verify

    def counting(*args: Any) -> None:
        nonlocal calls
        calls += 1
        real(*args)

    monkeypatch.setattr(assertstate, "verify", counting)
    trusted = assertstate.TrustedRoot("root", root_key.public_key)
    results = {}
    for name, order in (("given", stream), ("reversed", stream[::-1])):
        calls = 0
        with st:
            results[name] = sorted(a.ref for a in assertstate.verify_many(st, order, trusted))
        assert calls == len(stream) == 2000, name
    assert results["reversed"] == results["given"] == sorted(a.ref for a in stream)
    # What a broken link stops is the same whatever the order.
    broken = [a for a in stream if a.ref != stream[1].ref]  # dev0's account-key is missing
    for order in (broken, broken[::-1]):
        with st, pytest.raises(AssertionVerifyError, match=r"cannot add snap-revision .*: no account-key"):
            assertstate.verify_many(st, order, trusted)


def test_no_trusted_key_means_nothing_verifies(st: State, root_key: PrivateKey) -> None:
    runner = TaskRunner(st)
    try:
        am = AssertManager(st, runner)
        with st, pytest.raises(AssertionVerifyError, match="no trusted root key is configured"):
            am.add(account(root_key, "root", "acme", "ACME").text)
    finally:
        runner.stop()


def test_revisions(st: State, am: AssertManager, root_key: PrivateKey) -> None:
    with st:
        am.add(account(root_key, "root", "acme", "ACME", timestamp=T, revision=2).text)
    with st:
        with pytest.raises(AssertionRevisionError, match="revision 1 is older than the stored revision 2"):
            am.add(account(root_key, "root", "acme", "Old name", timestamp=T, revision=1).text)
        # keep_newer (what a fetch from the store does) keeps the stored one quietly.
        assert am.add_many([account(root_key, "root", "acme", "Old", timestamp=T, revision=1)], keep_newer=True) == []
        am.add(account(root_key, "root", "acme", "New name", timestamp=T, revision=3).text)
    with st:
        a = am.get("account", ("acme",))
        assert a is not None and (a.revision, a.header("display-name")) == (3, "New name")


def test_fetch_chain_follows_prerequisites_and_keys(tmp_path: Path, st: State, am: AssertManager,
                                                    root_key: PrivateKey, acme_key: PrivateKey) -> None:
    store = SnapStore(tmp_path)
    good = chain(root_key, acme_key)
    for a in good:
        store.add_assertion(a)
    got = fetch_chain(store.assertion, "snap-revision", (DIGEST,), am.trusted)
    assert sorted(a.ref for a in got) == sorted(a.ref for a in good)
    assert got[-1].type_name == "snap-revision"
    with st:
        am.add_many(got, keep_newer=True)
    with st:
        fetched: list[tuple[str, tuple[str, ...]]] = []

        def counting(typ: str, pk: tuple[str, ...]) -> str | None:
            fetched.append((typ, pk))
            return store.assertion(typ, pk)

        am.fetch(counting, "snap-revision", (DIGEST,))
        assert fetched == [("snap-revision", (DIGEST,))], "what is known already is not fetched again"
    assert fetch_chain(store.assertion, "snap-revision", ("x" * 64,), am.trusted) == []
