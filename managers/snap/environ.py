# SPDX-License-Identifier: GPL-3.0-or-later
"""The run-time environment of a snap's programs (services, `overlord run`, hooks).

A snap's program starts with this environment and nothing else of its
caller's (snapd's snapenv, for a system service run as root):

    SNAP            <root>/snap/<name>/<revision>       the snap's files (read-only)
    SNAP_DATA       <root>/var/snap/<name>/<revision>   the revision's data (the working directory)
    SNAP_COMMON     <root>/var/snap/<name>/common       data shared by every revision
    SNAP_NAME, SNAP_INSTANCE_NAME, SNAP_REVISION, SNAP_VERSION
    SNAP_USER_DATA  <root>/root/snap/<name>/<revision>  (also HOME, as snapd gives root's services)
    SNAP_USER_COMMON <root>/root/snap/<name>/common
    PATH            $SNAP/usr/sbin:$SNAP/usr/bin:$SNAP/sbin:$SNAP/bin and the system's directories
    LANG            C.UTF-8

command_argv turns an app's command into the argument vector that is
executed (no shell): each word of the command is one argument, after
$VAR and ${VAR} of the snap's environment are replaced in it (snapd's
snap run expands them the same way); the caller's arguments follow, as
they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .info import AppInfo, SnapInfo


class Layout(Protocol):
    """Layout is where a snap's files live under the root (the snap manager's backend is one)."""

    @property
    def root(self) -> Path:
        """root is the system root."""

    def revision_dir(self, name: str, revision: str) -> Path:
        """revision_dir is a revision's files ($SNAP)."""

    def data_dir(self, name: str, revision: str) -> Path:
        """data_dir is a revision's data ($SNAP_DATA)."""

    def data_base(self, name: str) -> Path:
        """data_base is the directory of a snap's data, every revision's and the common one."""

#: SYSTEM_PATH is the system part of PATH (after the snap's own directories).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def snap_environment(info: SnapInfo, backend: Layout) -> dict[str, str]:
    """snap_environment is the whole environment of a program of info's revision (nothing inherited)."""
    name, revision = info.name, info.revision
    snap = str(backend.revision_dir(name, revision))
    user = backend.root / "root" / "snap" / name
    return {
        "SNAP": snap,
        "SNAP_DATA": str(backend.data_dir(name, revision)),
        "SNAP_COMMON": str(backend.data_base(name) / "common"),
        "SNAP_NAME": name,
        "SNAP_INSTANCE_NAME": name,
        "SNAP_REVISION": revision,
        "SNAP_VERSION": info.version,
        "SNAP_USER_DATA": str(user / revision),
        "SNAP_USER_COMMON": str(user / "common"),
        "HOME": str(user / revision),
        "PATH": ":".join(f"{snap}/{d}" for d in ("usr/sbin", "usr/bin", "sbin", "bin")) + ":" + SYSTEM_PATH,
        "LANG": "C.UTF-8",
    }


def expand(word: str, env: Mapping[str, str]) -> str:
    """expand replaces $VAR and ${VAR} in word by env's values; any other is left as written.

    A command recorded before snap.yaml's check (which allows only the
    snap's own variables) may name $1 or $HOME: it stays a literal word,
    never something the caller or the daemon's environment chooses.
    """
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), word)


def command_argv(app: AppInfo, env: Mapping[str, str], args: Sequence[str] = ()) -> list[str]:
    """command_argv is what runs for app: its program in $SNAP, its words expanded, then args as given."""
    program, *words = app.command.split()
    return [f"{env['SNAP']}/{program}", *(expand(w, env) for w in words), *args]
