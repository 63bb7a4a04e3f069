# SPDX-License-Identifier: GPL-3.0-or-later
"""backend: security profiles, the only files the interface manager writes.

One profile per snap, ``<root>/var/lib/profiles/<snap>``, a JSON object
(docs/managers.md shows one)::

    {"snap": "reader", "revision": "2", "network": true,
     "read": [...], "write": [...],
     "mounts": [{"source": ..., "target": ..., "mode": "ro"}],
     "connections": [{"interface": "content", "plug": "reader:books", "slot": "library:books"}]}

``read`` and ``write`` are absolute paths the snap may read and write
(write implies read), ``mounts`` the directories of other snaps bound into
it (content), ``connections`` every established connection with the snap on
either end. Paths are real paths under the system root. A profile is a
function of the state alone (the snaps' current revisions and the
connections), so writing it again gives the same bytes; it is written under
a temporary name, fsynced and renamed, and not rewritten when unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..snapstate.backend.fsutil import atomic_write, fsync_dir, remove
from .interfaces import Layout, Rules, Side
from .repo import Repository, interface

#: PROFILES_DIR is where the profiles live, under the system root.
PROFILES_DIR = Path("var") / "lib" / "profiles"


def compute(name: str, repo: Repository, layout: Layout) -> dict[str, Any]:
    """compute is the profile of snap name (its info as the repository has it): what its connections allow it."""
    snap = repo.infos[name]
    network = False
    read: set[str] = set()
    write: set[str] = set()
    mounts: dict[tuple[str, str], dict[str, str]] = {}
    conns = []
    for ref in repo.snap_connections(snap.name):
        plug, slot = repo.plug(ref.plug), repo.slot(ref.slot)
        assert plug is not None and slot is not None  # established: both ends are there
        iface = interface(plug.interface)
        pside, sside = Side(plug.snap, plug.info), Side(slot.snap, slot.info)
        rules: list[Rules] = []
        if ref.plug.snap == snap.name:
            rules.append(iface.plug_rules(pside, sside, layout))
        if ref.slot.snap == snap.name:
            rules.append(iface.slot_rules(pside, sside, layout))
        for r in rules:
            network = network or r.network
            read.update(r.read)
            write.update(r.write)
            for m in r.mounts:
                mounts[(m.target, m.source)] = m.to_dict()
        conns.append({"interface": iface.name, "plug": str(ref.plug), "slot": str(ref.slot)})
    return {"snap": snap.name, "revision": snap.revision, "network": network,
            "read": sorted(read | write), "write": sorted(write),
            "mounts": [mounts[k] for k in sorted(mounts)], "connections": conns}


def render(profile: dict[str, Any]) -> str:
    """render is the text of a profile: indented JSON, keys in a fixed order, a final newline."""
    return json.dumps(profile, indent=2, ensure_ascii=False) + "\n"


class ProfileBackend:
    """ProfileBackend writes, reads and removes the profiles under one system root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.dir = self.root / PROFILES_DIR
        self.layout = Layout(self.root)

    def path(self, snap: str) -> Path:
        """path is the profile file of snap."""
        return self.dir / snap

    def setup(self) -> None:
        """setup creates the profiles directory."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def read(self, snap: str) -> str | None:
        """read returns the text of snap's profile, or None when it has none."""
        try:
            return self.path(snap).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def exists(self, snap: str) -> bool:
        """exists says whether snap has a profile."""
        return self.path(snap).is_file()

    def write(self, snap: str, text: str) -> None:
        """write replaces snap's profile with text, atomically; an unchanged profile is left alone."""
        if self.read(snap) == text:
            return
        self.setup()
        atomic_write(self.path(snap), text.encode("utf-8"))

    def remove(self, snap: str) -> None:
        """remove deletes snap's profile if it has one."""
        if remove(self.path(snap)):
            fsync_dir(self.dir)

    def put_back(self, snap: str, text: str | None) -> None:
        """put_back makes snap's profile text again (None: no profile), as recorded before a change."""
        if text is None:
            self.remove(snap)
        else:
            self.write(snap, text)
