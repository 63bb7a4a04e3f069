# SPDX-License-Identifier: GPL-3.0-or-later
"""hookstate: the HookManager, which runs snaps' hooks as run-hook tasks (snapd's overlord/hookstate).

See hookmgr.py for how a hook runs, run.py for the process, and
docs/managers.md ("Hooks").
"""

from __future__ import annotations

from .hookmgr import (
    COOKIE_ENV,
    DEFAULT_TIMEOUT,
    HOOK_TIMEOUTS,
    SOCKET_ENV,
    HookContext,
    HookHandler,
    HookManager,
    HookSetup,
    hook_setup,
    hook_task,
)
from .run import OUTPUT_LIMIT, HookRun, run_hook

__all__ = [
    "COOKIE_ENV",
    "DEFAULT_TIMEOUT",
    "HOOK_TIMEOUTS",
    "OUTPUT_LIMIT",
    "SOCKET_ENV",
    "HookContext",
    "HookHandler",
    "HookManager",
    "HookRun",
    "HookSetup",
    "hook_setup",
    "hook_task",
    "run_hook",
]
