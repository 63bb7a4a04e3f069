# SPDX-License-Identifier: GPL-3.0-or-later
"""Idempotent requests: new_change(key=...) returns the change the key made (engine.keys), on both backends."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from engine import ChangeConflictError, State
from engine.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0  # generous: a bound for a loaded machine, never a timing assertion


def _make(st: State, key: str | None, kind: str = "install") -> str:
    with st:
        chg = st.new_change(kind, "Install hello", key=key)
        if chg.is_new:
            chg.add_task(st.new_task("download", "Download hello"))
        return chg.id


def test_a_second_request_with_the_key_gets_the_first_change(st: State) -> None:
    first = _make(st, "req-1")
    again = _make(st, "req-1")
    other = _make(st, "req-2")
    assert again == first != other
    with st:
        assert [c.id for c in st.changes()] == [first, other]
        chg = st.change(first)
        assert chg is not None and chg.key == "req-1" and not chg.is_new
        assert len(chg.tasks()) == 1  # the retried request added nothing
        assert st.change_by_key("req-1") == chg
        assert st.change_by_key("req-3") is None


def test_a_change_made_without_a_key_has_none(st: State) -> None:
    cid = _make(st, None)
    with st:
        chg = st.change(cid)
        assert chg is not None and chg.key is None


def test_the_same_key_twice_in_one_unit_of_work_gives_one_change(st: State) -> None:
    with st:
        a = st.new_change("install", "a", key="once")
        b = st.new_change("install", "b", key="once")
        assert a == b and a.summary == "a"
    with st:
        assert len(st.changes()) == 1


def test_a_key_of_a_change_of_another_kind_is_refused(st: State) -> None:
    cid = _make(st, "req-1", "install")
    with st, pytest.raises(ChangeConflictError, match=f"with key 'req-1': it names change {cid} \\(install\\)") as e:
        st.new_change("remove", "Remove hello", key="req-1")
    assert e.value.change_id == cid


def test_a_key_lasts_its_retention_then_makes_a_new_change(st: State, clock: FakeClock) -> None:
    with st:
        first = st.new_change("install", "x", key="k", key_retention=timedelta(minutes=5)).id
    clock.advance(minutes=4)
    assert _make(st, "k") == first
    clock.advance(minutes=2)
    second = _make(st, "k")
    assert second != first
    with st:
        assert st.change_by_key("k") == st.change(second)
        assert st.change(first) is not None  # the old change stays; only its key went


def test_a_unit_of_work_rolled_back_leaves_the_key_free(st: State) -> None:
    with pytest.raises(RuntimeError), st:
        st.new_change("install", "x", key="k")
        raise RuntimeError("the request failed")
    cid = _make(st, "k")
    with st:
        chg = st.change(cid)
        assert chg is not None and chg.key == "k" and len(st.changes()) == 1


def test_prune_forgets_expired_keys_and_the_keys_of_pruned_changes(st: State, clock: FakeClock) -> None:
    start = clock()
    with st:
        st.new_change("install", "x", key="short", key_retention=60)
        chg = st.new_change("install", "y", key="long", key_retention=timedelta(days=30))
        t = st.new_task("k", "t")
        chg.add_task(t)
        t.set_status(t.status.DONE)
        old = chg.id
    clock.advance(hours=2)
    with st:
        st.prune(start, timedelta(days=1), timedelta(days=3), 500)
        assert st.change_by_key("short") is None
        assert st.change_by_key("long") == chg
    clock.advance(days=2)
    with st:
        st.prune(start, timedelta(days=1), timedelta(days=3), 500)  # the ready change goes, and its key
        assert st.change(chg.id) is None
        assert st.change_by_key("long") is None
    assert _make(st, "long") != old


def test_the_key_survives_a_restart(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    try:
        first = _make(st, "req-1")
    finally:
        st.close()
    st = State.open(db_path, clock=clock)
    try:
        assert _make(st, "req-1") == first
    finally:
        st.close()


@pytest.mark.parametrize("bad", ["", "x" * 257, 5])
def test_a_bad_key_is_refused_in_one_line(st: State, bad: object) -> None:
    with st, pytest.raises((ValueError, TypeError), match=r"^cannot use change key"):
        st.new_change("install", "x", key=bad)  # type: ignore[arg-type]


def test_a_key_claimed_for_a_change_made_without_one_names_it(st: State) -> None:
    """claim_change_key: a change made by code that takes no key (a manager's verb) is named by the key after."""
    with st:
        first = st.new_change("connect", "Connect a to b")
        assert st.claim_change_key("req-1", first) == first and first.key == "req-1"
        cid = first.id
    with st:  # a second request with the key: its change loses, and the caller rolls it back
        second = st.new_change("connect", "Connect a to b")
        assert st.claim_change_key("req-1", second).id == cid
        assert st.change_by_key("req-1").id == cid  # type: ignore[union-attr]
    with st:
        assert st.claim_change_key("req-2", st.change(cid)).id == cid  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^cannot use change key"):
            st.claim_change_key("", st.change(cid))  # type: ignore[arg-type]


# -- several hosts on PostgreSQL -----------------------------------------------------------------

def test_a_host_claiming_a_key_for_its_change_waits_then_gets_the_first_hosts(pg_url: str) -> None:
    a, b = State.open(url=pg_url), State.open(url=pg_url)
    try:
        inside, release = threading.Event(), threading.Event()
        got: dict[str, str] = {}

        def host_a() -> None:
            with a:
                chg = a.new_change("connect", "from a")
                got["a"] = a.claim_change_key("req", chg).id
                inside.set()
                release.wait(WAIT)

        ta = threading.Thread(target=host_a)
        ta.start()
        assert inside.wait(WAIT)
        threading.Timer(0.3, release.set).start()
        with b:
            mine = b.new_change("connect", "from b")
            got["b"] = b.claim_change_key("req", mine).id  # waits for a's transaction, then finds its change
            got["mine"] = mine.id
        ta.join(WAIT)
        assert got["a"] == got["b"] != got["mine"]
    finally:
        a.close()
        b.close()


def test_a_host_waits_for_the_unit_that_holds_the_key_then_gets_its_change(pg_url: str) -> None:
    a, b = State.open(url=pg_url), State.open(url=pg_url)
    try:
        inside, release, done = threading.Event(), threading.Event(), threading.Event()
        got: dict[str, str] = {}
        errors: list[BaseException] = []

        def host_a() -> None:
            try:
                with a:
                    chg = a.new_change("install", "from a", key="req")
                    chg.add_task(a.new_task("k", "t"))
                    got["a"] = chg.id
                    inside.set()
                    release.wait(WAIT)
            except BaseException as e:
                errors.append(e)
                inside.set()

        def host_b() -> None:
            try:
                with b:
                    chg = b.new_change("install", "from b", key="req")  # waits for a's transaction
                    got["b"], got["b-new"] = chg.id, str(chg.is_new)
                done.set()
            except BaseException as e:
                errors.append(e)
                done.set()

        ta = threading.Thread(target=host_a)
        ta.start()
        assert inside.wait(WAIT)
        tb = threading.Thread(target=host_b)
        tb.start()
        assert not done.wait(0.3), "the second host did not wait for the first's key"
        release.set()
        ta.join(WAIT)
        tb.join(WAIT)
        assert errors == []
        assert got == {"a": got["a"], "b": got["a"], "b-new": "False"}
        with b:
            assert [c.summary for c in b.changes()] == ["from a"]
    finally:
        a.close()
        b.close()


RACER = """
import sys, time
from engine import State
url, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
st = State.open(url=url)
while time.time() < start:
    time.sleep(0.001)
for i in range(n):
    with st:
        chg = st.new_change("install", "racer", key=f"req-{i}")
        if chg.is_new:
            chg.add_task(st.new_task("k", "t"))
        print(i, chg.id, flush=True)
st.close()
"""


def test_processes_racing_on_the_same_keys_make_one_change_per_key(pg_url: str) -> None:
    import time

    n, hosts = 30, 4
    start = time.time() + 2.0  # every process is connected by then (a start line, not a timing assertion)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, pg_url, str(start), str(n)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(hosts)]
    outs = [p.communicate(timeout=WAIT) for p in procs]
    assert [p.returncode for p in procs] == [0] * hosts, [o[1].decode()[-2000:] for o in outs]
    seen: dict[int, set[str]] = {}
    for out, _ in outs:
        for line in out.decode().split("\n"):
            if line:
                i, cid = line.split()
                seen.setdefault(int(i), set()).add(cid)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert len(seen) == n
    st = State.open(url=pg_url)
    try:
        with st:
            changes = st.changes()
            assert len(changes) == n
            assert all(len(c.tasks()) == 1 for c in changes)
    finally:
        st.close()
