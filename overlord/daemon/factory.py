# SPDX-License-Identifier: GPL-3.0-or-later
"""How the daemon gets its overlord: make_overlord, and the setup hook that extends it.

make_overlord is the one place that decides which overlord the daemon runs.
Today it is the engine's own Overlord on <state-dir>/state.db; the system
overlord of `managers` (``SystemOverlord(state_dir, root, store=...)``) takes
its place here, and nothing else in the daemon changes.

A setup hook, ``--setup MODULE:FUNCTION``, is called as ``FUNCTION(overlord)``
once the overlord exists and before its loop starts: it may register task
handlers or managers, and may return more Endpoints to serve. Tests use it to
run changes through a real daemon; an embedder can use it to serve its own
resources next to the built-in ones.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import paths
from .api import Endpoint

if TYPE_CHECKING:
    from engine import Overlord

#: SetupHook is what --setup names: called with the overlord, it may return endpoints to add.
SetupHook = Callable[["Overlord"], "Sequence[Endpoint] | None"]


@dataclass(frozen=True)
class DaemonOptions:
    """DaemonOptions are what the daemon is started with."""

    #: Where the state database and the socket live.
    state_dir: Path
    #: The root of the system the managers manage (snaps live under it); not the state directory.
    root: Path
    #: Where snaps are fetched from (a directory or a file:// URL), for the snap manager.
    store: str | None = None
    #: How long running handlers get to return after their tomb is killed, at stop.
    stop_timeout: float = 10.0
    #: The setup hook, "module:function", or None.
    setup: str | None = None


def make_overlord(options: DaemonOptions) -> Overlord:
    """make_overlord opens (creating or migrating) the state database and builds the daemon's overlord.

    It raises engine.DatabaseInUseError when another process holds the database.
    """
    from engine import DatabaseError, Overlord

    db = options.state_dir / paths.DB_NAME
    try:
        options.state_dir.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            # Created private: the state of the system is for the daemon (readers go through the API).
            # SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise DatabaseError(f"cannot create state database {db}: {e.strerror}") from None
    return Overlord(root=options.state_dir, stop_timeout=options.stop_timeout)


def load_setup(spec: str) -> SetupHook:
    """load_setup imports the hook named "module:function", with an error naming what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"cannot use setup hook {spec!r}: it must be MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot use setup hook {spec!r}: cannot import {module_name}: {e}") from None
    hook = getattr(module, attr, None)
    if not callable(hook):
        raise ValueError(f"cannot use setup hook {spec!r}: {module_name} has no function {attr}")
    return hook  # type: ignore[no-any-return]


def run_setup(spec: str | None, overlord: Overlord) -> list[Endpoint]:
    """run_setup calls the setup hook, if any, and returns the endpoints it adds."""
    if spec is None:
        return []
    extra = load_setup(spec)(overlord) or []
    if not all(isinstance(ep, Endpoint) for ep in extra):
        raise ValueError(f"cannot use setup hook {spec!r}: it must return Endpoints or None")
    return list(extra)
