# SPDX-License-Identifier: GPL-3.0-or-later
"""The command line starts light: commands that talk to the daemon never load the engine or the managers."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("engine", "managers", "sqlalchemy", "alembic", "cryptography", "yaml", "uvicorn", "starlette")


@pytest.mark.parametrize("argv", [["--help"], ["changes", "--help"], ["install", "--help"], ["watch", "--help"],
                                  ["ctl", "--help"], ["get", "--help"]])
def test_daemon_commands_load_neither_the_engine_nor_the_managers(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from overlord.cli import cli\n"
        f"try:\n    cli.main({argv!r}, prog_name='overlord', standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout
