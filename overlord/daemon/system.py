# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap system behind the daemon: one rule for every endpoint that needs one of its managers.

The endpoints of snaps, the snap store, assertions, interfaces, seeding,
configuration and services (ENDPOINTS beyond CORE_ENDPOINTS) work on a
managers.SystemOverlord, which always has every manager of the system. A
daemon built on any other overlord (a daemon of one's own, such as
examples/deployer) that serves them anyway answers each 404 not-found, as
it answers a route it does not serve: the resource is not there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import Context
from .errors import ApiError, ErrorKind

if TYPE_CHECKING:
    from managers import SystemOverlord


def system_overlord(ctx: Context) -> SystemOverlord:
    """system_overlord is the daemon's overlord as the snap system's; a 404 when it is another kind of overlord."""
    try:
        from managers import SystemOverlord  # the [system] extra: a daemon of its own runs without it
    except ImportError:
        SystemOverlord = None  # type: ignore[assignment,misc]
    if SystemOverlord is None or not isinstance(ctx.overlord, SystemOverlord):
        raise ApiError(404, ErrorKind.NOT_FOUND, "cannot find this resource: the daemon's overlord is not a snap "
                                                 f"system ({type(ctx.overlord).__name__}, not SystemOverlord)")
    return ctx.overlord
