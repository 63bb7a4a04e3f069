# SPDX-License-Identifier: GPL-3.0-or-later
"""SnapInfo: what meta/snap.yaml says about a snap, checked field by field.

snap.yaml is hostile input: it is parsed with PyYAML's safe loader, without
aliases (no "billion laughs"), duplicate keys, deep nesting or huge
integers (hostileyaml.py), at most MAX_YAML bytes, and every field is
checked; an error names the file and the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import InvalidSnapError
from .hostileyaml import load_yaml
from .naming import reserved_snap_name, valid_app_name, valid_plug_name, valid_revision, valid_snap_name

#: MAX_YAML is the largest meta/snap.yaml accepted, in bytes.
MAX_YAML = 64 * 1024
#: DAEMONS are the values of an app's daemon field (snapd's); see docs/managers.md for how each is run.
DAEMONS = ("simple", "forking", "oneshot", "notify", "dbus")
#: RESTART_CONDITIONS are the values of restart-condition (snapd's, systemd's Restart=).
RESTART_CONDITIONS = ("on-failure", "always", "never", "no", "on-success", "on-abnormal", "on-abort",
                      "on-watchdog")
#: INSTALL_MODES are the values of install-mode: whether a service starts when its snap is installed.
INSTALL_MODES = ("enable", "disable")
_VERSION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9:.+~-]{0,30}[a-zA-Z0-9+~])?\Z")
#: _COMMAND is snapd's appContentWhitelist: the characters a command may hold.
_COMMAND = re.compile(r"^[A-Za-z0-9/. _#:$-]+\Z")
#: COMMAND_VARIABLES are the variables a command's arguments may name ($SNAP_DATA/config): the wrapper
#: writes their values in, quoted; any other $ (a positional parameter, the caller's environment) is refused.
COMMAND_VARIABLES = ("SNAP", "SNAP_COMMON", "SNAP_DATA", "SNAP_NAME", "SNAP_REVISION", "SNAP_VERSION")
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]*)")
_FIELDS = ("name", "version", "summary", "description", "apps", "hooks", "plugs", "slots")
#: HOOKS are the hooks a snap may have, as executables meta/hooks/<name> (snapd's names; others are ignored).
HOOKS = ("install", "configure", "pre-refresh", "post-refresh", "remove")
_HOOK_FIELDS = ("timeout",)
#: MAX_HOOK_TIMEOUT is the longest timeout snap.yaml may give a hook, in seconds (a day).
MAX_HOOK_TIMEOUT = 86400.0
_APP_FIELDS = ("command", "daemon", "restart-condition", "restart-delay", "stop-timeout", "before", "after",
               "install-mode")
#: _SERVICE_FIELDS are the app fields only a service may have.
_SERVICE_FIELDS = _APP_FIELDS[2:]
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|ns))+\Z")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
#: MAX_DURATION bounds restart-delay and stop-timeout (a day): longer is surely a mistake.
MAX_DURATION = 86400.0


def parse_duration(text: str) -> float:
    """parse_duration reads a duration the way snapd does (Go's: "10s", "1m30s", "500ms"), in seconds.

    ValueError when it is not one.
    """
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration (like 10s, 1m30s or 500ms)")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """format_duration writes seconds back as a duration parse_duration reads ("1.5s")."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000, 3):g}ms"


@dataclass(frozen=True)
class AppInfo:
    """AppInfo is one app of a snap: a command, and whether it runs as a service."""

    name: str
    command: str
    daemon: str | None = None
    #: When the supervisor restarts the service after it ends (services only; default on-failure).
    restart_condition: str | None = None
    #: Seconds before a restart (None: the default, 100 ms, systemd's RestartSec).
    restart_delay: float | None = None
    #: Seconds a stop waits after SIGTERM before SIGKILL (None: the default, 10 s).
    stop_timeout: float | None = None
    #: Services of the same snap this one starts before / after.
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    #: "disable": the service is not started (nor enabled) when its snap is installed.
    install_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """to_dict is the app's snap.yaml form."""
        out: dict[str, Any] = {"command": self.command}
        if self.daemon:
            out["daemon"] = self.daemon
        if self.restart_condition:
            out["restart-condition"] = self.restart_condition
        if self.restart_delay is not None:
            out["restart-delay"] = format_duration(self.restart_delay)
        if self.stop_timeout is not None:
            out["stop-timeout"] = format_duration(self.stop_timeout)
        if self.before:
            out["before"] = list(self.before)
        if self.after:
            out["after"] = list(self.after)
        if self.install_mode:
            out["install-mode"] = self.install_mode
        return out

    @property
    def executable(self) -> str:
        """executable is the command's program, a path inside the snap."""
        return self.command.split()[0]


@dataclass(frozen=True)
class PlugInfo:
    """PlugInfo is a plug (or a slot): its name, its interface and its attributes."""

    name: str
    interface: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


SlotInfo = PlugInfo


@dataclass(frozen=True)
class HookInfo:
    """HookInfo is one hook of a snap: meta/hooks/<name>, and its timeout if snap.yaml sets one."""

    name: str
    #: Seconds the hook may run before it is killed; None: the hook manager's default.
    timeout: float | None = None

    @property
    def path(self) -> str:
        """path is the hook's executable, inside the snap."""
        return f"meta/hooks/{self.name}"


@dataclass(frozen=True)
class SnapInfo:
    """SnapInfo describes one revision of a snap: its snap.yaml and where it came from (side info)."""

    name: str
    version: str
    summary: str
    description: str = ""
    apps: Mapping[str, AppInfo] = field(default_factory=dict)
    plugs: Mapping[str, PlugInfo] = field(default_factory=dict)
    slots: Mapping[str, SlotInfo] = field(default_factory=dict)
    #: The hooks: those snap.yaml declares and those found in meta/hooks/ (a snap file or directory sets them).
    hooks: Mapping[str, HookInfo] = field(default_factory=dict)
    # Side info: set once the revision is known.
    revision: str = ""
    snap_id: str = ""
    publisher_id: str = ""
    sha3_384: str = ""
    size: int = 0

    @property
    def services(self) -> list[AppInfo]:
        """services are the apps that run as daemons, by name."""
        return [a for _, a in sorted(self.apps.items()) if a.daemon]

    def with_side(self, **side: Any) -> SnapInfo:
        """with_side returns a copy with side info (revision, snap_id, publisher_id, sha3_384, size) set."""
        return dataclasses.replace(self, **side)

    def to_dict(self) -> dict[str, Any]:
        """to_dict returns the JSON form kept in state (snap.yaml's field names)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version, "summary": self.summary}
        if self.description:
            out["description"] = self.description
        if self.apps:
            out["apps"] = {n: a.to_dict() for n, a in sorted(self.apps.items())}
        if self.hooks:
            out["hooks"] = {n: ({"timeout": h.timeout} if h.timeout is not None else {})
                            for n, h in sorted(self.hooks.items())}
        for key, ports in (("plugs", self.plugs), ("slots", self.slots)):
            if ports:
                out[key] = {n: {"interface": p.interface, **dict(p.attrs)} for n, p in sorted(ports.items())}
        for key, value in (("revision", self.revision), ("snap-id", self.snap_id),
                           ("publisher-id", self.publisher_id), ("sha3-384", self.sha3_384), ("size", self.size)):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "snap info") -> SnapInfo:
        """from_dict reads the JSON form written by to_dict (checked like snap.yaml)."""
        meta = {k: v for k, v in data.items() if k in _FIELDS}
        info = _parse(meta, where, new=False)
        revision = data.get("revision", "")
        if revision and not valid_revision(revision):
            raise InvalidSnapError(f"invalid {where}: field revision: {revision!r} is not a revision")
        return info.with_side(revision=revision, snap_id=data.get("snap-id", ""),
                              publisher_id=data.get("publisher-id", ""), sha3_384=data.get("sha3-384", ""),
                              size=int(data.get("size", 0)))

    @classmethod
    def from_yaml(cls, text: str | bytes, where: str = "meta/snap.yaml") -> SnapInfo:
        """from_yaml parses and checks the text of a meta/snap.yaml."""
        size = len(text.encode() if isinstance(text, str) else text)
        if size > MAX_YAML:
            raise InvalidSnapError(f"invalid {where}: it is {size} bytes, more than the limit of {MAX_YAML}")
        try:
            data = load_yaml(text)
        except yaml.YAMLError as e:
            problem = " ".join(str(e).split())
            raise InvalidSnapError(f"invalid {where}: it is not valid YAML ({problem})") from None
        if not isinstance(data, dict):
            raise InvalidSnapError(f"invalid {where}: it must be a mapping of fields")
        return _parse(data, where)


def _parse(data: Mapping[str, Any], where: str, new: bool = True) -> SnapInfo:
    """_parse checks the fields; new (a snap.yaml, not the state's copy) adds the checks added since."""
    def bad(path: str, problem: str) -> InvalidSnapError:
        return InvalidSnapError(f"invalid {where}: field {path}: {problem}")

    for key in data:
        if key not in _FIELDS:
            raise bad(str(key), f"unknown field (known: {', '.join(_FIELDS)})")
    name = data.get("name")
    if name is None:
        raise bad("name", "missing")
    if not valid_snap_name(name):
        raise bad("name", f"{name!r} is not a valid snap name (2-40 lowercase letters, digits and dashes, "
                          "at least one letter, no leading, trailing or double dash)")
    reserved = reserved_snap_name(name) if new else None
    if reserved:
        raise bad("name", f"{name!r} is reserved: {reserved}")
    version = data.get("version")
    if version is None:
        raise bad("version", "missing")
    if not isinstance(version, str):
        raise bad("version", f"{version!r} must be text (quote it: version: '{version}')")
    if not _VERSION.match(version):
        raise bad("version", f"{version!r} is not a valid version (1-32 letters, digits and .:+~-, "
                             "starting with a letter or digit)")
    summary = data.get("summary")
    if summary is None:
        raise bad("summary", "missing")
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary.strip() or len(summary) > 128:
        raise bad("summary", "must be one line of text, at most 128 characters")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 4096:
        raise bad("description", "must be text, at most 4096 characters")
    apps = {}
    raw_apps = data.get("apps", {}) or {}
    if not isinstance(raw_apps, dict):
        raise bad("apps", "must be a mapping of app names")
    for app, spec in raw_apps.items():
        path = f"apps.{app}"
        if not valid_app_name(app):
            raise bad(path, f"{app!r} is not a valid app name (letters, digits and single dashes)")
        if not isinstance(spec, dict):
            raise bad(path, "must be a mapping with a command")
        for key in spec:
            if key not in _APP_FIELDS:
                raise bad(f"{path}.{key}", f"unknown field (known: {', '.join(_APP_FIELDS)})")
        command = spec.get("command")
        if command is None:
            raise bad(f"{path}.command", "missing")
        if not isinstance(command, str) or not _COMMAND.match(command) or not command.strip():
            raise bad(f"{path}.command", f"{command!r} must be text of letters, digits, spaces and /._#:$-")
        program = command.split()[0]
        parts = program.split("/")
        if program.startswith("/") or ".." in parts or "" in parts or "." in parts or (new and "$" in program):
            raise bad(f"{path}.command", f"{program!r} must be a relative path inside the snap")
        for m in _VARIABLE.finditer(command if new else ""):
            if m.group(1) not in COMMAND_VARIABLES:
                raise bad(f"{path}.command", f"{m.group(0)!r} is not a variable a command may name "
                                             f"(${', $'.join(COMMAND_VARIABLES)})")
        daemon = spec.get("daemon")
        if daemon is not None and daemon not in DAEMONS:
            raise bad(f"{path}.daemon", f"{daemon!r} is not one of {', '.join(DAEMONS)}")
        apps[app] = _service_fields(AppInfo(app, command.strip(), daemon), spec, path, bad)
    _check_order(apps, bad)
    plugs = _ports(data.get("plugs"), "plugs", bad)
    slots = _ports(data.get("slots"), "slots", bad)
    both = sorted(set(plugs) & set(slots))
    if both:
        raise bad(f"slots.{both[0]}", "a plug and a slot cannot have the same name")
    hooks = _hooks(data.get("hooks"), bad)
    return SnapInfo(name, version, summary.strip(), description, apps, plugs, slots, hooks)


def _hooks(raw: Any, bad: Any) -> dict[str, HookInfo]:
    out: dict[str, HookInfo] = {}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise bad("hooks", "must be a mapping of hook names")
    for name, spec in raw.items():
        path = f"hooks.{name}"
        if name not in HOOKS:
            raise bad(path, f"{name!r} is not a hook (known: {', '.join(HOOKS)})")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise bad(path, "must be a mapping (or empty)")
        for key in spec:
            if key not in _HOOK_FIELDS:
                raise bad(f"{path}.{key}", f"unknown field (known: {', '.join(_HOOK_FIELDS)})")
        timeout = spec.get("timeout")
        if timeout is not None:
            timeout = parse_timeout(timeout)
            if timeout is None:
                raise bad(f"{path}.timeout", f"{spec['timeout']!r} must be a duration such as 30, 30s, 5m or 1h, "
                                             f"more than 0 and at most {MAX_HOOK_TIMEOUT:g} s")
        out[name] = HookInfo(name, timeout)
    return out


def parse_timeout(value: Any) -> float | None:
    """parse_timeout reads a hook timeout (seconds, or text "500ms", "30s", "5m", "1h"); None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:  # seconds, or a duration as services' fields take them (30s, 5m, 1h30m)
            seconds = float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else parse_duration(text)
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_HOOK_TIMEOUT:
        return None
    return seconds


def _service_fields(app: AppInfo, spec: Mapping[str, Any], path: str, bad: Any) -> AppInfo:
    """_service_fields reads and checks the fields only services may have (snapd's validate.go rules)."""
    for key in _SERVICE_FIELDS:
        if key in spec and not app.daemon:
            raise bad(f"{path}.{key}", "only a service (an app with daemon:) may have it")
    fields: dict[str, Any] = {}
    cond = spec.get("restart-condition")
    if cond is not None:
        if cond not in RESTART_CONDITIONS:
            raise bad(f"{path}.restart-condition", f"{cond!r} is not one of {', '.join(RESTART_CONDITIONS)}")
        fields["restart_condition"] = cond
    for key in ("restart-delay", "stop-timeout"):
        raw = spec.get(key)
        if raw is None:
            continue
        try:
            seconds = parse_duration(raw)
        except ValueError as e:
            raise bad(f"{path}.{key}", str(e)) from None
        if seconds > MAX_DURATION:
            raise bad(f"{path}.{key}", f"{raw!r} is longer than a day")
        fields[key.replace("-", "_")] = seconds
    for key in ("before", "after"):
        raw = spec.get(key)
        if raw is None:
            continue
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise bad(f"{path}.{key}", "must be a list of app names")
        fields[key] = tuple(dict.fromkeys(raw))
    mode = spec.get("install-mode")
    if mode is not None:
        if mode not in INSTALL_MODES:
            raise bad(f"{path}.install-mode", f"{mode!r} is not one of {', '.join(INSTALL_MODES)}")
        fields["install_mode"] = mode
    return dataclasses.replace(app, **fields)


def _check_order(apps: Mapping[str, AppInfo], bad: Any) -> None:
    """_check_order checks before/after name services of the snap, without a cycle (snapd's SortServices)."""
    for app in apps.values():
        for key, names in (("before", app.before), ("after", app.after)):
            for other in names:
                if other == app.name:
                    raise bad(f"apps.{app.name}.{key}", "a service cannot be ordered against itself")
                if other not in apps:
                    raise bad(f"apps.{app.name}.{key}", f"{other!r} is not an app of the snap")
                if not apps[other].daemon:
                    raise bad(f"apps.{app.name}.{key}", f"{other!r} is not a service")
    try:
        service_order(list(apps.values()))
    except ValueError as e:
        raise bad("apps", str(e)) from None


def service_order(apps: list[AppInfo]) -> list[AppInfo]:
    """service_order sorts services so that each starts after those it is ordered after (by name otherwise).

    ValueError names the services of a cycle. Non-services are left out.
    """
    services = {a.name: a for a in apps if a.daemon}
    after: dict[str, set[str]] = {n: set() for n in services}
    for a in services.values():
        after[a.name].update(x for x in a.after if x in services)
        for x in a.before:
            if x in services:
                after[x].add(a.name)
    out: list[AppInfo] = []
    done: set[str] = set()
    while len(out) < len(services):
        ready = sorted(n for n in services if n not in done and after[n] <= done)
        if not ready:
            cycle = sorted(n for n in services if n not in done)
            raise ValueError(f"services {', '.join(cycle)} are ordered in a cycle (before/after)")
        out.append(services[ready[0]])
        done.add(ready[0])
    return out


def _ports(raw: Any, key: str, bad: Any) -> dict[str, PlugInfo]:
    out: dict[str, PlugInfo] = {}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise bad(key, f"must be a mapping of {key[:-1]} names")
    for name, spec in raw.items():
        path = f"{key}.{name}"
        if not valid_plug_name(name):
            raise bad(path, f"{name!r} is not a valid {key[:-1]} name (lowercase letters, digits, single dashes)")
        attrs: dict[str, Any] = {}
        if spec is None:
            interface = name
        elif isinstance(spec, str):
            interface = spec
        elif isinstance(spec, dict):
            attrs = dict(spec)
            interface = attrs.pop("interface", name)
            for attr, value in attrs.items():
                if not isinstance(attr, str) or not attr:
                    raise bad(path, f"attribute name {attr!r} must be text")
                _check_attr(value, f"{path}.{attr}", bad)
        else:
            raise bad(path, "must be an interface name or a mapping of attributes")
        if not valid_plug_name(interface):
            raise bad(f"{path}.interface", f"{interface!r} is not a valid interface name")
        out[name] = PlugInfo(name, interface, attrs)
    return out


def _check_attr(value: Any, path: str, bad: Any, depth: int = 0) -> None:
    if depth > 8:
        raise bad(path, "attributes nest too deep")
    if isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad(path, "numbers must be finite")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_attr(v, f"{path}[{i}]", bad, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise bad(path, f"key {k!r} must be text")
            _check_attr(v, f"{path}.{k}", bad, depth + 1)
        return
    raise bad(path, f"{type(value).__name__} values are not allowed (text, numbers, booleans, lists, mappings)")
