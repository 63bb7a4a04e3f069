# SPDX-License-Identifier: GPL-3.0-or-later
"""The symlinks of a snap file, resolved inside the snap before anything is extracted."""

from __future__ import annotations

from .limits import MAX_LINK_NESTING, Limits


class Unresolved(Exception):
    """Unresolved says why a symlink cannot be resolved inside the snap (its text follows "symlink NAME")."""


class LinkResolver:
    """LinkResolver resolves paths through the snap's symlinks, each link once.

    A link's resolution (the path inside the snap it ends at, "" for the
    top) does not depend on how it was reached, so it is kept: the work is
    linear in the links' targets, where resolving afresh doubles with each
    link that goes through the next twice. So is the number of symlinks
    the kernel follows to resolve it (a link that goes through the next
    twice counts it twice): past MAX_LINK_NESTING the kernel answers ELOOP,
    and the snap is refused. Every path walked is at most limits.max_path
    bytes, and the steps of the whole archive are counted and refused past
    limits.max_link_steps.
    """

    def __init__(self, links: dict[str, str], limits: Limits) -> None:
        self.links = links
        self.limits = limits
        self.steps = 0
        self._done: dict[str, tuple[str, int]] = {}
        self._active: set[str] = set()
        self._names = {path.rpartition("/")[2] for path in links}

    def link(self, path: str) -> tuple[str, int]:
        """link returns where the symlink at path ends, and how many symlinks resolving it follows (itself too)."""
        done = self._done.get(path)
        if done is not None:
            return done
        if path in self._active:
            raise Unresolved("is part of a loop of symlinks")
        self._active.add(path)
        try:
            resolved, followed = self.walk(path.rpartition("/")[0], self.links[path], 1)
        finally:
            self._active.discard(path)
        self._done[path] = (resolved, followed)
        return resolved, followed

    def walk(self, base: str, target: str, followed: int = 0) -> tuple[str, int]:
        """walk follows target from the directory base; it returns the path it ends at and the links followed.

        followed is the count to start from (1 when walking a link's own target).
        """
        if target.startswith("/"):
            raise Unresolved("points outside the snap")
        parts = target.split("/")
        self.steps += len(parts)
        if self.steps > self.limits.max_link_steps:
            raise Unresolved(f"takes the archive past the limit of {self.limits.max_link_steps} "
                              "symlink resolution steps")
        here = base
        room = self.limits.max_path - self.limits.prefix
        links = self.links
        for part in parts:
            if part in ("", "."):
                continue
            if part == "..":
                if not here:
                    raise Unresolved("points outside the snap")
                here = here.rpartition("/")[0]
                continue
            here = f"{here}/{part}" if here else part
            # Characters are at most bytes: encode only what could be too long.
            if len(here) * 4 > room and (len(here) > room or len(here.encode()) > room):
                raise Unresolved(f"resolves to a path longer than {room} bytes")
            if part in self._names and here in links:  # hash a long path only where a link may be
                here, inner = self.link(here)
                followed += inner
                if followed > MAX_LINK_NESTING:
                    raise Unresolved(f"goes through more than {MAX_LINK_NESTING} symlinks (the kernel's limit)")
        return here, followed
