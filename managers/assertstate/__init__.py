# SPDX-License-Identifier: GPL-3.0-or-later
"""assertstate: the AssertManager, which keeps assertions verified up to a trusted root key.

The assertions live in the manager's own table (book.ASSERTIONS, on
engine.metadata), reached through AssertionBook(st).
"""

from __future__ import annotations

from .assertmgr import DEFAULT_AUTHORITY, AssertManager
from .assertstate import TrustedRoot, fetch_chain, verify, verify_many
from .book import ASSERTIONS, AssertionBook, StoredAssertion

__all__ = ["ASSERTIONS", "DEFAULT_AUTHORITY", "AssertManager", "AssertionBook", "StoredAssertion", "TrustedRoot",
           "fetch_chain", "verify", "verify_many"]
