# SPDX-License-Identifier: GPL-3.0-or-later
"""The project's wheel, built once per test run and shared by the tests that install it (and by the xdist workers).

``pip wheel`` of the checkout takes seconds of CPU (a build backend in a
fresh process); tests/project/test_wheel.py and test_install.py each used to
build their own. The first worker to ask builds it under a file lock in the
run's common temporary directory; the others find it there.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """project_wheel is the path of the checkout's wheel (pip wheel --no-deps --no-build-isolation), built once."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a directory of the run's own (popen-gwN): its parent is shared.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / "project-wheel"
    with open(root / "project-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(out.glob("*.whl"))
        if not built:
            build = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
                capture_output=True, text=True, timeout=300,
            )
            assert build.returncode == 0, build.stdout + build.stderr
            built = sorted(out.glob("*.whl"))
    assert len(built) == 1, built
    return built[0]
