# SPDX-License-Identifier: GPL-3.0-or-later
"""samples: the sample snaps of the demo, and the script that builds a sample store from them.

    python -m overlord.samples STORE_DIR [--keys DIR] [--versions 1.0,2.0]

makes (or reuses) two test keys in the keys directory, root.pem (the
trusted root) and acme.pem (the publisher acme), and publishes the sample
snap "hello" into STORE_DIR: the root's account and account-key for acme,
the snap-declaration of hello, and one revision per version with its
snap-revision signed by acme. The keys are for tests and demos only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from managers.asserts import PrivateKey, create_key, load_private_key
from managers.asserts.build import account, account_key, snap_declaration, snap_id_for
from managers.snap import pack
from managers.store import Store, StoreSnap

#: SNAPS holds the sample snap directories, hello-<version>.
SNAPS = Path(__file__).resolve().parent / "snaps"
#: AUTHORITY is the account id of the sample trusted root.
AUTHORITY = "root"
#: PUBLISHER is the account id of the sample publisher.
PUBLISHER = "acme"
#: VERSIONS are the versions of hello there are sample directories for.
VERSIONS = ("1.0", "2.0", "3.0")


@dataclass
class SampleStore:
    """SampleStore is a store built from the samples, with the keys that signed it."""

    store: Store
    root_key: PrivateKey
    publisher_key: PrivateKey
    build_dir: Path

    def publish(self, version: str, name: str = "hello") -> StoreSnap:
        """publish packs the sample directory <name>-<version> and adds it as the next revision."""
        src = SNAPS / f"{name}-{version}"
        if not src.is_dir():
            raise ValueError(f"cannot publish {name} {version}: there is no sample directory {src}")
        self.build_dir.mkdir(parents=True, exist_ok=True)
        snap = pack(src, self.build_dir)
        return self.store.publish(snap, key=self.publisher_key, developer_id=PUBLISHER, snap_id=snap_id_for(name))


def keys(keys_dir: Path) -> tuple[PrivateKey, PrivateKey]:
    """keys returns the sample root and publisher keys in keys_dir, creating them when missing."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("root", PUBLISHER):
        path = keys_dir / f"{name}.pem"
        out.append(load_private_key(path) if path.exists() else create_key(keys_dir, name)[2])
    return out[0], out[1]


def build_store(store_dir: Path, root_key: PrivateKey, publisher_key: PrivateKey, *,
                versions: tuple[str, ...] = ("1.0",), names: tuple[str, ...] = ("hello",),
                build_dir: Path | None = None) -> SampleStore:
    """build_store writes the sample store: the publisher's account and key, a declaration per snap, versions.

    The snap files are packed into build_dir (default: snaps/ beside the store directory).
    """
    store = Store(store_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    store.add_assertion(account(root_key, AUTHORITY, PUBLISHER, "ACME Corp", timestamp="2030-01-01T00:00:00Z"))
    store.add_assertion(account_key(root_key, AUTHORITY, PUBLISHER, publisher_key.public_key))
    for name in names:
        store.add_assertion(snap_declaration(root_key, AUTHORITY, name, PUBLISHER,
                                             timestamp="2030-01-01T00:00:00Z"))
    sample = SampleStore(store, root_key, publisher_key, build_dir or store.root.parent / "snaps")
    for version in versions:
        sample.publish(version)
    return sample
