# SPDX-License-Identifier: GPL-3.0-or-later
"""YAML from others (snap.yaml, seed.yaml, a snap store's files), read by a loader that refuses what hurts."""

from __future__ import annotations

import importlib
from typing import Any

import yaml

#: MAX_YAML_DEPTH is how deep collections may nest in YAML from others (snap.yaml, seed.yaml).
MAX_YAML_DEPTH = 32
#: MAX_YAML_INT_DIGITS is the longest integer of YAML from others, in characters (int64 needs 20).
MAX_YAML_INT_DIGITS = 32


class HostileYAMLLoader(yaml.SafeLoader):
    """HostileYAMLLoader is PyYAML's safe loader, made for text from others (snap.yaml, seed.yaml).

    It refuses aliases (no "billion laughs"), merge keys, a key given twice
    in a mapping (not last-one-wins), nesting deeper than MAX_YAML_DEPTH
    (PyYAML's composer recurses: a deep document would end in a
    RecursionError), and integers of more than MAX_YAML_INT_DIGITS
    characters or outside 64 bits (snapd's int64; a long one costs
    quadratic time to convert, or a ValueError past Python's 4300 digits).
    Every refusal is a yaml.YAMLError with the line and column.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"it nests deeper than {MAX_YAML_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, f"expected a mapping, found {node.id}",
                                                    node.start_mark)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(None, None, "merge keys (<<) are not allowed",
                                                        key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in out
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                        key_node.start_mark) from None
            if seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            out[key] = self.construct_object(value_node, deep=deep)
        return out

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node)
        if len(text) > MAX_YAML_INT_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"the number {text[:24]}... is too long",
                                                    node.start_mark)
        value: int = super().construct_yaml_int(node)
        if not -2**63 <= value < 2**63:
            raise yaml.constructor.ConstructorError(None, None, f"the number {text} does not fit in 64 bits",
                                                    node.start_mark)
        return value


HostileYAMLLoader.add_constructor("tag:yaml.org,2002:int", HostileYAMLLoader.construct_yaml_int)


def _check_graph(root: Any) -> None:
    """_check_graph walks a composed document (without recursion) and refuses aliases and deep nesting.

    The Python composer (HostileYAMLLoader.compose_node) refuses both as it
    goes; libyaml's composer does not call it, so its node graph is checked
    here before anything is constructed: a node reached twice is an alias
    (an anchor used again, or a cycle), a collection deeper than
    MAX_YAML_DEPTH is refused.
    """
    seen: set[int] = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", node.start_mark)
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            continue
        if depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"it nests deeper than {MAX_YAML_DEPTH} levels",
                                              node.start_mark)
        if isinstance(node, yaml.MappingNode):
            stack.extend((n, depth + 1) for pair in node.value for n in pair)
        else:
            stack.extend((n, depth + 1) for n in node.value)


_CParser: Any = getattr(importlib.import_module("yaml.cyaml") if yaml.__with_libyaml__ else None, "CParser", None)
if _CParser is not None:
    class HostileCYAMLLoader(_CParser, HostileYAMLLoader):  # type: ignore[misc]  # libyaml has no types
        """HostileCYAMLLoader is HostileYAMLLoader's constructor on libyaml's parser and composer (10x faster).

        libyaml refuses nesting past 1000 levels itself; load_yaml checks the
        composed graph (_check_graph) for aliases and MAX_YAML_DEPTH before
        constructing, and the constructor's checks are HostileYAMLLoader's.
        """

        def __init__(self, stream: Any) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._depth = 0

    _LOADER: type[Any] = HostileCYAMLLoader
else:  # pragma: no cover (PyYAML built without libyaml)
    _LOADER = HostileYAMLLoader


def load_yaml(text: str | bytes) -> Any:
    """load_yaml parses YAML from others (snap.yaml, seed.yaml, a snap store's files); its errors are yaml.YAMLError.

    libyaml parses when PyYAML has it; either way aliases, merge keys, a key
    given twice, nesting past MAX_YAML_DEPTH and integers past 64 bits are
    refused (HostileYAMLLoader).
    """
    loader = _LOADER(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            if "maximum nesting depth" not in str(e.problem):
                raise
            # libyaml's own bound (1000 levels) came first: said as the Python loader says it.
            raise yaml.composer.ComposerError(None, None, f"it nests deeper than {MAX_YAML_DEPTH} levels",
                                              e.problem_mark) from None
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
