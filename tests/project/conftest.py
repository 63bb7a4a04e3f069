# SPDX-License-Identifier: GPL-3.0-or-later
"""The project tests' shared fixture: the checkout's wheel, built once for the run (tests/support/wheel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.wheel import project_wheel


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wheel is the checkout's wheel (pip wheel --no-deps --no-build-isolation), one build for every test."""
    return project_wheel(tmp_path_factory)
