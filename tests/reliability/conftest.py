# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the reliability tests that run one overlord on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine import Overlord


@pytest.fixture
def overlord(pg_url: str) -> Iterator[Overlord]:
    """overlord is an Overlord of one worker on a fresh PostgreSQL state database, stopped and closed after."""
    o = Overlord(url=pg_url, workers=1)
    yield o
    o.stop()
    o.state.close()

