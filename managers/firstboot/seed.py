# SPDX-License-Identifier: GPL-3.0-or-later
"""The seed format: a directory of snaps and their assertions that a new system is made from.

Layout (docs/managers.md)::

    <seed>/seed.yaml          snaps: [{name: NAME, file: FILE}, ...]
    <seed>/snaps/FILE         each snap file
    <seed>/assertions/*       assertion streams (any file names), or one stream file <seed>/assertions

read_seed reads and checks everything a seed holds on its own (the YAML,
every snap file, every assertion's format); whether the assertions verify
and the snaps need each other is decided against the system's state by
FirstBoot. Every error is an InvalidSeedError naming the seed and the file.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..asserts import Assertion, decode_stream, file_sha3_384
from ..errors import InvalidAssertionError, InvalidSeedError, InvalidSnapError
from ..snap import DEFAULT_LIMITS, Limits, SnapInfo, read_info, valid_snap_name
from ..snap.hostileyaml import load_yaml
from ..snap.regular import open_regular

#: SEED_YAML is the seed's list of snaps.
SEED_YAML = "seed.yaml"
#: SNAPS_DIR holds the seed's snap files.
SNAPS_DIR = "snaps"
#: ASSERTIONS is the directory of assertion files (or a single stream file).
ASSERTIONS = "assertions"
#: MAX_SEED_YAML is the largest seed.yaml read, in bytes.
MAX_SEED_YAML = 64 * 1024
#: MAX_ASSERTIONS_FILE is the most bytes of assertions a seed may hold: one file's, and all its files' together.
MAX_ASSERTIONS_FILE = 16 * 1024 * 1024
#: MAX_ASSERTION_FILES is the most files a seed's assertions/ directory may hold.
MAX_ASSERTION_FILES = 1000


@dataclass(frozen=True)
class SeedSnap:
    """SeedSnap is one snap of a seed: its file, what its snap.yaml says, its digest and size."""

    name: str
    path: Path
    info: SnapInfo
    sha3_384: str
    size: int


@dataclass(frozen=True)
class Seed:
    """Seed is a seed directory as read: its snaps in seed.yaml's order, and its assertions."""

    dir: Path
    snaps: list[SeedSnap]
    assertions: list[Assertion]

    def error(self, problem: str) -> InvalidSeedError:
        """error is the InvalidSeedError for a problem with this seed."""
        return seed_error(self.dir, problem)


def seed_error(seed_dir: Path, problem: str) -> InvalidSeedError:
    """seed_error is an InvalidSeedError saying which seed is refused and why."""
    return InvalidSeedError(f"cannot seed the system from {seed_dir}: {problem}")


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _read_text(seed_dir: Path, path: Path, limit: int, too_large: str = "") -> str:
    if not _regular(path):
        raise seed_error(seed_dir, f"{path.relative_to(seed_dir)} is missing or not a regular file")
    try:
        with open(open_regular(path), "rb") as f:  # swapped for a FIFO since: refused, not waited on
            data = f.read(limit + 1)
    except OSError as e:
        raise seed_error(seed_dir, f"cannot read {path.relative_to(seed_dir)}: {e.strerror}") from None
    if len(data) > limit:
        raise seed_error(seed_dir, too_large or f"{path.relative_to(seed_dir)} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise seed_error(seed_dir, f"{path.relative_to(seed_dir)} is not UTF-8 text") from None


def _entries(seed_dir: Path) -> list[tuple[str, str]]:
    text = _read_text(seed_dir, seed_dir / SEED_YAML, MAX_SEED_YAML)
    try:
        data = load_yaml(text)  # no aliases, duplicate keys, deep nesting or huge numbers
    except yaml.YAMLError as e:
        raise seed_error(seed_dir, f"{SEED_YAML} is not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or set(data) != {"snaps"}:
        raise seed_error(seed_dir, f"{SEED_YAML} must be a mapping with one field, snaps")
    snaps = data["snaps"]
    if not isinstance(snaps, list) or not snaps:
        raise seed_error(seed_dir, f"{SEED_YAML}: snaps must be a list of at least one {{name, file}}")
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(snaps):
        where = f"{SEED_YAML}: snaps[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "file"}:
            raise seed_error(seed_dir, f"{where} must be a mapping with the fields name and file")
        name, file = entry["name"], entry["file"]
        if not valid_snap_name(name):
            raise seed_error(seed_dir, f"{where}: {name!r} is not a snap name")
        if not isinstance(file, str) or "/" in file or "\0" in file or file.startswith(".") \
                or not file.endswith(".snap"):
            raise seed_error(seed_dir, f"{where}: file {file!r} must be the name of a .snap file in {SNAPS_DIR}/")
        if any(name == n for n, _ in out):
            raise seed_error(seed_dir, f"{where}: snap {name!r} is listed twice")
        if any(file == f for _, f in out):
            raise seed_error(seed_dir, f"{where}: file {file!r} is listed twice")
        out.append((name, file))
    return out


def _assertions(seed_dir: Path) -> list[Assertion]:
    where = seed_dir / ASSERTIONS
    if _regular(where):
        files = [where]
    elif where.is_dir() and not where.is_symlink():
        files = []
        for p in where.iterdir():  # counted as listed: a directory of millions of files is not read whole
            if not p.name.startswith("."):
                files.append(p)
                if len(files) > MAX_ASSERTION_FILES:
                    raise seed_error(seed_dir, f"{ASSERTIONS}/ holds more than {MAX_ASSERTION_FILES} files")
        files.sort()
    else:
        raise seed_error(seed_dir, f"it has no {ASSERTIONS}/ directory (or {ASSERTIONS} stream file)")
    out: list[Assertion] = []
    left = MAX_ASSERTIONS_FILE  # for all the files together: memory is bounded by the seed, not by each file
    for path in files:
        text = _read_text(seed_dir, path, left, f"{ASSERTIONS} hold more than {MAX_ASSERTIONS_FILE} bytes, all "
                                                "files together")
        left -= len(text.encode())
        try:
            out.extend(decode_stream(text))
        except InvalidAssertionError as e:
            raise seed_error(seed_dir, f"{path.relative_to(seed_dir)}: {e}") from None
    if not out:
        raise seed_error(seed_dir, f"{ASSERTIONS} holds no assertions")
    return out


def read_seed(seed_dir: str | Path, limits: Limits = DEFAULT_LIMITS) -> Seed:
    """read_seed reads and checks a seed directory on its own: seed.yaml, every snap file, the assertions."""
    d = Path(seed_dir).absolute()
    if not d.is_dir():
        raise seed_error(d, "it is not a directory")
    snaps = []
    for name, file in _entries(d):
        path = d / SNAPS_DIR / file
        if not _regular(path):
            raise seed_error(d, f"{SNAPS_DIR}/{file} (snap {name!r}) is missing or not a regular file")
        try:
            info = read_info(path, limits)
            digest, size = file_sha3_384(path)
        except InvalidSnapError as e:
            raise seed_error(d, str(e)) from None
        except OSError as e:
            raise seed_error(d, f"cannot read {SNAPS_DIR}/{file}: {e.strerror}") from None
        if info.name != name:
            raise seed_error(d, f"{SNAPS_DIR}/{file} is snap {info.name!r}, {SEED_YAML} says {name!r}")
        snaps.append(SeedSnap(name, path, info, digest, size))
    return Seed(d, snaps, _assertions(d))
