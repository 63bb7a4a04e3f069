# SPDX-License-Identifier: GPL-3.0-or-later
"""One life of a system under test: python -m tests.support.snap_crash_child MODE BASE.

MODE is install, refresh, seed, auto-refresh, repair or resume. BASE holds state/, root/, and
the trusted key (BASE/../keys/root.pub.pem); the store is BASE/../store,
the seed BASE/../seed. Each file-system sync sleeps a little
(SNAP_CRASH_SLOW seconds) so a kill lands inside handlers; every task
status change is appended to BASE/journal.
The process runs the loop until every change is ready and exits 0.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from managers import SystemOverlord
from managers.snapstate.backend import fsutil


def main() -> int:
    mode, base = sys.argv[1], Path(sys.argv[2])
    slow = float(os.environ.get("SNAP_CRASH_SLOW", "0.01"))
    real_fsync_dir = fsutil.fsync_dir

    def slow_fsync_dir(path: Path) -> None:
        time.sleep(slow)
        real_fsync_dir(path)

    fsutil.fsync_dir = slow_fsync_dir  # type: ignore[assignment]
    import managers.snapstate.backend as backend

    backend.fsync_dir = slow_fsync_dir  # type: ignore[attr-defined]
    journal = open(base / "journal", "a", buffering=1)  # noqa: SIM115
    o = SystemOverlord(base / "state", base / "root", store=base.parent / "store",
                       trusted_key=base.parent / "keys" / "root.pub.pem")
    st = o.state

    def note(task: object, old: object, new: object) -> None:
        journal.write(f"{task.kind} {new}\n")  # type: ignore[attr-defined]

    with st:
        st.add_task_status_changed_handler(note)
        if mode == "install":
            o.snap_manager.install("hello")
        elif mode == "refresh":
            o.snap_manager.refresh("hello")
        elif mode == "seed":
            o.first_boot.seed(base.parent / "seed")
        elif mode == "auto-refresh":  # due now: the loop's first ensure starts it
            st.set("next-refresh", "2000-01-01T00:00:00Z")
            st.set("refresh-timer", "00:00~24:00/4")
        # repair: the test broke the root; the first drift check (a full one) starts the repair
    if mode == "auto-refresh":
        o.snap_manager.auto_refresh.ensure()  # what the loop's first pass does, before the wait below looks
    elif mode == "repair":
        o.snap_manager.drift.ensure()
    o.loop()
    deadline = time.monotonic() + 120
    unready = [None]
    while unready and time.monotonic() < deadline:
        with st:
            unready = [c for c in st.changes() if not c.is_ready()]
        if unready:
            unready[0].wait_ready(1.0)
    o.stop()
    journal.write("exit\n" if not unready else "timeout\n")
    return 0 if not unready else 1


if __name__ == "__main__":
    sys.exit(main())
