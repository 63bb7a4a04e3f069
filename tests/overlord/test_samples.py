# SPDX-License-Identifier: GPL-3.0-or-later
"""`python -m overlord.samples`: the sample store, its keys beside it (or where --keys says), never in the
current directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.daemon import START_TIMEOUT, child_env


def _samples(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "overlord.samples", *args, "--versions", "1.0"], cwd=cwd,
                          capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT)


def test_the_keys_go_beside_the_store_or_where_keys_says(tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    p = _samples(cwd, str(tmp_path / "demo" / "store"))
    assert p.returncode == 0, p.stderr
    keys = tmp_path / "demo" / "keys"
    assert sorted(f.name for f in keys.iterdir()) == ["acme.pem", "acme.pub.pem", "root.pem", "root.pub.pem"]
    assert f"trusted root key: {keys / 'root.pub.pem'} (" in p.stdout
    assert list(cwd.iterdir()) == []  # nothing written where it was run
    p = _samples(cwd, "store2", "--keys", str(tmp_path / "mine"))  # relative store: beside it, in cwd
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mine" / "root.pem").is_file()
    assert sorted(f.name for f in cwd.iterdir()) == ["snaps", "store2"]
