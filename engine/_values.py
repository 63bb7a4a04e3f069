# SPDX-License-Identifier: GPL-3.0-or-later
"""What the API accepts: keys, kinds, text, integers and JSON values, checked at the call.

Every value handed to a public setter is checked here, when it is given, so
that a unit of work never holds something the database refuses at commit.
The rules (docs/concepts.md, "What can be stored"):

- keys (of the state, a change or a task) and kinds are ``str`` holding valid
  Unicode text (no lone surrogates): anything else is refused, naming it;
- values are JSON: dicts with ``str`` keys at every level, lists, strings,
  finite numbers, booleans and None; strings may hold lone surrogates (file
  names decoded with ``os.fsdecode`` do), stored as JSON ``\\u`` escapes and
  read back unchanged;
- text meant for people (summaries, log lines, warnings, progress labels) is
  never refused for its encoding: lone surrogates are stored as
  backslash escapes of the bytes they stand for (``caf\\xe9.txt``);
- integers stored in columns (lanes, progress) fit SQLite's signed 64 bits.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
_ascii_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=True)


def is_unicode(text: str) -> bool:
    """is_unicode returns whether text can be stored as UTF-8 (it has no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(value: Any, what: str) -> str:
    """check_name returns value if it is a str of valid Unicode; what names it in the error."""
    if isinstance(value, str) and is_unicode(value):
        return value
    _refuse_text(value, f"{what} {value!r}", "it must be a str")


def check_key(key: Any, owner: str) -> str:
    """check_key returns key if it can name a value of owner ("task 5", "the state")."""
    if isinstance(key, str) and is_unicode(key):
        return key
    _refuse_text(key, f"key {key!r} of {owner}", "keys must be str")


def _refuse_text(value: Any, label: str, must: str) -> NoReturn:
    if not isinstance(value, str):
        raise TypeError(f"cannot use {label}: {must}, not {type(value).__name__}")
    raise ValueError(f"cannot use {label}: it is not valid Unicode text (lone surrogates)")


def clean_text(value: Any, what: str) -> str:
    """clean_text returns text for people as it will be stored: lone surrogates become escapes.

    A surrogate that stands for an undecodable byte (os.fsdecode) is shown as
    that byte, ``\\xe9``; any other lone surrogate as ``\\udNNN``.
    """
    if not isinstance(value, str):
        raise TypeError(f"cannot use {what} {value!r}: it must be a str, not {type(value).__name__}")
    if is_unicode(value):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def check_int64(value: Any, what: str) -> int:
    """check_int64 returns value as an int if it is an integer that fits a SQLite integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"cannot use {what} {value!r}: it must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"cannot use {what} {value}: it does not fit in 64 bits")
    return int(value)


def dump_value(key: str, value: Any, owner: str = "") -> str:
    """dump_value serialises a value for storage, naming key (and owner) when it cannot."""
    where = f"{key!r}" + (f" of {owner}" if owner else "")
    bad = _non_str_key(value)
    if bad is not None:
        raise TypeError(f"cannot store {where}: value has a dict key {bad[0]!r} at {bad[1]}; "
                        "JSON object keys must be str")
    try:
        text = _encoder.encode(value)
    except RecursionError:
        raise TypeError(f"cannot store {where}: value is nested too deeply to store as JSON") from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot store {where}: value is not JSON-serialisable ({e})") from None
    if not is_unicode(text):
        text = _ascii_encoder.encode(value)  # lone surrogates as \u escapes: valid JSON, read back unchanged
    return text


def _non_str_key(value: Any) -> tuple[Any, str] | None:
    """_non_str_key finds a dict key that JSON would silently turn into a string (1 -> "1")."""
    if not isinstance(value, (dict, list, tuple)):
        return None
    stack: list[tuple[Any, str]] = [(value, "$")]
    seen = 0
    while stack:
        item, path = stack.pop()
        seen += 1
        if seen > 100_000:
            return None  # the encoder judges the rest (and refuses what is too deep)
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    return k, path
                if isinstance(v, (dict, list, tuple)):
                    stack.append((v, f"{path}.{k}"))
        else:
            for i, v in enumerate(item):
                if isinstance(v, (dict, list, tuple)):
                    stack.append((v, f"{path}[{i}]"))
    return None


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: MISSING is the default of get (State, Change, Task): raise NoStateError when absent.
MISSING: Any = _Missing()


def get_value(data: dict[str, str], key: str, default: Any) -> Any:
    """get_value returns the JSON value stored under key in a data bag, or default (NoStateError if MISSING)."""
    text = data.get(key)
    if text is None:
        if default is MISSING:
            from .errors import NoStateError

            raise NoStateError(key)
        return default
    return json.loads(text)


def set_value(data: dict[str, str], key: str, value: Any, owner: str) -> None:
    """set_value stores a JSON value under key in a data bag (None deletes it), naming owner when it cannot."""
    check_key(key, owner)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = dump_value(key, value, owner)
