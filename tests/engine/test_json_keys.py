# SPDX-License-Identifier: GPL-3.0-or-later
"""JSON values: a non-str dict key is refused at any depth and any size; what is read back is what was set.

The key check and the encoding are one walk: there is no budget past which
the encoder would silently turn 1 or None keys into strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from engine import State
from engine._values import dump_value

BEYOND = 101_000  # containers before the bad key: more than the old check's budget (100,000)


def _wide(bad: dict[Any, Any]) -> list[Any]:
    return [bad] + [{} for _ in range(BEYOND)]  # (the old check went from the end)


def _deep_in_dicts(bad: dict[Any, Any]) -> dict[str, Any]:
    return {"first": {"inner": bad}} | {f"k{i}": [i] for i in range(BEYOND)}


@pytest.mark.parametrize(("shape", "key", "owner"), [
    ("wide", 1, "state"), ("wide", None, "task"), ("deep", True, "change"), ("deep", 2.5, "state")])
def test_a_non_str_key_past_any_number_of_containers_is_refused(
        file_st: State, shape: str, key: Any, owner: str) -> None:
    value = _wide({key: "x"}) if shape == "wide" else _deep_in_dicts({key: "x"})
    where = "$[0]" if shape == "wide" else "$.first.inner"
    with file_st:
        chg = file_st.new_change("c", "holds values")
        t = file_st.new_task("k", "t")
        chg.add_task(t)
        target = {"state": file_st, "change": chg, "task": t}[owner]
        with pytest.raises(TypeError) as info:
            target.set("v", value)  # type: ignore[attr-defined]
        message = str(info.value)
        assert f"dict key {key!r} at {where}" in message and "must be str" in message, message
        assert "\n" not in message
        assert target.get("v", None) is None  # type: ignore[attr-defined]


def test_what_is_read_back_equals_what_was_set_whatever_its_size(db_path: Path) -> None:
    value = {"many": [{"i": i, "l": [None, {"s": f"é{i}"}]} for i in range(BEYOND // 10)],
             "flat": {f"k{i}": i for i in range(BEYOND)}, "surrogate": "caf\udce9"}
    st = State.open(db_path)
    try:
        with st:
            st.set("v", value)
    finally:
        st.close()
    st = State.open(db_path, read_only=True)
    try:
        with st:
            assert st.get("v") == value
    finally:
        st.close()


_leaves = hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False, allow_infinity=False) | hs.text()
_json = hs.recursive(_leaves, lambda kids: hs.lists(kids, max_size=20) | hs.dictionaries(hs.text(), kids, max_size=20),
                     max_leaves=60)
_bad_key = hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(_json)
def test_values_are_encoded_as_the_json_encoder_does(value: Any) -> None:
    text = dump_value("k", value)
    assert json.loads(text) == value
    try:
        expected = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        expected.encode("utf-8")
    except UnicodeEncodeError:
        expected = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=True)
    assert text == expected


@settings(max_examples=40, deadline=None)
@given(_json, _bad_key, hs.randoms(use_true_random=False))
def test_a_non_str_key_anywhere_is_refused(value: Any, key: Any, rnd: Any) -> None:
    # Put the bad key in a random dict of the value (or wrap the value in one).
    dicts: list[dict[Any, Any]] = []

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            dicts.append(v)
            for x in v.values():
                collect(x)
        elif isinstance(v, list):
            for x in v:
                collect(x)

    collect(value)
    if dicts:
        rnd.choice(dicts)[key] = "bad"
    else:
        value = [value, {key: "bad"}]
    with pytest.raises(TypeError, match="JSON object keys must be str"):
        dump_value("k", value)
