# SPDX-License-Identifier: GPL-3.0-or-later
"""SystemOverlord: the overlord of a system, with its managers in dependency order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tenacity

from engine import Overlord

from .asserts import PublicKey
from .assertstate import DEFAULT_AUTHORITY, AssertManager
from .snap import DEFAULT_LIMITS, Limits
from .snapstate import DEFAULT_RETAIN, SnapManager
from .store import Store


class SystemOverlord(Overlord):
    """SystemOverlord is an engine.Overlord whose database lives in state_dir, managing the system under root.

    The managers are added in dependency order: o.assert_manager (the
    assertions, checked against trusted_key for trusted_authority),
    o.snap_manager (snaps under root, from store: a directory or file://
    URL); o.interface_manager is None until an interface manager exists.
    Other keyword arguments go to engine.Overlord (clock, workers, ...).
    """

    def __init__(self, state_dir: str | Path, root: str | Path, *, store: str | Path | Store | None = None,
                 trusted_key: PublicKey | str | Path | None = None, trusted_authority: str = DEFAULT_AUTHORITY,
                 retain: int = DEFAULT_RETAIN, limits: Limits = DEFAULT_LIMITS,
                 download_retry: tenacity.Retrying | None = None, **options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.root_dir = Path(root)
        if self.state_dir.absolute() == self.root_dir.absolute():
            raise ValueError("cannot use one directory as both the state directory and the system root")
        super().__init__(root=self.state_dir, **options)
        try:
            self.assert_manager = AssertManager(self.state, self.task_runner, trusted_key=trusted_key,
                                                trusted_authority=trusted_authority)
            self.snap_manager = SnapManager(self.state, self.task_runner, root=self.root_dir, store=store,
                                            assert_manager=self.assert_manager, retain=retain, limits=limits,
                                            download_retry=download_retry)
        except BaseException:
            self.stop()
            raise
        #: interface_manager is the InterfaceManager, once there is one (added after the snap manager).
        self.interface_manager: Any = None
        self.add_manager(self.assert_manager)
        self.add_manager(self.snap_manager)
