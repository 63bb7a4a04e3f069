# SPDX-License-Identifier: GPL-3.0-or-later
"""Small promises: non-finite delays are refused everywhere; a reader says nothing of the writer's sequences."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

import pytest

from engine import Retry, State


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_delays_are_refused_like_retry(st: State, delay: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        Retry(after=delay)
    asked: list[float] = []
    st.set_ensure_before_hook(asked.append)
    with st, pytest.raises(ValueError, match="ensure_before delay must be a finite number of seconds"):
        st.ensure_before(delay)
    assert asked == []
    with st:
        st.ensure_before(1e300)  # a finite delay past any due time is still taken (as the longest one)
        st.ensure_before(0)
    assert asked[1] == 0 and 0 < asked[0] < math.inf


def test_a_reader_says_nothing_of_the_writers_sequences(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    st = State.open(db_path)
    try:
        with st:
            st.new_change("c", "ids in use").add_task(st.new_task("k", "t"))
    finally:
        st.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("UPDATE sequences SET last_id = 0")  # behind the ids in use
    finally:
        conn.close()
    caplog.set_level(logging.DEBUG, "engine")
    reader = State.open(db_path, read_only=True)
    try:
        with reader:
            assert [c.summary for c in reader.changes()] == ["ids in use"]
        reader._uow.rollback()  # what a failed unit does: the sequences are read again
    finally:
        reader.close()
    assert not [r for r in caplog.records if "sequence" in r.getMessage()]
    # The writer is the one that mends them, and says so.
    writer = State.open(db_path)
    writer.close()
    assert [r for r in caplog.records if "sequence of" in r.getMessage() and "behind" in r.getMessage()]
