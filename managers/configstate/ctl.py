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
    start|stop|restart [--enable|--disable] [SNAP|SNAP.APP...]
                         the hook's own snap's services (all of them by default), once the hook is done:
                         a service-control task added to the hook's change, after the hook (snapd's queued
                         service commands); any other snap's services are refused
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from engine import Task

from ..errors import ConfigError, ManagerError, NoOptionError
from ..hookstate import HookContext, HookManager
from ..hookstate.ctlserver import CtlFunction
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
    except RecursionError:  # JSON, nested past what the parser recurses into: refused, not a traceback
        raise ConfigError(f"invalid configuration value {text[:20]!r}...: it nests too deeply") from None


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


class ServiceControl(Protocol):
    """ServiceControl makes the task of a service command (the service manager's control_task)."""

    def control_task(self, action: str, names: Sequence[str], *, enable: bool = False,
                     disable: bool = False) -> Task: ...


def ctl_function(hm: HookManager, services: ServiceControl | None = None) -> CtlFunction:
    """ctl_function is what the hook manager serves `overlord ctl` with when no daemon does (a private socket)."""
    def ctl(token: str, args: list[str]) -> str:
        with hm.state:
            try:
                return run_ctl(hm, token, args, services)
            except CtlForbidden as e:
                raise PermissionError(str(e)) from None
            except ManagerError as e:
                raise ValueError(str(e)) from None
    return ctl


def run_ctl(hm: HookManager, token: str, args: Sequence[str], services: ServiceControl | None = None) -> str:
    """run_ctl runs one ctl command for the hook whose context token is token; it returns its output (lock held).

    services is the service manager, for start, stop and restart (None: a system without services).
    """
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
    if verb in ("start", "stop", "restart"):
        _service_command(ctx, verb, rest, services)
        return ""
    raise CtlError(f"cannot run ctl: unknown command {verb!r} (get, set, unset, start, stop or restart)")


def _service_command(ctx: HookContext, verb: str, words: list[str], services: ServiceControl | None) -> None:
    """_service_command queues a service command of a hook: a task of its change, run once the hook is done."""
    if services is None:
        raise CtlError(f"cannot run ctl {verb}: this system runs no services")
    flags = [w for w in words if w.startswith("-")]
    names = [w for w in words if not w.startswith("-")] or [ctx.snap]
    unknown = [f for f in flags if f not in ("--enable", "--disable")]
    if unknown:
        raise CtlError(f"cannot run ctl {verb}: unknown option {unknown[0]!r} (--enable or --disable)")
    for name in names:
        if name.split(".")[0] != ctx.snap:
            raise CtlError(f"cannot run ctl {verb} {name}: a hook of snap {ctx.snap!r} controls its own "
                           "services only")
    try:
        t = services.control_task(verb, names, enable="--enable" in flags, disable="--disable" in flags)
    except (ValueError, ManagerError) as e:
        raise CtlError(str(e)) from None
    hook = ctx.task
    chg = hook.change()
    if chg is None:
        raise CtlError(f"cannot run ctl {verb}: the hook's task is in no change")
    after = hook.halt_tasks()  # what waited for the hook now waits for the command too
    t.wait_for(hook)
    for other in after:
        other.wait_for(t)
    for lane in hook.lanes():
        if lane:
            t.join_lane(lane)
    chg.add_task(t)
