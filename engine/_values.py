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
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, NoReturn

from .errors import NoStateError

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
    try:
        text = _encode(value, _encoder)
        if not is_unicode(text):
            text = _encode(value, _ascii_encoder)  # lone surrogates as \u escapes: valid JSON, read back unchanged
    except _NonStrKey as e:
        raise TypeError(f"cannot store {_where(key, owner)}: value has a dict key {e.key!r} at {e.path()}; "
                        "JSON object keys must be str") from None
    except RecursionError:
        raise TypeError(f"cannot store {_where(key, owner)}: value is nested too deeply to store as JSON") from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot store {_where(key, owner)}: value is not JSON-serialisable ({e})") from None
    return text


def _where(key: str, owner: str) -> str:
    return f"{key!r}" + (f" of {owner}" if owner else "")


class _NonStrKey(Exception):
    """_NonStrKey: a dict key that JSON would silently turn into a string (1 -> "1"), and where it is."""

    def __init__(self, key: Any) -> None:
        super().__init__()
        self.key = key
        self.steps: list[str] = []  # innermost first, added while the walk unwinds

    def path(self) -> str:
        return "$" + "".join(reversed(self.steps))


_CONTAINERS = (dict, list, tuple)
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})
_STR_TYPES = frozenset({str})
#: Containers up to this size are walked item by item (cheaper than asking whether they hold containers).
_SMALL = 16


class _Leaves:
    """_Leaves encodes what holds no container, as encoder would, with one C encoder built once."""

    def __init__(self, encoder: json.JSONEncoder) -> None:
        self.string = encode_basestring_ascii if encoder.ensure_ascii else encode_basestring
        c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
        # No markers: what is handed over holds no container, so no cycle.
        self.c = None if c_make_encoder is None else c_make_encoder(
            None, encoder.default, self.string, None, ":", ",", False, False, False)
        self.encoder = encoder

    def encode(self, o: Any) -> str:
        if self.c is None:
            return self.encoder.encode(o)
        return "".join(self.c(o, 0))


_LEAVES = {id(_encoder): _Leaves(_encoder), id(_ascii_encoder): _Leaves(_ascii_encoder)}


def _encode(value: Any, encoder: json.JSONEncoder) -> str:
    """_encode is encoder.encode(value) that refuses non-str dict keys at any depth, in the same walk.

    The walk goes down the containers that hold containers; a container
    holding only leaves (and str keys, checked first) is handed to the C
    encoder whole, so a big flat dict or list costs what the encoder costs.
    """
    if not isinstance(value, _CONTAINERS):
        return _LEAVES[id(encoder)].encode(value)
    out: list[str] = []
    _walk(value, out, _LEAVES[id(encoder)], set())
    return "".join(out)


def _only_leaves(types: set[type]) -> bool:
    """_only_leaves says whether none of types is a container's (exact types first: the common case)."""
    return types <= _LEAF_TYPES or not any(issubclass(t, _CONTAINERS) for t in types)


def _walk(item: Any, out: list[str], leaves: _Leaves, markers: set[int]) -> None:
    is_dict = isinstance(item, dict)
    if is_dict:
        keys = set(map(type, item))
        if not keys <= _STR_TYPES and not all(issubclass(t, str) for t in keys):
            raise _NonStrKey(next(k for k in item if not isinstance(k, str)))
    if len(item) > _SMALL:  # a big container of leaves only: the C encoder, whole
        if _only_leaves(set(map(type, item.values() if is_dict else item))):
            out.append(leaves.encode(item))
            return
    elif not item:
        out.append("{}" if is_dict else "[]")
        return
    marker = id(item)
    if marker in markers:
        raise ValueError("Circular reference detected")
    markers.add(marker)
    append = out.append
    string = leaves.string
    if is_dict:
        sep = "{"
        for k, v in item.items():
            append(sep)
            append(string(k))
            append(":")
            sep = ","
            t = type(v)
            if t is str:
                append(string(v))
            elif t is int:
                append(int.__repr__(v))
            elif isinstance(v, _CONTAINERS):
                try:
                    _walk(v, out, leaves, markers)
                except _NonStrKey as e:
                    e.steps.append(f".{k}")
                    raise
            elif v is None:
                append("null")
            elif t is bool:
                append("true" if v else "false")
            else:
                append(leaves.encode(v))
        append("}")
    else:
        sep = "["
        for n, v in enumerate(item):
            append(sep)
            sep = ","
            t = type(v)
            if t is str:
                append(string(v))
            elif t is int:
                append(int.__repr__(v))
            elif isinstance(v, _CONTAINERS):
                try:
                    _walk(v, out, leaves, markers)
                except _NonStrKey as e:
                    e.steps.append(f"[{n}]")
                    raise
            elif v is None:
                append("null")
            elif t is bool:
                append("true" if v else "false")
            else:
                append(leaves.encode(v))
        append("]")
    markers.discard(marker)


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
