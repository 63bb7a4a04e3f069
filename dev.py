#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Set up the project's virtual environment and run it: the README's two commands.

    python3 dev.py demo     install, then run the demo (overlord demo)
    python3 dev.py test     install, then run ruff, mypy and the test suite (2 workers; TEST_WORKERS=N)
    python3 dev.py bench    install, then run the benchmarks
    python3 dev.py docs     install, then write the API reference to var/docs/

Only Python 3.11+ with pip and venv is needed; everything else is installed
into .venv/ beside this file. Extra arguments go to the command run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before anything is installed
        sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        stamp.write_text(digest)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("demo", "test", "bench", "docs"):
        sys.exit(__doc__)
    what, rest = argv[0], argv[1:]
    ensure_venv()
    try:
        if what == "demo":
            run(BIN / "overlord", "demo", *rest)
        elif what == "test":
            run(BIN / "ruff", "check", ".")
            run(BIN / "mypy")
            # Two workers (pytest-xdist): the suite spends most of its time waiting on real processes.
            # worksteal: a worker that runs out of tests takes half of the other's queue, so both end
            # together; the modules of the heavy tests are collected first (tests/conftest.py).
            run(BIN / "python", "-m", "pytest", "-q", "-n", os.environ.get("TEST_WORKERS", "2"), "--dist", "worksteal",
                *rest)
        elif what == "docs":
            run(BIN / "python", "-m", "pdoc", "-o", "var/docs", "engine", "managers", *rest)
            print(f"the API reference is in {ROOT / 'var' / 'docs' / 'index.html'}")
        else:
            run(BIN / "python", "-m", "bench", *rest)
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
