# SPDX-License-Identifier: GPL-3.0-or-later
"""firstboot: seeding a new system (FirstBoot) from a seed directory (seed.py reads the format)."""

from __future__ import annotations

from .firstboot import SEED_KIND, SEEDED_KEY, FirstBoot
from .seed import ASSERTIONS, SEED_YAML, SNAPS_DIR, Seed, SeedSnap, read_seed

__all__ = ["ASSERTIONS", "SEEDED_KEY", "SEED_KIND", "SEED_YAML", "SNAPS_DIR", "FirstBoot", "Seed", "SeedSnap",
           "read_seed"]
