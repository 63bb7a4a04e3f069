# SPDX-License-Identifier: GPL-3.0-or-later
"""AssertionBook: signed documents in the assert manager's own table, written with the state, with the revision rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine import State
from engine.testing import FakeClock
from managers.assertstate import AssertionBook
from managers.errors import AssertionRevisionError

HEADERS = {"type": "snap-declaration", "authority-id": "root", "series": "16", "snap-id": "abc",
           "snap-name": "hello", "publisher-id": "acme"}


def put(st: State, revision: int, text: str = "text", **headers: str) -> bool:
    return AssertionBook(st).put("snap-declaration", ["16", "abc"], revision, text, {**HEADERS, **headers})


def test_put_get_and_find(st: State, clock: FakeClock) -> None:
    with st:
        assert AssertionBook(st).get("snap-declaration", ["16", "abc"]) is None
        assert put(st, 1) is True
        a = AssertionBook(st).get("snap-declaration", ("16", "abc"))
        assert a is not None
        assert (a.type, a.primary_key, a.revision, a.text, a.authority_id) == \
            ("snap-declaration", ("16", "abc"), 1, "text", "root")
        assert a.added_time == clock()
        AssertionBook(st).put("snap-declaration", ["16", "def"], 0, "other", {**HEADERS, "snap-name": "world"})
    with st:
        assert [x.primary_key for x in AssertionBook(st).find("snap-declaration")] == [("16", "abc"), ("16", "def")]
        assert [x.headers["snap-name"] for x in AssertionBook(st).find("snap-declaration", {"snap-name": "world"})] == \
            ["world"]
        assert AssertionBook(st).find("snap-declaration", {"snap-name": "nobody"}) == []
        assert AssertionBook(st).find("account") == []
        # Uncommitted puts are found too.
        AssertionBook(st).put("snap-declaration", ["16", "ghi"], 0, "third", {**HEADERS, "snap-name": "third"})
        assert [x.text for x in AssertionBook(st).find("snap-declaration", {"snap-name": "third"})] == ["third"]


def test_revision_rule(st: State) -> None:
    with st:
        put(st, 2, "two")
    with st:
        assert put(st, 2, "two") is False  # the same document again: nothing to do
        with pytest.raises(AssertionRevisionError) as e:
            put(st, 1, "one")
        assert "revision 1 is older than the stored revision 2" in str(e.value)
        assert (e.value.current, e.value.used) == (2, 1)
        with pytest.raises(AssertionRevisionError, match="revision 2 is already stored with other content"):
            put(st, 2, "two, re-signed")
        assert put(st, 3, "three") is True
    with st:
        a = AssertionBook(st).get("snap-declaration", ["16", "abc"])
        assert a is not None and (a.revision, a.text) == (3, "three")


def test_puts_commit_with_the_unit_of_work_and_roll_back_with_it(file_st: State, db_path: Path) -> None:
    st = file_st
    with pytest.raises(RuntimeError), st:
        put(st, 1)
        st.set("other", 1)
        raise RuntimeError("boom")
    with st:
        assert AssertionBook(st).get("snap-declaration", ["16", "abc"]) is None
        assert st.get("other", None) is None
        put(st, 1)
        st.set("other", 2)
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("SELECT type, primary_key, revision, authority_id, json_extract(headers, "
                           "'$.\"snap-name\"'), text FROM assertions").fetchall() == [
            ("snap-declaration", "16/abc", 1, "root", "hello", "text")]
    finally:
        con.close()


def test_assertions_survive_reopen_and_see_outside_writes(db_path: Path, clock: FakeClock) -> None:
    st = State.open(db_path, clock=clock)
    with st:
        put(st, 1)
    st.close()
    st = State.open(db_path, clock=clock)
    try:
        with st:
            a = AssertionBook(st).get("snap-declaration", ["16", "abc"])
            assert a is not None and a.headers["publisher-id"] == "acme"
        con = sqlite3.connect(db_path)
        with con:
            con.execute("UPDATE assertions SET revision = 7")
        con.close()
        with st:
            a = AssertionBook(st).get("snap-declaration", ["16", "abc"])
            assert a is not None and a.revision == 7
    finally:
        st.close()


def test_lock_and_arguments_are_checked(st: State) -> None:
    with pytest.raises(RuntimeError, match="lock"):
        AssertionBook(st).get("account", ["x"])
    with st:
        with pytest.raises(ValueError, match="cannot use assertion type"):
            AssertionBook(st).get("Bad Type", ["x"])
        for key in ([], ["a/b"], [""], "abc"):
            with pytest.raises(ValueError, match="cannot use primary key"):
                AssertionBook(st).put("account", key, 0, "t")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="revision must be"):
            AssertionBook(st).put("account", ["x"], -1, "t")
        with pytest.raises(ValueError, match="text is empty"):
            AssertionBook(st).put("account", ["x"], 0, "")
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            AssertionBook(st).put("account", ["x"], 0, "t", {"when": object()})
