# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord pack DIR [-o FILE]."""

from __future__ import annotations

from pathlib import Path

from managers.snap import read_info
from overlord.samples import SNAPS
from tests.support.daemon import invoke, run


def test_pack_a_sample_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = invoke("pack", str(SNAPS / "hello-1.0"), "-o", str(tmp_path / "a.snap"))
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"built {tmp_path / 'a.snap'} (")
    second = invoke("pack", str(SNAPS / "hello-1.0"), "-o", str(tmp_path))
    assert second.exit_code == 0, second.output
    made = tmp_path / "hello_1.0.snap"
    assert made.read_bytes() == (tmp_path / "a.snap").read_bytes()
    assert first.output.split("sha3-384 ")[1] == second.output.split("sha3-384 ")[1]
    assert read_info(made).version == "1.0"


def test_pack_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad" / "meta").mkdir(parents=True)
    (tmp_path / "bad" / "meta" / "snap.yaml").write_text("name: bad\nversion: '1'\n")
    out = run("pack", str(tmp_path / "bad"), "-o", str(tmp_path))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: invalid ") and "field summary: missing" in out.stderr
    assert list(tmp_path.glob("*.snap")) == []
    usage = run("pack")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
