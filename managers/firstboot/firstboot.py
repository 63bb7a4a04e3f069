# SPDX-License-Identifier: GPL-3.0-or-later
"""FirstBoot: seeding a new system from a seed directory, in one change.

``seed(seed_dir)`` checks the whole seed against the system first (the
files, every assertion's chain to the trusted root, each snap's
snap-revision and snap-declaration, the plugs and slots, the content each
snap needs from another) and refuses a broken seed with one InvalidSeedError,
having changed nothing. Then it adds the seed's assertions and makes one
"seed" change: each snap's install in a lane of its own, one after the
other, content providers before the snaps that use them, and last a
mark-seeded task that sets ``seeded`` in state in the transaction that
makes the change Done. A failed seed change leaves the system unseeded;
seeding again installs what is missing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from engine import Change, ChangeConflictError, State, Status, Task, TaskRunner, TaskSet, Tomb

from ..asserts import Assertion
from ..errors import AlreadySeededError, AssertionVerifyError, InterfaceError, ManagerError, TooEarlyError
from ..ifacestate import content_tag
from ..snapstate import CheckedFile, check_conflicts, get_snap_state, install_path_task_set, new_change
from .seed import Seed, SeedSnap, read_seed

if TYPE_CHECKING:
    from ..assertstate import AssertManager
    from ..ifacestate import InterfaceManager
    from ..snapstate import SnapManager

log = logging.getLogger("managers.firstboot")

#: SEEDED_KEY is the state key set to true once the seed change is Done (snapd's "seeded").
SEEDED_KEY = "seeded"
#: SEED_KIND is the kind of the seeding change.
SEED_KIND = "seed"
#: SEED_RETRY_DELAY is how long after a failed attempt the ensure tries to seed again.
SEED_RETRY_DELAY = timedelta(minutes=5)
#: SEED_ATTEMPT_KEY is the state key holding the time of the last attempt to seed from the ensure.
SEED_ATTEMPT_KEY = "seed-attempt"


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class FirstBoot:
    """FirstBoot seeds a new system: every snap of a seed installed, connected, in one change."""

    def __init__(self, state: State, runner: TaskRunner, *, snap_manager: SnapManager,
                 interface_manager: InterfaceManager, assert_manager: AssertManager,
                 seed_dir: str | Path | None = None) -> None:
        self.state = state
        self.snap_manager = snap_manager
        self.interface_manager = interface_manager
        self.assert_manager = assert_manager
        #: seed_dir is the seed the ensure seeds the system from at first start (None: seeding is asked for).
        self.seed_dir = Path(seed_dir) if seed_dir is not None else None
        runner.add_handler("mark-seeded", self.do_mark_seeded)
        if self.seed_dir is not None:
            snap_manager.seeded_checks.append(self._too_early)
            snap_manager.can_auto_refresh_checks.append(lambda: self.seeded)

    # -- the manager protocol ----------------------------------------------------------

    def _too_early(self, verb: str) -> None:
        if not self.seeded:
            raise TooEarlyError(f"cannot {verb}: too early for operation, device not yet seeded (seeding from "
                                f"{self.seed_dir} is under way or will be tried again)")

    def ensure(self) -> None:
        """ensure seeds the system from seed_dir when it is not seeded, like snapd's ensureSeeded.

        Nothing without a seed_dir, on a seeded system, or while a seed change
        is unready. A seed that cannot be used, or a seed change that failed, is
        left as a warning and tried again SEED_RETRY_DELAY after the attempt.
        The seed is read and checked without the state lock.
        """
        seed_dir = self.seed_dir
        if seed_dir is None:
            return
        st = self.state
        with st:
            if self.seeded:
                return
            last = self.seed_change()
            if last is not None and not last.is_ready():
                return
            now = self.snap_manager.clock()
            if last is not None and last.status is not Status.DONE:
                self._warn(st, seed_dir, f"change {last.id} failed: {last.err() or last.status.value}")
            attempt = _time(st.get(SEED_ATTEMPT_KEY, None))
            if attempt is not None and attempt + SEED_RETRY_DELAY > now:
                st.ensure_before((attempt + SEED_RETRY_DELAY - now).total_seconds())
                return
            st.set(SEED_ATTEMPT_KEY, f"{now:%Y-%m-%dT%H:%M:%S.%fZ}")
        try:
            seed = read_seed(seed_dir, self.snap_manager.backend.limits)
        except ManagerError as e:
            with st:
                self._warn(st, seed_dir, str(e))
                st.ensure_before(SEED_RETRY_DELAY.total_seconds())
            return
        with st:
            latest = self.seed_change()
            if self.seeded or (latest is not None and not latest.is_ready()):
                return
            try:
                chg = self._seed(seed)
            except ManagerError as e:
                self._warn(st, seed_dir, str(e))
                st.ensure_before(SEED_RETRY_DELAY.total_seconds())
                return
            log.info("seeding the system at first start from %s: change %s", seed_dir, chg.id)

    def _warn(self, st: State, seed_dir: Path, problem: str) -> None:
        text = " ".join(problem.split())
        prefix = f"cannot seed the system from {seed_dir}: "
        message = (text if text.startswith(prefix) else prefix + text) + \
            f" (trying again every {int(SEED_RETRY_DELAY.total_seconds() // 60)} minutes)"
        log.warning("%s", message)
        st.add_warning(message)

    # -- queries (lock held) ---------------------------------------------------------------

    @property
    def seeded(self) -> bool:
        """seeded says whether the system was seeded (lock held)."""
        return bool(self.state.get(SEEDED_KEY, False))

    def seed_change(self) -> Change | None:
        """seed_change is the latest seed change, or None (lock held)."""
        found = [c for c in self.state.changes() if c.kind == SEED_KIND]
        return found[-1] if found else None

    # -- the verb ------------------------------------------------------------------------------

    def read(self, seed_dir: str | Path) -> Seed:
        """read reads and checks a seed directory on its own (no lock: call it before taking the lock).

        Every snap file is checked whole and its digest computed, every
        assertion parsed; seed() given the result then only checks it
        against the system and records the change.
        """
        return read_seed(seed_dir, self.snap_manager.backend.limits)

    def seed(self, seed_dir: str | Path | Seed) -> Change:
        """seed checks the seed at seed_dir and makes the "seed" change installing it (lock held).

        seed_dir may be a Seed that read() returned, read before the lock was
        taken (the slow part: every snap file); a path is read here.
        A seeded system raises AlreadySeededError (nothing is done); an
        unready seed change ChangeConflictError; a broken seed
        InvalidSeedError, with nothing changed.
        """
        last = self.seed_change()
        if self.seeded:
            by = f" (by change {last.id})" if last is not None and last.status is Status.DONE else ""
            raise AlreadySeededError(f"cannot seed the system: it is seeded already{by}; nothing to do")
        if last is not None and not last.is_ready():
            raise ChangeConflictError(last.id, f"cannot seed the system: change {last.id} is seeding it already",
                                      change_kind=last.kind, subject="seed")
        seed = seed_dir if isinstance(seed_dir, Seed) else self.read(seed_dir)
        return self._seed(seed)

    def _seed(self, seed: Seed) -> Change:
        """_seed checks a seed read already against the system and makes the seed change (lock held)."""
        st = self.state
        todo = self._check(seed)
        check_conflicts(self.snap_manager, [s.name for s in todo])  # before anything is written
        self.assert_manager.add_many(seed.assertions, keep_newer=True)
        names: list[str] = []
        sets: list[TaskSet] = []
        for s in todo:
            checked = CheckedFile(s.path, s.info, s.sha3_384, s.size)  # read_seed checked it whole
            _, ts = install_path_task_set(self.snap_manager, s.path, checked=checked)
            if sets:
                ts.tasks()[0].wait_for(sets[-1].tasks()[-1])
            names.append(s.name)
            sets.append(ts)
        chg = new_change(self.snap_manager, SEED_KIND, "Initialize system state", names, sets)
        mark = st.new_task("mark-seeded", "Mark system seeded")
        for ts in sets:
            mark.wait_for(ts.tasks()[-1])
        chg.add_task(mark)
        chg.set("seed-dir", str(seed.dir))
        log.info("seeding from %s: change %s installs %s", seed.dir, chg.id, ", ".join(names) or "nothing")
        return chg

    def do_mark_seeded(self, task: Task, tomb: Tomb) -> None:
        """do_mark_seeded sets seeded in the transaction that finishes the change."""
        st = task.state
        with st:
            st.set(SEEDED_KEY, True)
            task.set_status(Status.DONE)

    # -- checking the seed against the system ---------------------------------------------------

    def _check(self, seed: Seed) -> list[SeedSnap]:
        """_check verifies the seed whole and returns the snaps to install, providers first."""
        am = self.assert_manager
        if am.trusted is None:
            raise seed.error("no trusted root key is configured to check its assertions")
        try:
            good = am.verify_many(seed.assertions, keep_newer=True)
        except AssertionVerifyError as e:
            raise seed.error(str(e)) from None
        known = {(a.type_name, a.primary_key): a for a in good}

        def lookup(type: str, key: tuple[str, ...]) -> Assertion | None:
            return known.get((type, key)) or am.get(type, key)

        publishers: dict[str, str] = {}
        todo = []
        for s in seed.snaps:
            try:
                self.interface_manager.check_snap(s.info, None)
            except InterfaceError as e:
                raise seed.error(str(e)) from None
            rev = lookup("snap-revision", (s.sha3_384,))
            where = f"snap {s.name!r} ({s.path.name})"
            if rev is None:
                raise seed.error(f"{where}: no snap-revision assertion for its sha3-384 {s.sha3_384}")
            if int(rev.header("snap-size")) != s.size:
                raise seed.error(f"{where}: its snap-revision says {rev.header('snap-size')} bytes, the file has "
                                 f"{s.size}")
            decl = lookup("snap-declaration", ("16", rev.header("snap-id")))
            if decl is None:
                raise seed.error(f"{where}: no snap-declaration for its snap id {rev.header('snap-id')}")
            if decl.header("snap-name") != s.name:
                raise seed.error(f"{where}: snap-declaration {rev.header('snap-id')} is for the snap named "
                                 f"{decl.header('snap-name')!r}")
            publishers[s.name] = decl.header("publisher-id")
            snapst = get_snap_state(self.state, s.name)
            if snapst is None:
                todo.append(s)
            elif snapst.current != rev.header("snap-revision"):
                raise seed.error(f"{where}: revision {snapst.current} of it is installed already, the seed has "
                                 f"revision {rev.header('snap-revision')}")
        return _order(seed, todo, publishers, self._installed_content())

    def _installed_content(self) -> dict[str, set[str]]:
        """_installed_content maps the installed snaps to the content tags their slots offer."""
        return {s.name: {content_tag(p) for p in s.info.slots.values() if p.interface == "content"}
                for s in self.snap_manager.snaps()}


def _order(seed: Seed, todo: list[SeedSnap], publishers: dict[str, str],
           installed: dict[str, set[str]]) -> list[SeedSnap]:
    """_order checks that each snap's content providers are there and puts them first (seed.yaml's order
    otherwise)."""
    offers = {s.name: {content_tag(p) for p in s.info.slots.values() if p.interface == "content"}
              for s in seed.snaps}
    needs: dict[str, set[str]] = {s.name: set() for s in todo}
    for s in seed.snaps:
        for plug in sorted(s.info.plugs.values(), key=lambda p: p.name):
            if plug.interface != "content":
                continue
            tag = content_tag(plug)
            provider = plug.attrs.get("default-provider")
            if provider is not None:
                where = f"snap {s.name!r} plug {plug.name!r} needs content {tag!r} from snap {provider!r}"
                if provider not in offers and provider not in installed:
                    raise seed.error(f"{where}, which is neither in the seed nor installed")
                if tag not in offers.get(provider, installed.get(provider, set())):
                    raise seed.error(f"{where}, which has no content slot offering it")
                if s.name in needs and provider in needs:
                    needs[s.name].add(provider)
            elif s.name in needs:  # the providers it will auto-connect to (one publisher) come first too
                needs[s.name].update(p for p, tags in offers.items()
                                     if p != s.name and p in needs and tag in tags
                                     and publishers.get(p) == publishers.get(s.name))
    out: list[SeedSnap] = []
    placed: set[str] = set()
    left = list(todo)
    while left:
        ready = [s for s in left if needs[s.name] <= placed]
        if not ready:
            names = ", ".join(repr(s.name) for s in left)
            raise seed.error(f"snaps {names} need content from each other: no order installs each after its "
                             "providers")
        out.append(ready[0])
        placed.add(ready[0].name)
        left.remove(ready[0])
    return out
