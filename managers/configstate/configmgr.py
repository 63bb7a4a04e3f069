# SPDX-License-Identifier: GPL-3.0-or-later
"""ConfigManager: configuration changes of snaps and of the system, through the configure hook.

`configure(snap, patch)` makes a "configure-snap" change of one run-hook
task (hook "configure"). Its handler (ConfigureHandler, registered with
the HookManager) applies the patch to the hook context's Transaction before
the hook runs; the hook sees the new values (`overlord ctl get`), may set
more (`overlord ctl set`, into the same transaction) and may refuse them
by failing. Only when the hook succeeds is the transaction committed, in
the transaction that marks the task Done: a failing hook leaves the
configuration as it was. The pseudo-snap "system" has no hook: its options
are checked (system.py) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine import Change, State, TaskRunner

from ..errors import ConfigError, NoOptionError, SnapNotInstalledError
from ..hookstate import HookContext, HookManager, HookSetup, hook_task
from ..snapstate.conflict import check_conflicts, snap_key
from .config import Transaction, check_value, parse_key, snap_config
from .system import SYSTEM, check_system

if TYPE_CHECKING:
    from ..errors import HookError
    from ..snapstate import SnapManager

log = logging.getLogger("managers.configstate")

#: TRANSACTION_KEY is where a hook context keeps its configuration transaction.
TRANSACTION_KEY = "config-transaction"


def context_transaction(ctx: HookContext) -> Transaction:
    """context_transaction is the configuration transaction of a hook run, committed when the hook succeeds.

    Every hook has one (`overlord ctl set` in an install hook writes
    through it too), made at first use.
    """
    tr = ctx.cached(TRANSACTION_KEY)
    if isinstance(tr, Transaction):
        return tr
    tr = Transaction(ctx.state)
    ctx.cache(TRANSACTION_KEY, tr)
    ctx.on_done(tr.commit)
    return tr


def check_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """check_patch checks the keys and values of a patch ({dotted key: value or None}); returns a copy."""
    if not isinstance(patch, Mapping):
        raise ConfigError("cannot change the configuration: the changes must be a mapping of options to values")
    out = {}
    for key, value in patch.items():
        if not parse_key(key):
            raise ConfigError("cannot change the configuration: an option name is empty")
        out[key] = check_value(key, value)
    return out


def check_system_patch(st: State, patch: Mapping[str, Any]) -> None:
    """check_system_patch checks a patch of system options as it would apply now (lock held)."""
    tr = Transaction(st)
    for key, value in patch.items():
        tr.set(SYSTEM, key, value)
    check_system(tr.snap_changes(SYSTEM), lambda k: tr.get(SYSTEM, k) if _has(tr, k) else None)


def _has(tr: Transaction, key: str) -> bool:
    try:
        tr.get(SYSTEM, key)
    except NoOptionError:
        return False
    return True


class ConfigureHandler:
    """ConfigureHandler applies a configure task's patch to the hook's transaction, before the hook runs."""

    def __init__(self, ctx: HookContext) -> None:
        self.ctx = ctx

    def before(self) -> None:
        """before applies the task's "patch" (checking system options for "system")."""
        tr = context_transaction(self.ctx)
        patch = self.ctx.task.get("patch", None) or {}
        for key, value in patch.items():
            tr.set(self.ctx.snap, key, value)
        if self.ctx.snap == SYSTEM:
            check_system(tr.snap_changes(SYSTEM), lambda k: tr.get(SYSTEM, k) if _has(tr, k) else None)

    def done(self) -> None:
        """done has nothing to add: the transaction commits with the context."""

    def error(self, err: HookError) -> bool:
        """error lets the hook's failure fail the task (the transaction is dropped)."""
        return False


class ConfigManager:
    """ConfigManager owns the "config" state key: reading it, and changes through the configure hook."""

    def __init__(self, state: State, runner: TaskRunner, snap_manager: SnapManager,
                 hook_manager: HookManager) -> None:
        self.state = state
        self.snap_manager = snap_manager
        self.hook_manager = hook_manager
        hook_manager.register("configure", ConfigureHandler)
        hook_manager.add_pseudo_snap(SYSTEM)

    def ensure(self) -> None:
        """ensure has nothing periodic to do."""

    def _check_snap(self, snap: str, verb: str) -> None:
        if snap != SYSTEM and self.snap_manager.info_or_none(snap) is None:
            raise SnapNotInstalledError(f"cannot {verb} the configuration of snap {snap!r}: it is not installed")

    def get(self, snap: str, key: str = "") -> Any:
        """get reads an option of snap (key "": its whole document) as committed (lock held).

        NoOptionError when it is not set; SnapNotInstalledError for a snap that is not installed.
        """
        self._check_snap(snap, "read")
        return snap_config(self.state, snap, key)

    def configure(self, snap: str, patch: Mapping[str, Any]) -> Change:
        """configure makes a "configure-snap" change applying patch ({dotted key: value; None unsets}) (lock held).

        The snap's configure hook runs with the new values and may refuse
        them; a snap without a configure hook cannot be configured (snapd's
        rule). System options ("system") are checked here already.
        """
        patch = check_patch(patch)
        if not patch:
            raise ConfigError(f"cannot change the configuration of snap {snap!r}: no options given")
        self._check_snap(snap, "change")
        st = self.state
        if snap == SYSTEM:
            check_system_patch(st, patch)
        check_conflicts(self.snap_manager, [snap])
        chg = st.new_change("configure-snap", f'Change configuration of "{snap}" snap', affects=[snap_key(snap)])
        t = hook_task(st, f'Run configure hook of "{snap}" snap', HookSetup(snap, "configure", optional=snap == SYSTEM),
                      {"patch": patch})
        chg.add_task(t)
        chg.set("snap-names", [snap])
        st.ensure_before(0)
        log.info("configuring snap %s: %s", snap, ", ".join(sorted(patch)))
        return chg
