# SPDX-License-Identifier: GPL-3.0-or-later
"""Names: what snap, app, plug and slot names and snap ids may look like (snapd's rules)."""

from __future__ import annotations

import re

#: SNAP_ID is a snap id: 32 ASCII letters and digits.
SNAP_ID = re.compile(r"^[a-zA-Z0-9]{32}\Z")
_SNAP_NAME = re.compile(r"^[a-z0-9-]*[a-z][a-z0-9-]*\Z")
_APP_NAME = re.compile(r"^[a-zA-Z0-9](?:-?[a-zA-Z0-9])*\Z")
_PLUG_NAME = re.compile(r"^[a-z](?:-?[a-z0-9])*\Z")
#: REVISION is a revision as text: a store revision (1, 2, ...) or a local one (x1, x2, ...).
REVISION = re.compile(r"^(?:x?[1-9][0-9]*)\Z")


def valid_snap_name(name: object) -> bool:
    """valid_snap_name says whether name is a snap name.

    Lowercase letters, digits and dashes, 2 to 40 characters, at least one
    letter, no leading, trailing or double dash.
    """
    return (isinstance(name, str) and 2 <= len(name) <= 40 and bool(_SNAP_NAME.match(name))
            and not name.startswith("-") and not name.endswith("-") and "--" not in name)


#: RESERVED_SNAP_NAMES are names the on-disk layout uses where snap names live (docs/managers.md, "On
#: disk"): a snap by that name would land in their place. <root>/snap/<name> is each snap's directory, and
#: <root>/snap/bin holds every snap's command wrappers.
RESERVED_SNAP_NAMES: dict[str, str] = {"bin": "<root>/snap/bin holds the command wrappers"}


def reserved_snap_name(name: str) -> str | None:
    """reserved_snap_name says why name cannot be a snap's (the layout uses it), or None."""
    return RESERVED_SNAP_NAMES.get(name)


def valid_app_name(name: object) -> bool:
    """valid_app_name says whether name is an app name (letters, digits, single dashes)."""
    return isinstance(name, str) and bool(_APP_NAME.match(name))


def valid_plug_name(name: object) -> bool:
    """valid_plug_name says whether name is a plug, slot or interface name."""
    return isinstance(name, str) and bool(_PLUG_NAME.match(name))


def valid_revision(rev: object) -> bool:
    """valid_revision says whether rev is a revision text such as "3" or "x1"."""
    return isinstance(rev, str) and bool(REVISION.match(rev))
