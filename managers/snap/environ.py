# SPDX-License-Identifier: GPL-3.0-or-later
"""snap_environment: the environment a snap's programs (hooks, and services) run with.

Nothing is inherited from the daemon: the snap's variables (snapd's SNAP,
SNAP_DATA, SNAP_COMMON, SNAP_NAME, SNAP_REVISION, SNAP_VERSION), HOME in the
revision's data directory, a fixed PATH, and LANG C.UTF-8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .info import SnapInfo

if TYPE_CHECKING:
    from ..snapstate.backend import Backend

#: CLEAN_PATH is the PATH a snap's programs get.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def snap_environment(info: SnapInfo, backend: Backend) -> dict[str, str]:
    """snap_environment is the whole environment of a program of info's revision under backend's root."""
    data = str(backend.data_dir(info.name, info.revision))
    return {
        "SNAP": str(backend.revision_dir(info.name, info.revision)),
        "SNAP_DATA": data,
        "SNAP_COMMON": str(backend.data_base(info.name) / "common"),
        "SNAP_NAME": info.name,
        "SNAP_INSTANCE_NAME": info.name,
        "SNAP_REVISION": info.revision,
        "SNAP_VERSION": info.version,
        "HOME": data,
        "PATH": CLEAN_PATH,
        "LANG": "C.UTF-8",
    }
