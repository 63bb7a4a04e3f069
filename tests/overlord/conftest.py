# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the command-line tests: run `overlord` in this process, or as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from overlord.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str, input: str | None = None) -> Result:
    """invoke runs the overlord command in this process (stdout in result.output)."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def run(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """run runs the overlord command as a process, to see its exit status and stderr as a user does."""
    return subprocess.run([sys.executable, "-c", "from overlord.cli import main; main()", *args], input=input,
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=120)
