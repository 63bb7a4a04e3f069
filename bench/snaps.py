# SPDX-License-Identifier: GPL-3.0-or-later
"""The snaps benchmark: install and refresh N small snaps through the SystemOverlord.

Two ways: all N in one change (one lane per snap), and one change per snap,
each waited for before the next is made. The baseline, measured in the same
child, is the same file work done by the snap manager's backend directly
(fetch, extract, copy data, link, start services) with no state, no tasks
and no engine: what the engine and the managers add is the difference.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from .common import BenchError, peak_rss_mib


def _store(base: Path, n: int) -> Any:
    """_store builds a store with n snaps bench-0 ... (version 1.0) and returns the sample store."""
    from managers.asserts import PrivateKey
    from managers.snap import pack
    from overlord.samples import build_store

    names = tuple(f"bench-{i}" for i in range(n))
    sample = build_store(base / "store", PrivateKey.generate(), PrivateKey.generate(), versions=(), names=names)
    return sample, names, pack


def _publish(sample: Any, pack: Any, base: Path, names: tuple[str, ...], version: str) -> None:
    from managers.asserts.build import snap_id_for

    src = base / "src"
    for name in names:
        d = src / f"{name}-{version}"
        (d / "meta").mkdir(parents=True, exist_ok=True)
        (d / "bin").mkdir(exist_ok=True)
        (d / "meta" / "snap.yaml").write_text(
            f"name: {name}\nversion: '{version}'\nsummary: A benchmark snap\napps:\n  {name}:\n"
            f"    command: bin/run\n  svc:\n    command: bin/run --serve\n    daemon: simple\n")
        (d / "bin" / "run").write_text(f"#!/bin/sh\necho {name} {version}\n")
        os.chmod(d / "bin" / "run", 0o755)
        (d / "share.txt").write_text("x" * 4096)
        snap = pack(d, base / "built")
        sample.snap_store.publish(snap, key=sample.publisher_key, developer_id="acme", snap_id=snap_id_for(name))


def snaps(tmp: str, n: int, mode: str, ready_timeout: float) -> dict[str, Any]:
    """snaps installs then refreshes n snaps ("one-change" or "one-by-one") and times both, with the baseline."""
    from managers import SystemOverlord

    base = Path(tmp)
    shutil.rmtree(base, ignore_errors=True)
    (base / "built").mkdir(parents=True)
    rss_start = peak_rss_mib()
    sample, names, pack = _store(base, n)
    _publish(sample, pack, base, names, "1.0")
    raw_s = _baseline(base, sample, names)
    o = SystemOverlord(base / "state", base / "root", store=sample.snap_store, trusted_key=sample.root_key.public_key)
    try:
        o.loop()
        install_s = _timed(o, names, mode, "install", ready_timeout)
        _publish(sample, pack, base, names, "2.0")
        refresh_s = _timed(o, names, mode, "refresh", ready_timeout)
        with o.state:
            snaps = o.snap_manager.snaps()
            if len(snaps) != n or any(s.current != "2" or not s.active for s in snaps):
                raise BenchError(f"snaps: {n} snaps should be on revision 2, found "
                                 f"{[(s.name, s.current) for s in snaps][:5]}...")
    finally:
        o.stop()
    shutil.rmtree(base, ignore_errors=True)
    return {"install_s": install_s, "refresh_s": refresh_s, "raw_s": raw_s, "rss_mib": peak_rss_mib(),
            "rss_start_mib": rss_start}


def _timed(o: Any, names: tuple[str, ...], mode: str, verb: str, ready_timeout: float) -> float:
    sm = o.snap_manager
    t0 = time.perf_counter()
    groups = [list(names)] if mode == "one-change" else [[name] for name in names]
    for group in groups:
        with o.state:
            chg = getattr(sm, verb)(group)
        if not chg.wait_ready(ready_timeout):
            raise BenchError(f"snaps: the {verb} change was not ready within {ready_timeout:g} s")
        with o.state:
            if chg.status.value != "Done":
                raise BenchError(f"snaps: the {verb} change ended {chg.status}: {chg.err()}")
    return time.perf_counter() - t0


def _baseline(base: Path, sample: Any, names: tuple[str, ...]) -> float:
    """_baseline does the install's file work for every snap with the backend alone."""
    from managers.snapstate.backend import Backend

    b = Backend(base / "raw-root")
    b.setup_root()
    t0 = time.perf_counter()
    for name in names:
        ss = sample.snap_store.snap(name)
        b.fetch_blob(name, ss.revision, lambda ss=ss: sample.snap_store.open(ss), ss.sha3_384, ss.size)
        info = b.mount(name, ss.revision).with_side(revision=ss.revision)
        b.copy_data(name, None, ss.revision, had_data=False)
        b.link(info)
        b.start_services(info, [a.name for a in info.services])
    return time.perf_counter() - t0


WORKLOADS = {"snaps": snaps}

