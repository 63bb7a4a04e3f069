# SPDX-License-Identifier: GPL-3.0-or-later
"""Transaction: changes to the configuration of snaps, seen by whoever holds it and written at commit.

The configuration of every snap lives under the state key "config" as one
JSON object, ``{snap_name: {...document...}}``; the system's settings are
the document of the pseudo-snap "system". A key is a dotted path into a
document (``proxy.http``), each part 1 or more of a-z, 0-9 and single
dashes, with a letter (snapd's rule).

A Transaction (snapd's config.Transaction) reads the configuration as it
was when the transaction started (its *pristine* copy), keeps the changes
made through it apart, and shows reads the two merged. ``commit()`` applies
the changes to the configuration as the state holds it *then* (so changes
that others committed in between under other keys survive) and writes it.
A ``None`` value (JSON null) unsets: nulls never reach the state, and
reads never see them. Every method needs the state lock.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from engine import State

from ..errors import ConfigError, NoOptionError

#: CONFIG_KEY is the state key holding every snap's configuration document, by snap name.
CONFIG_KEY = "config"
#: _KEY is an option name's part: snapd's validKey, a-z, 0-9 and single dashes, no dash first or last, and
#: (_LETTER) a letter. snapd's own regex, ^(?:[a-z0-9]+-?)*[a-z](?:-?[a-z0-9])*$, is ambiguous: Go's linear
#: matcher does not mind, Python's backtracking one took 14 s for 26 digits and days for 40, with the state
#: lock held (GET .../conf?keys=, open to every local user). This one matches each string one way only.
_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_LETTER = re.compile(r"[a-z]")
#: MAX_DEPTH is how deep a configuration document may nest.
MAX_DEPTH = 32


def parse_key(key: str) -> list[str]:
    """parse_key splits a dotted key into its parts ("" is the whole document: no parts)."""
    if not isinstance(key, str):
        raise ConfigError(f"invalid option name: {key!r} is not text")
    if key == "":
        return []
    parts = key.split(".")
    for part in parts:
        if not (_KEY.match(part) and _LETTER.search(part)):
            raise ConfigError(f"invalid option name: {part!r} (in {key!r}): use a-z, 0-9 and single dashes, "
                              "with a letter, parts separated by dots")
    return parts


def check_value(key: str, value: Any) -> Any:
    """check_value returns a private copy of a JSON value (dicts with text keys, lists, text, finite numbers,
    booleans, None), or raises ConfigError naming the key."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot set option {key!r}: its value is not JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"cannot set option {key!r}: its value nests too deeply") from None
    out = json.loads(text)
    if _depth(out) > MAX_DEPTH:
        raise ConfigError(f"cannot set option {key!r}: its value nests deeper than {MAX_DEPTH} levels")
    if not _same_keys(value, out):
        raise ConfigError(f"cannot set option {key!r}: its documents must have text keys")
    return out


def _same_keys(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return all(isinstance(k, str) for k in a) and all(_same_keys(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return all(_same_keys(x, y) for x, y in zip(a, b, strict=True))
    return True


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


class _Set:
    """_Set is a change that replaces what is at its place (None: unsets it)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _apply(base: Any, change: Any) -> Any:
    """_apply returns base with a change applied: a _Set replaces, a dict patches key by key."""
    if isinstance(change, _Set):
        return copy.deepcopy(change.value)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in change.items():
        out[k] = _apply(out.get(k), v)
    return out


def purge_nulls(doc: Any) -> Any:
    """purge_nulls drops the keys whose value is None, at every level of a document."""
    if isinstance(doc, dict):
        return {k: purge_nulls(v) for k, v in doc.items() if v is not None}
    return doc


def _leaves(prefix: str, change: Any) -> list[str]:
    if isinstance(change, _Set):
        value = change.value
        if isinstance(value, dict) and value:
            return [k for sub, v in value.items() for k in _leaves(f"{prefix}.{sub}", _Set(v))]
        return [prefix]
    return [k for sub, v in change.items() for k in _leaves(f"{prefix}.{sub}", v)]


def _no_option(snap: str, parts: list[str]) -> NoOptionError:
    if not parts:
        return NoOptionError(f"snap {snap!r} has no configuration")
    return NoOptionError(f"snap {snap!r} has no {'.'.join(parts)!r} configuration option")


def _walk(snap: str, doc: Any, parts: list[str]) -> Any:
    """_walk returns what is at parts in doc; NoOptionError when it is not there."""
    if not parts:
        if not doc:
            raise _no_option(snap, parts)
        return doc
    here = doc
    for i, part in enumerate(parts):
        if not isinstance(here, dict):
            raise ConfigError(f"snap {snap!r} option {'.'.join(parts[:i])!r} is not a map")
        if part not in here:
            raise _no_option(snap, parts[:i + 1])
        here = here[part]
    return here


def read_config(st: State) -> dict[str, Any]:
    """read_config returns a private copy of every snap's configuration document (lock held)."""
    raw = st.get(CONFIG_KEY, {})
    return json.loads(json.dumps(raw)) if isinstance(raw, dict) else {}


def snap_config(st: State, snap: str, key: str = "") -> Any:
    """snap_config reads one option (or, for key "", the whole document) of a snap, as committed (lock held).

    It raises NoOptionError when there is no such option.
    """
    return _walk(snap, read_config(st).get(snap, {}), parse_key(key))


def delete_snap_config(st: State, snap: str) -> None:
    """delete_snap_config forgets a snap's configuration (lock held)."""
    config = read_config(st)
    if config.pop(snap, None) is not None:
        st.set(CONFIG_KEY, config or None)


class Transaction:
    """Transaction holds changes to the configuration until commit (see the module's doc); lock held throughout."""

    def __init__(self, st: State) -> None:
        self.state = st
        self._pristine = read_config(st)
        self._changes: dict[str, dict[str, Any]] = {}

    def _merged(self, snap: str) -> Any:
        base = self._pristine.get(snap, {})
        change = self._changes.get(snap)
        return _apply(base, change) if change else base

    def set(self, snap: str, key: str, value: Any) -> None:
        """set changes option key of snap to value (None unsets it); a key "a.b" sets b inside document a.

        A path through an option that holds something other than a document
        (or nothing) is refused: ConfigError "... is not a map".
        """
        parts = parse_key(key)
        if not parts:
            raise ConfigError(f"cannot set the whole configuration of snap {snap!r} at once: name an option")
        value = check_value(key, value)
        # Going through a value that is not a document is refused (a null or nothing is fine).
        here = self._merged(snap)
        for i, part in enumerate(parts[:-1]):
            here = here.get(part) if isinstance(here, dict) else None
            if here is not None and not isinstance(here, dict):
                raise ConfigError(f"snap {snap!r} option {'.'.join(parts[:i + 1])!r} is not a map")
        node: dict[str, Any] = self._changes.setdefault(snap, {})
        in_value = False  # node is a plain dict inside a replacement value, not a patch
        for part in parts[:-1]:
            nxt = node.get(part)
            if in_value:
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
            elif isinstance(nxt, _Set):
                if not isinstance(nxt.value, dict):  # null: a new document in its place
                    nxt.value = {}
                nxt, in_value = nxt.value, True
            elif nxt is None:
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value if in_value else _Set(value)

    def unset(self, snap: str, key: str) -> None:
        """unset removes option key of snap (setting it to None)."""
        self.set(snap, key, None)

    def get(self, snap: str, key: str = "") -> Any:
        """get reads an option (key "": the whole document) as it is with the transaction's changes.

        NoOptionError when it is not set; ConfigError when the path goes through a value that is not a document.
        """
        parts = parse_key(key)
        return copy.deepcopy(_walk(snap, purge_nulls(self._merged(snap)), parts))

    def get_pristine(self, snap: str, key: str = "") -> Any:
        """get_pristine reads an option as it was when the transaction started."""
        return copy.deepcopy(_walk(snap, purge_nulls(self._pristine.get(snap, {})), parse_key(key)))

    def changes(self) -> list[str]:
        """changes lists the changed options, "snap.key.sub", sorted (a document set counts as its leaves)."""
        return sorted(k for snap, tree in self._changes.items() for k in _leaves(snap, tree))

    def snap_changes(self, snap: str) -> list[str]:
        """snap_changes lists the changed options of one snap (without the snap's name), sorted."""
        return [k.partition(".")[2] for k in self.changes() if k.partition(".")[0] == snap]

    def commit(self) -> None:
        """commit writes the changes into the configuration the state holds now, then starts over from it."""
        if not self._changes:
            return
        config = read_config(self.state)
        for snap, tree in self._changes.items():
            doc = purge_nulls(_apply(config.get(snap, {}), tree))
            if doc:
                config[snap] = doc
            else:
                config.pop(snap, None)
        self.state.set(CONFIG_KEY, config or None)
        self._pristine = config
        self._changes = {}

