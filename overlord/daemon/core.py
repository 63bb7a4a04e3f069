# SPDX-License-Identifier: GPL-3.0-or-later
"""The endpoints of any overlord: what a daemon built on the engine serves whatever its managers.

GET /v2/system-info and /v2/openapi.json, the changes and their tasks (list,
one, abort), the warnings (list, okay), the notices (list, long-poll) and the
timings (/v2/debug). The snap system adds its own (overlord.daemon.ENDPOINTS);
a daemon of your own adds yours (docs/daemon.md, "A daemon for any overlord").
"""

from __future__ import annotations

from . import api_changes, api_debug, api_events, api_notices, api_schedules, api_system, api_warnings
from .api import Endpoint

#: CORE_ENDPOINTS are the endpoints every daemon serves, for any overlord.
CORE_ENDPOINTS: list[Endpoint] = [
    *api_system.ENDPOINTS,
    *api_changes.ENDPOINTS,
    *api_warnings.ENDPOINTS,
    *api_notices.ENDPOINTS,
    *api_events.ENDPOINTS,  # h26b
    *api_schedules.ENDPOINTS,  # h26b
    *api_debug.ENDPOINTS,
]
