# SPDX-License-Identifier: GPL-3.0-or-later
"""configstate: the configuration of snaps and of the system (snapd's overlord/configstate).

- ``config``: Transaction, dotted keys (parse_key), reading the "config" state key;
- ``system``: the system's settings (the pseudo-snap "system") and their checks;
- ``configmgr``: the ConfigManager (configure-snap changes, through the configure hook);
- ``ctl``: `overlord ctl get|set|unset` for a running hook, by its context token.

See docs/managers.md ("Configuration").
"""

from __future__ import annotations

from .config import CONFIG_KEY, Transaction, delete_snap_config, parse_key, purge_nulls, read_config, snap_config
from .configmgr import ConfigManager, ConfigureHandler, check_patch, context_transaction
from .ctl import CtlError, CtlForbidden, ctl_function, format_value, parse_assignments, parse_value, run_ctl
from .system import SYSTEM, SYSTEM_OPTIONS, check_hold, check_retain, check_system, check_timer

__all__ = [
    "CONFIG_KEY",
    "SYSTEM",
    "SYSTEM_OPTIONS",
    "ConfigManager",
    "ConfigureHandler",
    "CtlError",
    "CtlForbidden",
    "Transaction",
    "check_hold",
    "check_patch",
    "check_retain",
    "check_system",
    "check_timer",
    "context_transaction",
    "ctl_function",
    "delete_snap_config",
    "format_value",
    "parse_assignments",
    "parse_key",
    "parse_value",
    "purge_nulls",
    "read_config",
    "run_ctl",
    "snap_config",
]
