# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench: run the benchmarks and print the table (see bench/__init__.py)."""

from __future__ import annotations

import sys

from bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
