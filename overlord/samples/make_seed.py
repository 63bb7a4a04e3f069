# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m overlord.samples.make_seed [SEED_DIR]: write the sample seed (default: overlord/samples/seed).

It packs the sample snaps library and reader and signs their assertions
with the published TEST keys (overlord/samples/test-keys: never trust them
on a real system). The result is the same bytes every time.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from . import SEED, build_seed, sample_keys


def main() -> None:
    """main writes the seed directory named on the command line (replacing it)."""
    p = argparse.ArgumentParser(prog="python -m overlord.samples.make_seed", description=__doc__)
    p.add_argument("seed", type=Path, nargs="?", default=SEED, help="the seed directory to write")
    args = p.parse_args()
    if args.seed.exists():
        if not (args.seed / "seed.yaml").is_file():
            p.error(f"cannot replace {args.seed}: it is not a seed directory")
        shutil.rmtree(args.seed)
    build_seed(args.seed, *sample_keys())
    print(f"wrote the sample seed {args.seed}")


if __name__ == "__main__":
    main()
