# SPDX-License-Identifier: GPL-3.0-or-later
"""Peers: other Python job systems running W1 and W2 beside the engine, in the same run.

    pip install -e '.[bench]'          # huey, dbos, procrastinate (never needed by the tests)
    python -m bench.peers              # every peer that is installed, our figures and the raw baselines
    python -m bench.peers --quick      # small sizes, one run each

W1 is 10,000 independent no-op jobs (submitted, then run); W2 a chain of
1,000 jobs, each submitting the next from inside its handler. The engine
runs W2 both ways (engine_peer): "engine" is its own W2, one change of 1,000
tasks each waiting for the previous one, built up front; "engine-spawn" is
the peers' shape, each task adding the next (waiting for itself) to its
change; "engine-change" each task submitting a new one-task change. Figures
are jobs per second from the start of the submission to the last job done,
and the CPU time of the process (every thread) per job over that window;
each run in a fresh process, on a fresh database file (SQLite, beside the
checkout in var/bench-tmp) or a fresh database of one throwaway PostgreSQL
server with its default durability. The runs are interleaved: round i runs
every system once, in an order rotated by i, after its own baseline, so
that each system meets the same spells of a shared machine. Each adapter
(one module per system) says in SETTINGS what it needed to run fairly;
docs/performance.md has the table.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The adapters: module name -> (peer, backends).
ADAPTERS = ("huey_peer", "dbos_peer", "procrastinate_peer")
#: The engine's adapter (run beside the peers, in the same child protocol).
ENGINE = "engine_peer"


def adapter(name: str) -> ModuleType:
    """adapter imports one adapter module (it imports its peer only when it runs)."""
    return importlib.import_module(f"{__name__}.{name}")


def installed(package: str) -> bool:
    """installed says whether a peer's package can be imported here."""
    return importlib.util.find_spec(package) is not None
