# SPDX-License-Identifier: GPL-3.0-or-later
"""A hook left running by a SIGKILLed daemon: the next daemon kills it before it runs the hook again, not beside it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from managers.snap import pack
from tests.managers.test_services import alive, wait_for
from tests.support.daemon import DaemonProcess

#: HOOK notes, as it starts, every earlier copy that still runs (not a zombie) in "overlap", then its own pid in
#: "started"; it waits for the file "gate" and then notes its pid in "finished". The configure hook blocks only
#: when the option "mode" is "block" (the install runs it too); its `ctl get` goes to the daemon's socket.
HOOK = """#!/bin/sh
c="$SNAP_COMMON"
if [ "$(basename "$0")" = configure ] && [ "$(overlord ctl get mode)" != block ]; then exit 0; fi
for p in $(cat "$c/started" 2>/dev/null); do
    s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -d' ' -f1)
    if [ -n "$s" ] && [ "$s" != Z ]; then echo "$p" >> "$c/overlap"; fi
done
echo $$ >> "$c/started"
while [ ! -e "$c/gate" ]; do sleep 0.02; done
echo $$ >> "$c/finished"
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(params=["install", "configure"])
def blocking(daemon: DaemonProcess, request: pytest.FixtureRequest) -> Iterator[tuple[DaemonProcess, Path, str]]:
    """blocking is a daemon and a snap whose install, or configure, hook is HOOK (the other does nothing)."""
    src = daemon.base / "src-blocker"
    (src / "meta" / "hooks").mkdir(parents=True)
    (src / "meta" / "snap.yaml").write_text("name: blocker\nversion: '1.0'\nsummary: Blocks in its hooks\n")
    for hook in ("install", "configure"):
        (src / "meta" / "hooks" / hook).write_text(HOOK if hook == request.param else "#!/bin/sh\n")
        (src / "meta" / "hooks" / hook).chmod(0o755)
    yield daemon, pack(src, daemon.base), request.param
    common = daemon.root / "var/snap/blocker/common"
    for pid in lines(common / "started"):
        if alive(int(pid)):
            os.killpg(int(pid), signal.SIGKILL)


@pytest.mark.heavy
def test_a_hook_orphaned_by_a_killed_daemon_is_killed_before_it_runs_again(
        blocking: tuple[DaemonProcess, Path, str]) -> None:
    d, snap, hook = blocking
    common = d.root / "var/snap/blocker/common"
    if hook == "install":
        p = d.cli("install", str(snap), "--dangerous", "--no-wait")
    else:
        ok = d.cli("install", str(snap), "--dangerous")
        assert ok.returncode == 0, ok.stderr
        p = d.cli("set", "blocker", "mode=block", "--no-wait")
    assert p.returncode == 0, p.stderr
    change = p.stdout.strip()
    first = int(wait_for(f"the {hook} hook to start", lambda: lines(common / "started"))[0])

    d.kill()  # SIGKILL: the hook, in a process group of its own, keeps running
    assert alive(first)
    d.start()  # the run-hook task runs again: the orphan goes first
    second = int(wait_for("the hook to run again", lambda: lines(common / "started")[1:])[0])
    assert not alive(first)
    assert lines(common / "overlap") == []  # the second copy saw no first one running

    (common / "gate").touch()
    chg = d.wait_change(change, lambda c: c["ready"])
    assert chg["status"] == "Done", chg
    assert lines(common / "finished") == [str(second)]
    run_hook = [t for t in chg["tasks"] if t["kind"] == "run-hook" and hook in t["summary"]]
    assert any(f"killed hook '{hook}' of snap blocker (process group {first}), left running by a daemon that died"
               in line for t in run_hook for line in t["log"]), run_hook
    if hook == "configure":  # the option the hook saw is the one kept
        got = d.cli("get", "blocker", "mode")
        assert (got.returncode, got.stdout.strip()) == (0, "block"), got.stderr
    assert list((d.state_dir / "hooks").iterdir()) == []  # no record outlives its hook
