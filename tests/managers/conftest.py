# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the manager tests: keys, a SystemOverlord on temporary directories (tests/support/system.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.testing import FakeClock
from managers.asserts import PrivateKey
from tests.support.system import System


@pytest.fixture(scope="session")
def root_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="session")
def acme_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def system(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> Iterator[System]:
    s = System(tmp_path, root_key, acme_key, clock, names=("hello", "world", "other"))
    yield s
    s.stop()
