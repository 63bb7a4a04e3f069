# SPDX-License-Identifier: GPL-3.0-or-later
"""What the snap manager keeps: SnapState in state, SnapSetup on tasks, and the helpers that read them.

This is the bottom of the snapstate package: the manager (snapmgr.py), the
verbs (snapstate.py, tasksets.py, conflict.py) and the handlers
(handlers.py, autorefresh.py, drift.py) import it, and it imports none of
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine import Change, State, Status, Task

from ..asserts import file_sha3_384
from ..errors import ManagerError, SnapNotInstalledError
from ..snap import Limits, SnapInfo, read_info
from ..snapstore import DEFAULT_CHANNEL, SnapStore
from .backend import Backend

if TYPE_CHECKING:
    from ..assertstate import AssertManager

#: SNAPS_KEY is the state key holding every snap's SnapState, by name.
SNAPS_KEY = "snaps"

#: CheckSnap is called with the new revision's info and the current one's (or None) when a
#: revision is mounted or prepared; raising refuses it.
CheckSnap = Callable[[SnapInfo, "SnapInfo | None"], None]


class ServiceRunner(Protocol):
    """ServiceRunner runs the services the snap manager records (the service manager is one)."""

    def startable(self, info: SnapInfo) -> list[str]:
        """startable lists the services of info that start-snap-services starts (lock held)."""

    def start_services(self, info: SnapInfo, apps: list[str]) -> None:
        """start starts the services of info's revision (lock not held); ManagerError when one cannot."""

    def stop_services(self, name: str, apps: list[str]) -> None:
        """stop stops the services of a snap (lock not held)."""


class RefreshHolds(Protocol):
    """RefreshHolds tells which snaps are held from refreshes (the manager's AutoRefresh does)."""

    def held_snaps(self, st: State, now: datetime) -> dict[str, datetime]:
        """held_snaps maps each held snap to the end of its hold (lock held)."""


class SnapManagerView(Protocol):
    """SnapManagerView is what the verbs and the handlers use of their manager (snapmgr.SnapManager is it).

    They take the manager as this protocol, so they import nothing of it,
    not even for a type: snapmgr.py imports them, never the other way.
    """

    @property
    def state(self) -> State:
        """state is the State the manager works on."""

    @property
    def backend(self) -> Backend:
        """backend is the only code that touches the root."""

    @property
    def snap_store(self) -> SnapStore | None:
        """snap_store is where snaps come from (None: local files only)."""

    @property
    def assert_manager(self) -> AssertManager | None:
        """assert_manager checks and keeps the assertions (None: only dangerous installs)."""

    @property
    def service_runner(self) -> ServiceRunner | None:
        """service_runner runs the snaps' services (None: they are only recorded)."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """clock is the time the manager decides by."""

    @property
    def check_snap_fns(self) -> list[CheckSnap]:
        """check_snap_fns run when a revision is mounted or prepared."""

    @property
    def affected_by_kind(self) -> dict[str, Callable[[Task], list[str]]]:
        """affected_by_kind maps another manager's task kind to the snaps its tasks touch."""

    @property
    def auto_refresh(self) -> RefreshHolds:
        """auto_refresh holds snaps from refreshes."""

    @property
    def request_key(self) -> str | None:
        """request_key is the idempotency key of the verb being served (None: none); new_change gives it."""

    @property
    def into_change(self) -> Change | None:
        """into_change is the change of a queued request whose turn came (None: a verb makes its own)."""

    def retained(self) -> int:
        """retained is how many revisions of a snap are kept."""

    def can_auto_refresh(self) -> bool:
        """can_auto_refresh says whether every check allows an auto-refresh now (lock held)."""


@dataclass
class SnapSetup:
    """SnapSetup is what the tasks of one snap in a change share (task data "snap-setup").

    It lives on the first task of the snap's task set; the others name that
    task in "snap-setup-task".
    """

    name: str
    revision: str = ""
    snap_id: str = ""
    publisher_id: str = ""
    sha3_384: str = ""
    size: int = 0
    #: Where the snap comes from: "store", "file" (a local file at path) or "local"
    #: (a revision already in the sequence).
    source: str = "store"
    #: The local file to install (source "file").
    path: str = ""
    dangerous: bool = False
    revert: bool = False
    #: Delete path at cleanup (a file the daemon received for us).
    remove_path: bool = False
    #: The new revision's SnapInfo (to_dict) once known.
    info: dict[str, Any] | None = None
    #: The channel the snap tracks once linked (full name, "latest/stable"); "" keeps what it tracked.
    channel: str = ""

    @property
    def snap_info(self) -> SnapInfo:
        """snap_info is the new revision's SnapInfo (it must be known)."""
        if self.info is None:
            raise ManagerError(f"internal error: the info of snap {self.name!r} is not known yet")
        return SnapInfo.from_dict(self.info, f"the setup of snap {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """to_dict is the JSON form stored on the task."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapSetup:
        """from_dict reads the JSON form."""
        return cls(**{k.replace("-", "_"): v for k, v in data.items()})


@dataclass
class SnapState:
    """SnapState is what the system knows of one installed snap (under the state key "snaps")."""

    name: str
    #: The installed revisions, oldest first.
    sequence: list[SnapInfo] = field(default_factory=list)
    #: The revision in use (or last used, when disabled).
    current: str = ""
    #: Whether the current revision is linked and usable (False while disabled or refreshing).
    active: bool = False
    #: The channel the snap follows (full name, "latest/stable"); "" for a snap from a local file.
    channel: str = ""

    @property
    def tracking(self) -> str:
        """tracking is the channel the snap follows: its own, or latest/stable for a store snap that has none."""
        return self.channel or (DEFAULT_CHANNEL if self.info.snap_id else "")

    @property
    def info(self) -> SnapInfo:
        """info is the current revision's SnapInfo."""
        return self.revision_info(self.current)

    @property
    def revisions(self) -> list[str]:
        """revisions are the installed revisions, oldest first."""
        return [i.revision for i in self.sequence]

    def index(self, revision: str) -> int:
        """index is where revision is in the sequence, or -1."""
        for i, info in enumerate(self.sequence):
            if info.revision == revision:
                return i
        return -1

    def revision_info(self, revision: str) -> SnapInfo:
        """revision_info is the SnapInfo of an installed revision."""
        i = self.index(revision)
        if i < 0:
            raise SnapNotInstalledError(f"snap {self.name!r} has no revision {revision}")
        return self.sequence[i]

    def previous(self) -> SnapInfo | None:
        """previous is the revision before the current one in the sequence, if any."""
        i = self.index(self.current)
        return self.sequence[i - 1] if i > 0 else None

    def local_revision(self) -> int:
        """local_revision is the highest N of the local revisions xN (0 when there is none)."""
        return max((int(r[1:]) for r in self.revisions if r.startswith("x")), default=0)

    def to_dict(self) -> dict[str, Any]:
        """to_dict is the JSON form kept in state."""
        out: dict[str, Any] = {"sequence": [i.to_dict() for i in self.sequence], "current": self.current,
                               "active": self.active}
        if self.channel:
            out["channel"] = self.channel
        return out

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> SnapState:
        """from_dict reads the JSON form."""
        where = f"the state of snap {name!r}"
        return cls(name, [SnapInfo.from_dict(i, where) for i in data.get("sequence", [])],
                   str(data.get("current", "")), bool(data.get("active", False)), str(data.get("channel", "")))


# -- the one helper that reads and writes per-snap state -------------------------------


def get_snap_state(st: State, name: str) -> SnapState | None:
    """get_snap_state returns the SnapState of an installed snap, or None (lock held)."""
    data = st.get(SNAPS_KEY, {}).get(name)
    return SnapState.from_dict(name, data) if data is not None else None


def set_snap_state(st: State, name: str, snapst: SnapState | None) -> None:
    """set_snap_state stores (or, with None, forgets) a snap's SnapState (lock held)."""
    snaps = dict(st.get(SNAPS_KEY, {}))
    if snapst is None:
        snaps.pop(name, None)
    else:
        snaps[name] = snapst.to_dict()
    st.set(SNAPS_KEY, snaps or None)


def all_snap_states(st: State) -> dict[str, SnapState]:
    """all_snap_states returns every installed snap's SnapState, by name (lock held)."""
    return {name: SnapState.from_dict(name, data) for name, data in sorted(st.get(SNAPS_KEY, {}).items())}


def setup_task(task: Task) -> Task:
    """setup_task returns the task holding the snap setup of task's snap (lock held)."""
    if task.has("snap-setup"):
        return task
    tid = task.get("snap-setup-task", None)
    owner = task.state.task(tid) if tid is not None else None
    if owner is None:
        raise ManagerError(f"internal error: task {task.id} ({task.kind}) has no snap setup")
    return owner


def task_snap_setup(task: Task) -> SnapSetup:
    """task_snap_setup returns the SnapSetup a task works with (lock held)."""
    return SnapSetup.from_dict(setup_task(task).get("snap-setup"))


def set_task_snap_setup(task: Task, setup: SnapSetup) -> None:
    """set_task_snap_setup updates the SnapSetup shared by task's snap (lock held)."""
    setup_task(task).set("snap-setup", setup.to_dict())


def current_setup(snapst: SnapState) -> SnapSetup:
    """current_setup is the setup of a change that works on the current revision as it is."""
    info = snapst.info
    return SnapSetup(snapst.name, revision=snapst.current, snap_id=info.snap_id, publisher_id=info.publisher_id,
                     source="local", info=info.to_dict())


@dataclass(frozen=True)
class CheckedFile:
    """CheckedFile is a local snap file read and checked whole: its snap.yaml, its digest and size."""

    path: Path
    info: SnapInfo
    sha3_384: str
    size: int


def check_snap_file(path: Path, limits: Limits) -> CheckedFile:
    """check_snap_file reads and checks a local snap file (every archive check, snap.yaml, the digest).

    It needs no lock and takes none: callers run it before taking the state
    lock, which they then hold only to record the change.
    """
    info = read_info(path, limits)
    digest, size = file_sha3_384(path)
    return CheckedFile(path, info, digest, size)


def mark_done(task: Task) -> None:
    """mark_done marks a running task Done (Undone when undoing), in the block that wrote its result (lock held).

    A handler that finishes its work under the lock says so there, so that
    its result and its status are committed together.
    """
    task.set_status(Status.DONE if task.status is Status.DOING else Status.UNDONE
                    if task.status is Status.UNDOING else task.status)
