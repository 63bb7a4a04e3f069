# SPDX-License-Identifier: GPL-3.0-or-later
"""Limits: the bounds a snap file is checked against, whatever it holds (docs/managers.md, "Limits and threats")."""

from __future__ import annotations

from dataclasses import dataclass

#: MAX_LINK_NESTING is how many symlinks resolving one may follow (the kernel's MAXSYMLINKS: ELOOP past it).
MAX_LINK_NESTING = 40


@dataclass(frozen=True)
class Limits:
    """Limits bound what a snap file may hold."""

    #: The most bytes all files may hold once extracted (1 GiB).
    max_size: int = 1024 * 1024 * 1024
    #: The most entries (files, directories, symlinks).
    max_entries: int = 20000
    #: The longest path of a member once extracted, in bytes: prefix plus the path in the snap.
    max_path: int = 4096
    #: The longest symlink target, in bytes.
    max_link: int = 1024
    #: The largest central directory (the archive's index), in bytes.
    max_index: int = 16 * 1024 * 1024
    #: The most symlink resolution steps (path components walked) for the whole archive.
    max_link_steps: int = 500_000
    #: The bytes in front of a member's path once extracted (``<root>/snap/<name>/<revision>/``).
    prefix: int = 0
    #: The space left free beyond what extraction writes (the declared sizes, a block per entry).
    free_margin: int = 5 * 1024 * 1024
    #: The largest snap file, in bytes (2 GiB: max_size of contents, plus the archive's headers and what
    #: deflate may add). A store's snap declaring more is refused before it is downloaded.
    max_file: int = 2 * 1024 * 1024 * 1024


DEFAULT_LIMITS = Limits()
