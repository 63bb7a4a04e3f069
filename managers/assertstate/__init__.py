# SPDX-License-Identifier: GPL-3.0-or-later
"""assertstate: the AssertManager, which keeps assertions verified up to a trusted root key."""

from __future__ import annotations

from .assertmgr import DEFAULT_AUTHORITY, AssertManager
from .assertstate import TrustedRoot, fetch_chain, verify, verify_many

__all__ = ["DEFAULT_AUTHORITY", "AssertManager", "TrustedRoot", "fetch_chain", "verify", "verify_many"]
