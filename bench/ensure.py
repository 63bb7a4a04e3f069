# SPDX-License-Identifier: GPL-3.0-or-later
"""The ensure benchmark: what one pass of the managers' ensure costs, empty system beside 100 installed snaps.

    python -m bench.ensure [--snaps 100] [--passes 300]

It installs N small snaps (one change), then times passes of the managers'
ensure (auto-refresh and drift stat checks of the SnapManager, FirstBoot,
InterfaceManager, AssertManager: the loop's TaskRunner left out) and of a
full drift check (file contents), on the same machine, beside the same
passes on a system with no snaps (the baseline). Figures are medians, in
microseconds per pass.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .snaps import _publish, _store


def _passes(o: Any, passes: int, *, full: bool = False, due: bool = True) -> float:
    """_passes times passes of every manager's ensure but the TaskRunner's; the median in microseconds.

    due: the drift stat check is due at each pass (else passes fall between two, QUICK_CHECK_INTERVAL apart);
    full: the full check is due.
    """
    managers = [o.assert_manager, o.snap_manager, o.interface_manager, o.first_boot]
    times = []
    for _ in range(passes):
        if due:
            o.snap_manager.drift._last_quick = None
        if full:
            o.snap_manager.drift._last_full = None
        t0 = time.perf_counter()
        for m in managers:
            m.ensure()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def measure(n: int, passes: int) -> dict[str, float]:
    """measure returns the per-pass cost (quick and full) with n snaps installed."""
    from managers import SystemOverlord

    base = Path(tempfile.mkdtemp(prefix="bench-ensure-"))
    try:
        (base / "built").mkdir()
        sample, names, pack = _store(base, max(n, 1))
        names = names[:n]
        _publish(sample, pack, base, names, "1.0")
        o = SystemOverlord(base / "state", base / "root", store=sample.snap_store,
                           trusted_key=sample.root_key.public_key)
        try:
            if names:
                with o.state:
                    o.snap_manager.install(list(names))
                o.settle(600)
            with o.state:
                if len(o.snap_manager.snaps()) != n:
                    raise SystemExit(f"bench.ensure: {n} snaps should be installed")
            o.settle(60)
            between = _passes(o, passes, due=False)
            quick = _passes(o, passes)
            full = _passes(o, max(passes // 10, 5), full=True)
            with o.state:
                changes = len(o.state.changes())
            if changes != (1 if names else 0):
                raise SystemExit(f"bench.ensure: the passes started changes ({changes}): drift where there is none")
        finally:
            o.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"between_us": between, "quick_us": quick, "full_us": full}


def main(argv: list[str]) -> int:
    """main prints the per-pass figures for an empty system and for N snaps."""
    ap = argparse.ArgumentParser(prog="python -m bench.ensure", description=__doc__.splitlines()[0])
    ap.add_argument("--snaps", type=int, default=100)
    ap.add_argument("--passes", type=int, default=300)
    args = ap.parse_args(argv)
    empty = measure(0, args.passes)
    full = measure(args.snaps, args.passes)
    print(f"{'ensure pass (managers, no TaskRunner)':40} {'empty system':>14} {f'{args.snaps} snaps':>14}")
    print(f"{'a pass between stat checks, us':40} {empty['between_us']:14.0f} {full['between_us']:14.0f}")
    print(f"{'a pass with the stat checks (30 s), us':40} {empty['quick_us']:14.0f} {full['quick_us']:14.0f}")
    print(f"{'a pass with the full check (1 h), us':40} {empty['full_us']:14.0f} {full['full_us']:14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
