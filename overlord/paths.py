# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the daemon keeps its state and its socket; the client finds it the same way."""

from __future__ import annotations

import os
from pathlib import Path

#: DEFAULT_STATE_DIR is the state directory when neither --state-dir nor OVERLORD_STATE_DIR says otherwise.
DEFAULT_STATE_DIR = Path("/var/lib/overlord")
#: STATE_DIR_ENV is the environment variable naming the state directory.
STATE_DIR_ENV = "OVERLORD_STATE_DIR"
#: SOCKET_NAME is the API socket's name inside the state directory.
SOCKET_NAME = "overlord.socket"
#: DB_NAME is the state database's name inside the state directory.
DB_NAME = "state.db"


def state_dir(given: str | Path | None = None) -> Path:
    """state_dir returns the state directory: given, else $OVERLORD_STATE_DIR, else DEFAULT_STATE_DIR."""
    if given:
        return Path(given)
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else DEFAULT_STATE_DIR


def socket_path(given: str | Path | None = None) -> Path:
    """socket_path returns the API socket of the state directory state_dir(given)."""
    return state_dir(given) / SOCKET_NAME


def db_path(given: str | Path | None = None) -> Path:
    """db_path returns the state database of the state directory state_dir(given)."""
    return state_dir(given) / DB_NAME
