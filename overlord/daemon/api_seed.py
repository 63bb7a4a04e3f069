# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/seed: whether the system is seeded, and seeding it from a seed directory.

    GET  /v2/seed                                  {"seeded": bool, "change": ID | null, "status": ... | null}
    POST /v2/seed {"action": "seed", "path": DIR}  async: the seed change

They need the overlord's FirstBoot (``o.first_boot``, the system overlord's).
The daemon reads the seed directory itself: POST needs write access, like
every POST. The seed is read and checked before the state lock is taken,
so other requests are answered meanwhile.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import bad_request, shown
from .system import system_overlord

if TYPE_CHECKING:
    pass


def get_seed(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_seed tells whether the system is seeded, and the latest seed change."""
    fb = system_overlord(ctx).first_boot
    with ctx.state:
        chg = fb.seed_change()
        return response.sync({"seeded": fb.seeded, "change": chg.id if chg is not None else None,
                              "status": chg.status.value if chg is not None else None})


def post_seed(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_seed seeds the system from the seed directory at path (absolute); async, with the seed change."""
    body = req.json()
    body.action(("seed",))
    path = body.string("path")
    if not os.path.isabs(path) or "\0" in path:
        raise bad_request(f"cannot seed: path {shown(path)} must be an absolute path")
    fb = system_overlord(ctx).first_boot
    cr = req.change_request("seed", {"path": path})
    with ctx.state:
        found = cr.existing(ctx.state)  # a retried request: before the seed is read again
        if found is not None:
            return response.async_(found.id)
        if fb.seeded:  # said at once (already-seeded), before any file of the seed is read
            return response.async_(fb.seed(path).id)
    # The seed is read and checked whole (every snap file, every assertion parsed) before the lock is taken;
    # the lock is held to check it against the system and record the change.
    seed = fb.read(path)
    # a broken seed is invalid-seed, a seeded system already-seeded (errors.from_exception)
    return cr.run(ctx.state, lambda: fb.seed(seed), lambda chg: response.async_(chg.id))


ENDPOINTS = [Endpoint("/v2/seed", get=get_seed, post=post_seed)]
