# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord.daemon: the REST API of an overlord, on a Unix socket (snapd's daemon).

One module per resource (api_changes, api_snaps, api_interfaces, ...), each with
its ENDPOINTS; response.py is the envelope, errors.py the closed list of
error kinds, access.py the peer-credential rules, factory.py builds the
overlord, server.py runs it all. docs/daemon.md tells the whole story.
"""

from __future__ import annotations

from . import api_asserts, api_changes, api_interfaces, api_notices, api_seed, api_snaps, api_system, api_warnings
from .api import Endpoint

#: ENDPOINTS is every endpoint the daemon serves, by resource; a new resource module adds its list here.
ENDPOINTS: list[Endpoint] = [
    *api_system.ENDPOINTS,
    *api_changes.ENDPOINTS,
    *api_warnings.ENDPOINTS,
    *api_notices.ENDPOINTS,
    *api_snaps.ENDPOINTS,
    *api_asserts.ENDPOINTS,
    *api_interfaces.ENDPOINTS,
    *api_seed.ENDPOINTS,
]

__all__ = ["ENDPOINTS", "Endpoint"]
