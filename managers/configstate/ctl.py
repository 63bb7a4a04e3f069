# SPDX-License-Identifier: GPL-3.0-or-later
"""run_ctl: `overlord ctl get|set|unset` (snapd's snapctl) for a hook, by the token of its context.

The token (SNAP_COOKIE in the hook's environment) names one running hook,
and through it one snap: every key is an option of *that* snap, there is
no way to name another, and the token stops working when the hook ends.
Reads and writes go through the hook's configuration transaction, so a
configure hook sees the values being set and its own `ctl set` are
committed with them (or not at all, if the hook fails).

    get [-d] KEY...      one key: its value (text as is, anything else as JSON); several, or -d: a JSON object
                         (options that are not set are left out; one missing key prints nothing)
    set KEY=VALUE...     VALUE is JSON where it parses, text otherwise; KEY! unsets
    unset KEY...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, NoOptionError
from ..hookstate import HookManager
from .configmgr import context_transaction


class CtlError(ConfigError):
    """CtlError means a ctl command is malformed, or its token names no running hook."""


class CtlForbidden(CtlError):
    """CtlForbidden means the token names no running hook (it never did, or its hook ended)."""


def parse_value(text: str) -> Any:
    """parse_value reads a command-line value: JSON where it parses, the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(words: Sequence[str], *, strings: bool = False) -> dict[str, Any]:
    """parse_assignments reads KEY=VALUE (KEY! unsets) words into a patch; strings keeps values as text."""
    patch: dict[str, Any] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            if word.endswith("!") and len(word) > 1:
                patch[word[:-1]] = None
                continue
            raise CtlError(f"invalid configuration: {word!r} (want key=value, or key! to unset)")
        patch[key] = value if strings else parse_value(value)
    return patch


def format_value(value: Any) -> str:
    """format_value prints one value as snapctl does: text as is, anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)


def run_ctl(hm: HookManager, token: str, args: Sequence[str]) -> str:
    """run_ctl runs one ctl command for the hook whose context token is token; it returns its output (lock held)."""
    ctx = hm.context(token)
    if ctx is None:
        raise CtlForbidden("cannot run ctl: its context token is not valid (only a running hook has one)")
    if not args:
        raise CtlError("cannot run ctl: no command (get, set or unset)")
    verb, rest = args[0], list(args[1:])
    tr = context_transaction(ctx)
    snap = ctx.snap
    if verb == "get":
        document = "-d" in rest
        keys = [k for k in rest if k != "-d"]
        if not keys:
            raise CtlError("cannot run ctl get: name the options to read")
        found = {}
        for key in keys:
            try:
                found[key] = tr.get(snap, key)
            except NoOptionError:
                continue
        if len(keys) == 1 and not document:
            return format_value(found[keys[0]]) + "\n" if keys[0] in found else ""
        return json.dumps(found, indent=2, sort_keys=True) + "\n"
    if verb == "set":
        if not rest:
            raise CtlError("cannot run ctl set: give key=value pairs")
        for key, value in parse_assignments(rest).items():
            tr.set(snap, key, value)
        return ""
    if verb == "unset":
        if not rest:
            raise CtlError("cannot run ctl unset: name the options to unset")
        for key in rest:
            tr.unset(snap, key)
        return ""
    raise CtlError(f"cannot run ctl: unknown command {verb!r} (get, set or unset)")
