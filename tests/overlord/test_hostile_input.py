# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and out-of-range values given to the overlord command and the API: one line, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import child_env, overlord_cmd


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(overlord_cmd(*args, "--state-dir", str(tmp_path)), capture_output=True, text=True,
                          env=child_env(), timeout=60)


@pytest.mark.parametrize("hold", ["99999999d", "99999999999999999999d", "999999999999h"])
def test_a_hold_past_the_year_9999_is_a_usage_error(tmp_path: Path, hold: str) -> None:
    p = _cli(tmp_path, "refresh", f"--hold={hold}", "hello")
    assert p.returncode == 2, p.stderr
    assert p.stderr == (f"error: cannot hold for '{hold}': it would end after the year 9999; hold forever instead "
                        "(a bare --hold) (see 'overlord refresh --help')\n")
