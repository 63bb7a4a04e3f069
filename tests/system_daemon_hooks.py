# SPDX-License-Identifier: GPL-3.0-or-later
"""A setup hook for test daemons that run a system: ``overlord daemon --setup tests.system_daemon_hooks:setup``.

It gives the daemon the managers of a system, on the root and store named
by OVERLORD_TEST_ROOT and OVERLORD_TEST_STORE, trusting the key file
OVERLORD_TEST_TRUSTED_KEY: when the daemon's factory builds the engine's
own overlord it adds them (``managers.system_managers``, in order, before
the loop starts); when the factory builds the system overlord already it
only makes it trust that key, if it trusts none. It also registers what
tests.daemon_hooks does (test task kinds and endpoints), and

    POST /v2/test/hold {"snap": NAME}

a change of one "gated" task that touches NAME (as a snap task does), so
that requests about NAME conflict until the state directory's gate file
appears.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine import Overlord
from managers import system_managers
from managers.asserts import load_public_key
from managers.assertstate import DEFAULT_AUTHORITY, TrustedRoot
from managers.snapstate import SnapSetup
from overlord.daemon import response
from overlord.daemon.api import ApiRequest, Context, Endpoint
from tests import daemon_hooks


def post_hold(ctx: Context, req: ApiRequest) -> response.Reply:
    name = req.json().string("snap")
    st = ctx.state
    with st:
        chg = st.new_change("test-hold", f"Hold snap {name!r}")
        t = st.new_task("gated", f"Hold snap {name!r} until the gate opens")
        t.set("gate", str(Path(ctx.info["state-dir"]) / "gate"))
        t.set("total", 3)
        t.set("snap-setup", SnapSetup(name).to_dict())
        chg.add_task(t)
        chg.set("snap-names", [name])
        st.ensure_before(0)
        return response.async_(chg.id)


def setup(o: Overlord) -> list[Endpoint]:
    extra = daemon_hooks.setup(o)
    key = os.environ["OVERLORD_TEST_TRUSTED_KEY"]
    if getattr(o, "interface_manager", None) is None:
        ms = system_managers(o.state, o.task_runner, os.environ["OVERLORD_TEST_ROOT"],
                             store=os.environ.get("OVERLORD_TEST_STORE") or None, trusted_key=key)
        for m in ms:
            o.add_manager(m)
        for name in ("assert_manager", "snap_manager", "interface_manager", "first_boot"):
            setattr(o, name, getattr(ms, name))
    elif o.assert_manager.trusted is None:  # type: ignore[attr-defined]
        o.assert_manager.trusted = TrustedRoot(DEFAULT_AUTHORITY, load_public_key(key))  # type: ignore[attr-defined]
    return [*extra, Endpoint("/v2/test/hold", post=post_hold)]
