# SPDX-License-Identifier: GPL-3.0-or-later
"""The header grammar of assertions: strings, multi-line strings, lists and maps.

The same text form as snapd's assertions: ``name: value`` lines; a value
that holds newlines follows its ``name:`` line indented by four spaces; a
list is ``name:`` then ``  - item`` lines; a map is ``name:`` then
``  key: value`` lines; lists and maps nest by two more spaces per level.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: NAME is what a header name (or a map key) looks like.
NAME = re.compile(r"^[a-z](?:-?[a-z0-9])*\Z")

Value = str | list[Any] | dict[str, Any]


class HeaderError(ValueError):
    """HeaderError means the headers of an assertion cannot be parsed or encoded."""


def encode(headers: Mapping[str, Any], order: list[str]) -> str:
    """encode writes headers as text, the names in order first, then the others sorted."""
    names = [n for n in order if n in headers] + sorted(n for n in headers if n not in order)
    parts: list[str] = []
    for name in names:
        _check_name(name)
        parts.append(_entry(f"{name}:", headers[name], 0, name))
    return "".join(parts)[1:]  # entries start with a newline


def _entry(intro: str, value: Any, indent: int, where: str) -> str:
    if isinstance(value, str):
        if value == "":
            raise HeaderError(f"cannot encode header {where!r}: its value is empty")
        if "\r" in value:
            raise HeaderError(f"cannot encode header {where!r}: it has a carriage return")
        if "\n" in value:
            pad = " " * (indent + 4)
            return f"\n{intro}\n{pad}" + value.replace("\n", "\n" + pad)
        if value != value.strip(" "):
            raise HeaderError(f"cannot encode header {where!r}: a one-line value cannot start or end with spaces")
        return f"\n{intro} {value}"
    if isinstance(value, list):
        if not value:
            raise HeaderError(f"cannot encode header {where!r}: the list is empty")
        prefix = " " * indent + "  -"
        return f"\n{intro}" + "".join(_entry(prefix, v, indent + 2, where) for v in value)
    if isinstance(value, Mapping):
        if not value:
            raise HeaderError(f"cannot encode header {where!r}: the map is empty")
        out = f"\n{intro}"
        for key in sorted(value):
            _check_name(key)
            out += _entry(" " * indent + f"  {key}:", value[key], indent + 2, f"{where}.{key}")
        return out
    raise HeaderError(f"cannot encode header {where!r}: values are text, lists or maps, "
                      f"not {type(value).__name__}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise HeaderError(f"invalid header name {name!r}: lowercase letters, digits and single dashes")


def parse(text: str) -> dict[str, Any]:
    """parse reads the headers part of an assertion."""
    lines = text.split("\n")
    headers: dict[str, Any] = {}
    i = 0
    while i < len(lines):
        name, sep, after = lines[i].partition(":")
        if not sep:
            raise HeaderError(f"header entry missing ':' separator: {lines[i]!r}")
        if not NAME.match(name):
            raise HeaderError(f"invalid header name: {name!r}")
        if name in headers:
            raise HeaderError(f"repeated header: {name!r}")
        headers[name], i = _value(after, lines, i + 1, 0, name)
    return headers


def _value(after: str, lines: list[str], i: int, indent: int, where: str) -> tuple[Value, int]:
    if after:
        if not after.startswith(" ") or len(after) < 2 or after[1] == " " or after.endswith(" "):
            raise HeaderError(f"header {where!r}: expected one space and a value after ':'")
        return after[1:], i
    base = " " * indent + "  "
    if i < len(lines) and lines[i].startswith(base):
        rest = lines[i][len(base):]
        if rest.startswith("-"):
            return _list(lines, i, indent, where)
        if rest and rest[0] != " ":
            return _map(lines, i, indent, where)
    pad = " " * (indent + 4)
    j = i
    while j < len(lines) and lines[j].startswith(pad):
        j += 1
    if j == i:
        raise HeaderError(f"header {where!r}: expected a value")
    return "\n".join(line[len(pad):] for line in lines[i:j]), j


def _list(lines: list[str], i: int, indent: int, where: str) -> tuple[list[Any], int]:
    prefix = " " * indent + "  -"
    items: list[Any] = []
    while i < len(lines) and lines[i].startswith(prefix):
        value, i = _value(lines[i][len(prefix):], lines, i + 1, indent + 2, where)
        items.append(value)
    return items, i


def _map(lines: list[str], i: int, indent: int, where: str) -> tuple[dict[str, Any], int]:
    prefix = " " * indent + "  "
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i].startswith(prefix) and lines[i][len(prefix):][:1] not in ("", " ", "-"):
        key, sep, after = lines[i][len(prefix):].partition(":")
        if not sep or not NAME.match(key):
            raise HeaderError(f"header {where!r}: invalid map entry {lines[i].strip()!r}")
        if key in out:
            raise HeaderError(f"header {where!r}: repeated map key {key!r}")
        out[key], i = _value(after, lines, i + 1, indent + 2, f"{where}.{key}")
    return out, i
