# SPDX-License-Identifier: GPL-3.0-or-later
"""Drift repair and clean-up: the part of the SnapManager's ensure that keeps the root as the state says.

Each ensure pass (at most every QUICK_CHECK_INTERVAL) stats, for every active snap that no unready change is
working on, its current link, its revision directory, its wrappers (their
size) and its services, and asks the other managers' drift checks (the
interface manager: the security profile exists). At start-up and every
FULL_CHECK_INTERVAL the check is full: the wrappers' and profiles' content
too. What drifted is put back by one "repair" change (a lane per snap: a
repair-snap task, then what the other managers add, setup-profiles) and
named in a warning. A revision whose directory and snap file are both gone
is reported, not repaired: nothing is guessed.

On the same full-check cadence, partial downloads and snap files no
installed revision uses, older than CLEANUP_AGE and not used by an unready
change, are removed by a "clean-up" change (one remove-files task).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import State, Task, TaskSet, Tomb

from ..errors import ManagerError
from .conflict import busy_snaps
from .model import (
    SNAPS_KEY,
    SnapManagerView,
    SnapState,
    all_snap_states,
    current_setup,
    get_snap_state,
    mark_done,
    task_snap_setup,
)
from .snapstate import new_change

log = logging.getLogger("managers.snapstate")

#: FULL_CHECK_INTERVAL: how often the full check (file contents) runs, besides the first pass after start-up.
FULL_CHECK_INTERVAL = timedelta(hours=1)
#: QUICK_CHECK_INTERVAL: the stat checks run at most this often (the loop passes many times a second while
#: changes run; it passes at least every 5 minutes when idle).
QUICK_CHECK_INTERVAL = timedelta(seconds=30)
#: CLEANUP_AGE: a partial download or an unused snap file is removed once it is this old (by its mtime).
CLEANUP_AGE = timedelta(days=1)
REPAIR_KIND = "repair"
CLEANUP_KIND = "clean-up"

#: DriftCheck(snapst, full) lists what drifted for a snap (another manager's part: its profile).
DriftCheck = Callable[[SnapState, bool], list[str]]
#: RepairTasks(snapst) makes the tasks that put back another manager's part of a snap (setup-profiles).
RepairTasks = Callable[[SnapState], list[Task]]


class DriftWatch:
    """DriftWatch notices and repairs drift, and cleans up old downloads, from the SnapManager's ensure."""

    def __init__(self, sm: SnapManagerView) -> None:
        self.sm = sm
        self.checks: list[tuple[DriftCheck, RepairTasks]] = []
        self._last_full: datetime | None = None
        self._last_quick: datetime | None = None
        #: full_checks counts full checks (tests and the benchmark read it); passes counts passes (a check may
        #: cache what it computes for one pass by it).
        self.full_checks = 0
        self.passes = 0
        self._plans: dict[tuple[str, str], list[tuple[str, str, object]]] = {}
        self._states: dict[tuple[str, str], SnapState] = {}
        self._reported: set[str] = set()

    def check_soon(self) -> None:
        """check_soon makes the next ensure pass run the full check (ask for that pass with ensure_before(0))."""
        self._last_full = None

    def add_check(self, check: DriftCheck, repair: RepairTasks) -> None:
        """add_check adds another manager's drift check and the tasks that repair what it finds."""
        self.checks.append((check, repair))

    # -- finding drift ---------------------------------------------------------------------------

    def problems(self, snapst: SnapState, *, full: bool) -> list[str]:
        """problems lists how an active snap's files differ from its state (none when they do not)."""
        out = self.sm.backend.drift(snapst.info, full=full)
        for check, _ in self.checks:
            out += check(snapst, full)
        return out

    def _plan(self, snapst: SnapState) -> list[tuple[str, str, object]]:
        """_plan is what the quick check of a snap's current revision stats: (kind, path, expected), cached by
        name and revision (a revision's snap.yaml never changes)."""
        key = (snapst.name, snapst.current)
        plan = self._plans.get(key)
        if plan is None:
            b, info = self.sm.backend, snapst.info
            plan = [("dir", str(b.revision_dir(info.name, info.revision)), None),
                    ("link", str(b.current_link(info.name)), info.revision)]
            for app in sorted(info.apps):
                plan.append(("wrapper", str(b.wrapper_path(info.name, app)), len(b.wrapper_text(info, app).encode())))
                if info.apps[app].daemon:
                    plan.append(("service", str(b.service_file(info.name, app)), None))
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _quick(self, snapst: SnapState) -> bool:
        """_quick says whether the stat calls of the plan find the snap's files as they should be."""
        for kind, path, expected in self._plan(snapst):
            try:
                if kind == "link":
                    if os.readlink(path) != expected:
                        return False
                elif kind == "wrapper":
                    if os.stat(path).st_size != expected:
                        return False
                elif kind == "dir":
                    if not stat.S_ISDIR(os.stat(path).st_mode):
                        return False
                elif not stat.S_ISREG(os.stat(path).st_mode):
                    return False
            except OSError:
                return False
        return True

    def _busy(self, st: State, names: Iterable[str]) -> set[str]:
        """_busy are those of names an unready change works on (their files are being changed)."""
        return set(busy_snaps(self.sm, names))

    def _unready(self, st: State, key: str) -> bool:
        cid = st.get(key, None)
        chg = st.change(cid) if cid is not None else None
        return chg is not None and not chg.is_ready()

    def ensure(self) -> None:
        """ensure checks for drift (stats; fully at start-up and each interval) and starts repair and clean-up."""
        st = self.sm.state
        now = self.sm.clock()
        full = self._last_full is None or now - self._last_full >= FULL_CHECK_INTERVAL
        if not full and self._last_quick is not None and now - self._last_quick < QUICK_CHECK_INTERVAL:
            return
        self._last_quick = now
        self.passes += 1
        with st:
            if self._unready(st, "repair-change"):
                return
            found: dict[str, list[str]] = {}
            raw = st.get(SNAPS_KEY, {})
            states: dict[str, SnapState] = {}
            for name, entry in raw.items():
                if not entry.get("active"):
                    continue
                key = (name, str(entry.get("current", "")))
                snapst = self._states.get(key)
                if snapst is None or full:
                    snapst = SnapState.from_dict(name, entry)
                    self._states[key] = snapst
                fine = not full and self._quick(snapst) and all(not c(snapst, False) for c, _ in self.checks)
                if not fine:
                    problems = self.problems(snapst, full=full)
                    if problems:
                        found[name] = problems
                        states[name] = snapst
            if full:
                self._last_full = now
                self.full_checks += 1
                self._states = {k: v for k, v in self._states.items() if k[0] in raw}
                st.ensure_before(FULL_CHECK_INTERVAL.total_seconds())
                self._clean_up(st, all_snap_states(st), now)
            if not found:
                return
            busy = self._busy(st, found)
            found = {n: p for n, p in found.items() if n not in busy}
            if found:
                self._repair(st, found, {n: states[n] for n in found})

    def _repair(self, st: State, found: dict[str, list[str]], states: dict[str, SnapState]) -> None:
        sets, names = [], []
        for name, problems in sorted(found.items()):
            snapst = states[name]
            b = self.sm.backend
            info = snapst.info
            if not b.revision_dir(name, info.revision).is_dir() and not b.blob(name, info.revision).is_file():
                message = (f"cannot repair snap {name!r}: {'; '.join(problems)}; revision {info.revision}'s "
                           f"directory and its snap file {b.under_root(b.blob(name, info.revision))} are both gone "
                           "(reinstall it, or revert to another revision)")
                if message not in self._reported:  # once per process: the check runs every 30 s
                    self._reported.add(message)
                    log.error("%s", message)
                    st.add_warning(message)
                continue
            t = st.new_task("repair-snap", f'Repair snap "{name}" ({info.revision}): ' + "; ".join(problems))
            t.set("snap-setup", current_setup(snapst).to_dict())
            t.set("problems", problems)
            tasks = [t]
            for _, repair in self.checks:
                for extra in repair(snapst):
                    extra.wait_for(tasks[-1])
                    tasks.append(extra)
            sets.append(TaskSet(*tasks))
            names.append(name)
        if not sets:
            return
        chg = new_change(self.sm, REPAIR_KIND, "Repair snaps that drifted from the state: " + ", ".join(names),
                         names, sets)
        st.set("repair-change", chg.id)
        for name in names:
            message = f"snap {name!r} drifted from its state: {'; '.join(found[name])} (change {chg.id} repairs it)"
            log.warning("%s", message)
            st.add_warning(message)

    def do_repair_snap(self, task: Task, tomb: Tomb) -> None:
        """do_repair_snap puts back the current revision's directory (from its snap file), link, wrappers, services."""
        with task.state:
            setup = task_snap_setup(task)
            snapst = get_snap_state(task.state, setup.name)
        if snapst is None or not snapst.active or snapst.current != setup.revision:
            with task.state:
                task.logf("Nothing to repair: the snap changed since")
            return
        done = self.sm.backend.repair(snapst.info)
        with task.state:
            for line in done or ["Nothing to repair any more"]:
                task.logf("%s", line)

    # -- clean-up ---------------------------------------------------------------------------------

    def _old_files(self, st: State, states: dict[str, SnapState], now: datetime) -> list[str]:
        """_old_files are partial downloads and snap files no installed revision uses, older than CLEANUP_AGE,
        that no unready change names."""
        b = self.sm.backend
        blobs = b.blob("x", "1").parent
        keep = {b.blob(n, i.revision).name for n, s in states.items() for i in s.sequence}
        out = []
        candidates = []
        try:
            candidates = [blobs / e for e in os.listdir(blobs) if e.endswith(".snap") and e not in keep]
            candidates += [blobs / "partial" / e for e in os.listdir(blobs / "partial")]
        except FileNotFoundError:
            pass
        for path in candidates:
            try:
                age = now - datetime.fromtimestamp(path.lstat().st_mtime, UTC)
            except FileNotFoundError:
                continue
            if age >= CLEANUP_AGE:
                out.append(str(path.relative_to(b.root)))
        if out:
            busy = self._busy(st, {Path(p).name.split("_")[0] for p in out})
            out = [p for p in out if Path(p).name.split("_")[0] not in busy]
        return sorted(out)

    def _clean_up(self, st: State, states: dict[str, SnapState], now: datetime) -> None:
        if self._unready(st, "clean-up-change"):
            return
        old = self._old_files(st, states, now)
        if not old:
            return
        chg = st.new_change(CLEANUP_KIND, f"Remove {len(old)} old downloads and unused snap files")
        t = st.new_task("remove-files", "Remove " + ", ".join(old))
        t.set("files", old)
        chg.add_task(t)
        st.set("clean-up-change", chg.id)
        st.ensure_before(0)
        log.info("clean-up: change %s removes %s", chg.id, ", ".join(old))

    def do_remove_files(self, task: Task, tomb: Tomb) -> None:
        """do_remove_files removes the files it lists that are still unused and old (checked again, lock held)."""
        st = task.state
        with st:
            files = list(task.get("files"))
            states = all_snap_states(st)
            still = set(self._old_files(st, states, self.sm.clock()))
            removed = []
            for rel in files:
                if rel in still:
                    path = self.sm.backend.root / rel
                    try:
                        if self.sm.backend.remove_file(path):
                            removed.append(rel)
                    except OSError as e:
                        raise ManagerError(f"cannot remove {path}: {e.strerror}") from None
            task.logf("Removed %s", ", ".join(removed) if removed else "nothing (in use again, or gone)")
            mark_done(task)
