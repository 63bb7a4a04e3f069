# SPDX-License-Identifier: GPL-3.0-or-later
"""bench measures the engine's speed and scale beside a raw-SQLite baseline.

Run ``python -m bench`` from the checkout (or ``python3 dev.py bench``): it
runs every benchmark (baseline, w1, w2, w3, ensure, snaps), each figure the median of
several runs in fresh subprocesses, and prints one table with the targets of
issue 5 beside the figures. ``python -m bench --help`` lists the options.

Modules: ``common`` (paths, sizes, the child-process protocol), ``build``
(history databases, cached under var/bench-cache/), ``workloads`` (what a
child process measures), ``suite`` (runs the children and derives the
figures), ``report`` (the table and JSON), ``profile`` (py-spy hot spots).
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """main runs the benchmarks named in argv (all by default) and prints the table."""
    from .cli import main as _main

    return _main(argv)
