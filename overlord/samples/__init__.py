# SPDX-License-Identifier: GPL-3.0-or-later
"""samples: the sample snaps of the demo, a sample seed, and the scripts that build a store and a seed from them.

    python -m overlord.samples STORE_DIR [--keys DIR] [--versions 1.0,2.0]
    python -m overlord.samples.make_seed [SEED_DIR]

The first makes (or reuses) two test keys in the keys directory (default:
keys/ beside STORE_DIR, where the packed snaps go too, snaps/), root.pem
(the trusted root) and acme.pem (the publisher acme), and publishes the
sample snap "hello" into STORE_DIR: the root's account and account-key for
acme, the snap-declaration of hello, and one revision per version with its
snap-revision signed by acme. The second writes the sample seed (SEED, in
the repository) from the sample snaps library and reader, signed with the
keys published in TEST_KEYS. Every key here is for tests and demos only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from managers.asserts import Assertion, PrivateKey, create_key, file_sha3_384, load_private_key
from managers.asserts.build import account, account_key, snap_declaration, snap_id_for, snap_revision
from managers.snap import pack, read_info
from managers.snapstore import SnapStore, StoreSnap

#: SNAPS holds the sample snap directories, hello-<version>.
SNAPS = Path(__file__).resolve().parent / "snaps"
#: AUTHORITY is the account id of the sample trusted root.
AUTHORITY = "root"
#: PUBLISHER is the account id of the sample publisher.
PUBLISHER = "acme"
#: VERSIONS are the versions of hello there are sample directories for.
VERSIONS = ("1.0", "2.0", "3.0")
#: TEST_KEYS holds key pairs published with the source (private halves too): for tests and the demo only;
#: never trust them on a real system.
TEST_KEYS = Path(__file__).resolve().parent / "test-keys"
#: SEED is the sample seed, written by ``python -m overlord.samples.make_seed`` with the TEST_KEYS.
SEED = Path(__file__).resolve().parent / "seed"
#: SEED_SNAPS are the snaps of the sample seed, as seed.yaml lists them: the content consumer first, so that
#: seeding shows it installs the provider before it.
SEED_SNAPS = ("reader", "library")
#: SEED_TIME is the time stamp of the sample seed's assertions (fixed, so that a rebuild gives the same bytes;
#: in the past, since a future-dated assertion is refused).
SEED_TIME = "2025-01-01T00:00:00Z"


@dataclass
class SampleStore:
    """SampleStore is a store built from the samples, with the keys that signed it."""

    snap_store: SnapStore
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
        return self.snap_store.publish(snap, key=self.publisher_key, developer_id=PUBLISHER, snap_id=snap_id_for(name))


def keys(keys_dir: Path) -> tuple[PrivateKey, PrivateKey]:
    """keys returns the sample root and publisher keys in keys_dir, creating them when missing."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("root", PUBLISHER):
        path = keys_dir / f"{name}.pem"
        out.append(load_private_key(path) if path.exists() else create_key(keys_dir, name)[2])
    return out[0], out[1]


def sample_keys() -> tuple[PrivateKey, PrivateKey]:
    """sample_keys returns the published test keys, the root's and acme's: for tests and the demo only."""
    return load_private_key(TEST_KEYS / "root.pem"), load_private_key(TEST_KEYS / f"{PUBLISHER}.pem")


def publisher_assertions(root_key: PrivateKey, publisher_key: PrivateKey) -> list[Assertion]:
    """publisher_assertions are the root's account and account-key assertions for the sample publisher."""
    return [account(root_key, AUTHORITY, PUBLISHER, "ACME Corp", timestamp=SEED_TIME),
            account_key(root_key, AUTHORITY, PUBLISHER, publisher_key.public_key)]


def build_seed(seed_dir: Path, root_key: PrivateKey, publisher_key: PrivateKey, *,
               snaps: tuple[str, ...] = SEED_SNAPS) -> Path:
    """build_seed writes a seed of the sample snaps <name>-1.0 (docs/managers.md, "First boot"), deterministically.

    seed.yaml lists the snaps in the given order; snaps/ holds the packed
    files; assertions/ the publisher's account and key (acme.assert) and,
    per snap, its snap-declaration and its revision 1 (<name>.assert).
    """
    (seed_dir / "snaps").mkdir(parents=True, exist_ok=True)
    (seed_dir / "assertions").mkdir(exist_ok=True)
    stream = "\n".join(a.text for a in publisher_assertions(root_key, publisher_key))
    (seed_dir / "assertions" / f"{PUBLISHER}.assert").write_text(stream)
    lines = ["# The sample seed: built by python -m overlord.samples.make_seed from overlord/samples/snaps/,",
             "# signed with the TEST keys of overlord/samples/test-keys/ (never trust them on a real system).",
             "snaps:"]
    for name in snaps:
        snap = pack(SNAPS / f"{name}-1.0", seed_dir / "snaps")
        info = read_info(snap)
        digest, size = file_sha3_384(snap)
        decl = snap_declaration(root_key, AUTHORITY, info.name, PUBLISHER, timestamp=SEED_TIME)
        rev = snap_revision(publisher_key, PUBLISHER, digest, size, snap_id_for(info.name), 1, PUBLISHER,
                            timestamp=SEED_TIME)
        (seed_dir / "assertions" / f"{info.name}.assert").write_text(f"{decl.text}\n{rev.text}")
        lines += [f"  - name: {info.name}", f"    file: {snap.name}"]
    (seed_dir / "seed.yaml").write_text("\n".join(lines) + "\n")
    return seed_dir


def build_store(store_dir: Path, root_key: PrivateKey, publisher_key: PrivateKey, *,
                versions: tuple[str, ...] = ("1.0",), names: tuple[str, ...] = ("hello",),
                build_dir: Path | None = None) -> SampleStore:
    """build_store writes the sample store: the publisher's account and key, a declaration per snap, versions.

    The snap files are packed into build_dir (default: snaps/ beside the store directory).
    """
    store = SnapStore(store_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    for a in publisher_assertions(root_key, publisher_key):
        store.add_assertion(a)
    for name in names:
        store.add_assertion(snap_declaration(root_key, AUTHORITY, name, PUBLISHER, timestamp=SEED_TIME))
    sample = SampleStore(store, root_key, publisher_key, build_dir or store.root.parent / "snaps")
    for version in versions:
        sample.publish(version)
    return sample
