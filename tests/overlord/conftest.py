# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the daemon and command-line tests: a real daemon in a real process (tests/support/daemon.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, short_tempdir


@pytest.fixture
def base() -> Iterator[Path]:
    d = short_tempdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(base: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(base)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    """shared_daemon is one daemon for the tests of a module that do not depend on a fresh state."""
    base = short_tempdir()
    d = DaemonProcess(base)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    shutil.rmtree(base, ignore_errors=True)
