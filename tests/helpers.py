# SPDX-License-Identifier: GPL-3.0-or-later
"""Small helpers shared by the runner tests."""

from __future__ import annotations

from engine import State, Task


def one_task_change(st: State, kind: str, summary: str = "...") -> tuple[str, str]:
    """one_task_change adds a change with one task of kind; returns (change id, task id)."""
    with st:
        chg = st.new_change("install", "...")
        t = st.new_task(kind, summary)
        chg.add_task(t)
        return chg.id, t.id


def task_of(st: State, tid: str) -> Task:
    """task_of returns the task with id tid, which must exist (call with the lock held)."""
    t = st.task(tid)
    assert t is not None
    return t
