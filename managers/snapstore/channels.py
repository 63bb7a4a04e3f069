# SPDX-License-Identifier: GPL-3.0-or-later
"""Channels: a snap store offers each snap's revisions on channels, TRACK/RISK (snapd's names and rules)."""

from __future__ import annotations

import re

#: RISKS are snapd's risk levels, the least risky first: a channel with no revision of its own follows the
#: next less risky one of its track (edge shows beta's revision when edge is closed, and so on).
RISKS = ("stable", "candidate", "beta", "edge")
#: DEFAULT_TRACK is the track a channel named by its risk alone is on.
DEFAULT_TRACK = "latest"
#: DEFAULT_CHANNEL is what a snap tracks unless told otherwise.
DEFAULT_CHANNEL = "latest/stable"
_TRACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,27}\Z")


def parse_channel(text: str) -> str:
    """parse_channel returns a channel's full name, TRACK/RISK ("edge" -> "latest/edge"); ValueError if it is none.

    A channel is a risk (stable, candidate, beta, edge) optionally after a track ("2.0/beta").
    """
    parts = text.split("/")
    if len(parts) == 1:
        track, risk = DEFAULT_TRACK, parts[0]
    elif len(parts) == 2:
        track, risk = parts
    else:
        raise ValueError(f"cannot use channel {text!r}: it must be RISK or TRACK/RISK")
    if risk not in RISKS:
        raise ValueError(f"cannot use channel {text!r}: its risk must be one of {', '.join(RISKS)}")
    if not _TRACK.match(track):
        raise ValueError(f"cannot use channel {text!r}: track {track!r} is not a valid track name")
    return f"{track}/{risk}"


def short_channel(channel: str) -> str:
    """short_channel is how snap shows a channel: without the default track ("latest/stable" -> "stable")."""
    return channel.removeprefix(f"{DEFAULT_TRACK}/")
