# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord.daemon: the REST API of an overlord, on a Unix socket (snapd's daemon).

A building block for any overlord: `Daemon(make_overlord, socket_path=...,
endpoints=[*CORE_ENDPOINTS, *yours], policy=AccessPolicy(...))` serves it
(server.py); `Endpoint`, `Context`, `ApiRequest` and `response` are how
endpoints are written (api.py); CORE_ENDPOINTS are the changes, tasks,
warnings and system-info of any overlord (core.py). The snap system's daemon
(`overlord daemon`, factory.system_daemon) serves ENDPOINTS: those and its
own. One module per resource (api_changes, api_snaps, api_interfaces, ...);
errors.py is the closed list of error kinds, access.py the peer-credential
rules, limits.py the connection bounds. docs/daemon.md tells the whole story.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import api_apps, api_asserts, api_config, api_find, api_interfaces, api_seed, api_snaps, response
from .api import ApiRequest, Context, Endpoint
from .core import CORE_ENDPOINTS

if TYPE_CHECKING:  # loaded on first use (below): the server brings uvicorn
    from .access import AccessPolicy
    from .limits import Limits
    from .server import Daemon

#: ENDPOINTS is every endpoint the snap system's daemon serves, by resource; a new resource module adds its list.
ENDPOINTS: list[Endpoint] = [
    *CORE_ENDPOINTS,
    *api_snaps.ENDPOINTS,
    *api_find.ENDPOINTS,
    *api_asserts.ENDPOINTS,
    *api_interfaces.ENDPOINTS,
    *api_seed.ENDPOINTS,
    *api_config.ENDPOINTS,
    *api_apps.ENDPOINTS,
]

__all__ = ["CORE_ENDPOINTS", "ENDPOINTS", "AccessPolicy", "ApiRequest", "Context", "Daemon", "Endpoint", "Limits",
           "response"]


def __getattr__(name: str) -> Any:
    # The server (uvicorn) loads only when a daemon is made, not with every endpoint module.
    if name == "Daemon":
        from .server import Daemon

        return Daemon
    if name == "AccessPolicy":
        from .access import AccessPolicy

        return AccessPolicy
    if name == "Limits":
        from .limits import Limits

        return Limits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
