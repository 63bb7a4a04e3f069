# SPDX-License-Identifier: GPL-3.0-or-later
"""engine.pytest_plugin: pytest fixtures for code built on the engine (a `pytest11` entry point).

Installed with the package, so a project's tests have them without a
conftest: `engine_clock` (a FakeClock), `engine_state` (a State on a real
SQLite file in the test's temporary directory, on that clock) and
`engine_overlord` (an Overlord there, stopped after the test). See
engine.testing and docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .overlord import Overlord
from .state import State
from .testing import FakeClock


@pytest.fixture
def engine_clock() -> FakeClock:
    """engine_clock is a FakeClock the test moves by hand; engine_state and engine_overlord use it."""
    return FakeClock()


@pytest.fixture
def engine_state(tmp_path: Path, engine_clock: FakeClock) -> Iterator[State]:
    """engine_state is a State on a new SQLite file (tmp_path/state.db), closed after the test."""
    st = State.open(tmp_path / "state.db", clock=engine_clock)
    yield st
    st.close()


@pytest.fixture
def engine_overlord(tmp_path: Path, engine_clock: FakeClock) -> Iterator[Overlord]:
    """engine_overlord is an Overlord on a new SQLite file under tmp_path/overlord, stopped after the test."""
    o = Overlord(root=tmp_path / "overlord", clock=engine_clock)
    yield o
    o.stop()
