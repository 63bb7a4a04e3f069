# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m overlord.samples STORE_DIR: build the sample store (see overlord.samples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import VERSIONS, build_store, keys


def main() -> None:
    """main builds the sample store named on the command line."""
    p = argparse.ArgumentParser(prog="python -m overlord.samples", description=__doc__)
    p.add_argument("store", type=Path, help="the store directory to write")
    p.add_argument("--keys", type=Path, default=None,
                   help="where the test keys are (made if missing; default: keys/ beside the store directory)")
    p.add_argument("--versions", default=",".join(VERSIONS), help="versions of hello to publish, in order")
    args = p.parse_args()
    if args.keys is None:  # next to the store it makes, like the packed snaps: never the current directory
        args.keys = args.store.absolute().parent / "keys"
    root_key, publisher_key = keys(args.keys)
    sample = build_store(args.store, root_key, publisher_key, versions=tuple(args.versions.split(",")))
    for name in sorted((sample.snap_store.root / "snaps").iterdir()):
        revisions = sorted(p.stem for p in name.glob("*.snap"))
        print(f"{name.name}: revisions {', '.join(revisions)}")
    print(f"trusted root key: {args.keys / 'root.pub.pem'} ({root_key.id})")


if __name__ == "__main__":
    main()
