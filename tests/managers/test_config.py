# SPDX-License-Identifier: GPL-3.0-or-later
"""The configuration Transaction (snapd's config.Transaction semantics) and the system options' checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine import State
from managers.configstate import Transaction, check_system, check_timer, parse_key, snap_config
from managers.errors import ConfigError, NoOptionError

MISSING = object()


@pytest.fixture
def st() -> Iterator[State]:
    s = State.open()
    yield s
    s.close()


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# Each scenario is a list of steps, after snapd's transaction_test.go:
#   set k=v ...      set through the transaction ("!" after it: the error it must raise)
#   setunder k=v     write the state directly, as another transaction would have committed
#   get k=v          read through the transaction ("-": no such option)
#   getunder k=v     read what the state holds
#   changes a b      the transaction's changes
#   commit
SCENARIOS: dict[str, list[str]] = {
    "basics": [
        "get foo=-", "set one=1 two=2", "setunder three=3", "get one=1 two=2 three=-", "getunder one=- three=3",
        "changes core.one core.two", "commit", "getunder one=1 two=2 three=3", "set two=22 four=4",
        "get one=1 two=22 four=4", "getunder two=2 four=-", "commit", "getunder two=22 four=4",
    ],
    "null via a dotted path": [
        'set doc={"one":1,"two":2}', "commit", "set doc.one=null", "changes core.doc.one", 'get doc={"two":2}',
        'getunder doc={"one":1,"two":2}', "commit", 'getunder doc={"two":2}',
    ],
    "null in a document leaves it empty": [
        'set doc={"one":{"three":3},"two":2}', "set doc.one.three=null", "changes core.doc.one.three core.doc.two",
        'get doc={"one":{},"two":2}', "commit", 'getunder doc={"one":{},"two":2}',
    ],
    "nulls nested in a document are never stored": [
        'set doc={"one":{"three":null,"two":2}}', 'get doc={"one":{"two":2}}', "commit",
        'getunder doc={"one":{"two":2}}',
    ],
    "unsetting everything leaves no configuration": [
        'set doc="foo"', "set doc=null", "changes core.doc", "commit", "get doc=-",
    ],
    "null through a path that does not exist": [
        "set foo=bar", "commit", "set x.y.z=null", "commit", "get x.y.z=-", "getunder foo=bar",
    ],
    "unset, then set back under the same path": [
        "set doc.x.a=1", "commit", "set doc.x=null", "get doc={}", "set doc.x.a=3", 'get doc={"x":{"a":3}}', "commit",
        'getunder doc={"x":{"a":3}}',
    ],
    "a sub-key set keeps its siblings": [
        'set one={"two":2,"three":3}', "commit", "set one.two=0", 'get one={"two":0,"three":3}', "changes core.one.two",
        "commit", 'getunder one={"two":0,"three":3}',
    ],
    "nested changes merge with what others committed": [
        "set one.two.three=3", "set one.five=5", 'setunder one={"two":{"four":4}}',
        'get one={"two":{"three":3},"five":5}', "commit", 'getunder one={"two":{"three":3,"four":4},"five":5}',
    ],
    "a replaced document replaces what others committed": [
        'set one={"two":{"three":3}}', "set one.five=5", 'setunder one={"two":{"four":4},"six":6}', "commit",
        'getunder one={"two":{"three":3},"five":5}',
    ],
    "a scalar is not a document": [
        "set one.two=2", "set one.two.three=3 !is not a map", "get one.two.three=3 !is not a map", "commit",
        "set one.two.three=3 !is not a map", 'get one={"two":2}',
    ],
    "a scalar others committed may be replaced": [
        'setunder one={"two":2}', "set one.two.three=3", "commit", 'getunder one={"two":{"three":3}}',
    ],
    "bad option names": [
        "set BAD=1 !invalid option name", "set 42=1 !invalid option name", "set .bad=1 !invalid option name",
        "set bad..bad=1 !invalid option name", "set one.bad--bad=1 !invalid option name",
        "set one.-bad=1 !invalid option name", "set one.bad-=1 !invalid option name",
    ],
}


def _pairs(step: str) -> tuple[list[tuple[str, Any]], str | None]:
    words = step.split(" ")[1:]
    error = None
    bang = next((i for i, w in enumerate(words) if w.startswith("!")), None)
    if bang is not None:
        error = " ".join(words[bang:])[1:]
        words = words[:bang]
    out = []
    for w in words:
        k, _, v = w.partition("=")
        out.append((k, MISSING if v == "-" else _value(v)))
    return out, error


def _under(st: State) -> dict[str, Any]:
    return dict(st.get("config", {}).get("core", {}))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_transaction(st: State, name: str) -> None:
    with st:
        tr = Transaction(st)
        for step in SCENARIOS[name]:
            op = step.split(" ")[0]
            pairs, error = _pairs(step)
            if op == "commit":
                tr.commit()
            elif op == "changes":
                assert tr.changes() == step.split(" ")[1:], step
            elif op == "set":
                for k, v in pairs:
                    if error:
                        with pytest.raises(ConfigError, match=error):
                            tr.set("core", k, v)
                    else:
                        tr.set("core", k, v)
            elif op == "setunder":
                config = dict(st.get("config", {}))
                doc = dict(config.get("core", {}))
                doc.update(dict(pairs))
                config["core"] = doc
                st.set("config", config)
            elif op == "get":
                for k, v in pairs:
                    if error:
                        with pytest.raises(ConfigError, match=error):
                            tr.get("core", k)
                    elif v is MISSING:
                        with pytest.raises(NoOptionError, match=f"snap 'core' has no '{k}' configuration option"):
                            tr.get("core", k)
                    else:
                        assert tr.get("core", k) == v, step
            elif op == "getunder":
                under = _under(st)
                for k, v in pairs:
                    assert under.get(k, MISSING) == v, step
            else:
                raise AssertionError(f"unknown step {step!r}")


def test_reads_of_the_whole_document_and_of_nothing(st: State) -> None:
    with st:
        tr = Transaction(st)
        with pytest.raises(NoOptionError, match="snap 'core' has no configuration"):
            tr.get("core")
        tr.set("core", "a.b", [1, "x", None])
        assert tr.get("core") == {"a": {"b": [1, "x", None]}}  # nulls inside lists are values
        with pytest.raises(NoOptionError):
            snap_config(st, "core")  # not committed yet
        tr.commit()
        assert snap_config(st, "core", "a.b") == [1, "x", None]
        got = snap_config(st, "core")
        got["a"]["b"].append(2)  # a private copy: the state is untouched
        assert snap_config(st, "core", "a.b") == [1, "x", None]
        with pytest.raises(ConfigError, match="name an option"):
            tr.set("core", "", 1)


def test_values_must_be_json(st: State) -> None:
    with st:
        tr = Transaction(st)
        for bad in (float("nan"), {1: "x"}, object(), {"a": {2: 1}}):
            with pytest.raises(ConfigError, match="cannot set option 'k'"):
                tr.set("core", "k", bad)
        deep: Any = 1
        for _ in range(40):
            deep = [deep]
        with pytest.raises(ConfigError, match="nests deeper"):
            tr.set("core", "k", deep)
        assert tr.changes() == []


def test_parse_key() -> None:
    assert parse_key("") == []
    assert parse_key("a.b-c.d9") == ["a", "b-c", "d9"]
    for bad in ("A", "a..b", "a.", "9", "a_b", "a b"):
        with pytest.raises(ConfigError):
            parse_key(bad)


@pytest.mark.parametrize("timer", ["4:00-7:00", "mon,10:00,,fri,15:00", "mon-fri,9:00~11:00", "sat,23:59",
                                   "9:00-17:00/4", "fri-mon,4:00"])
def test_good_timers(timer: str) -> None:
    assert check_timer(timer) is None


# Numbered weekdays (sat5: the fifth Saturday) are snapd's but not the auto-refresh's: refused where they are set.
@pytest.mark.parametrize("timer", ["", "4:00-", "25:00", "10:61", "mon,,", "someday", "9:00-11:00/0", 5, "mon6",
                                   "sat5,23:59", "mon1-fri2"])
def test_bad_timers(timer: Any) -> None:
    assert check_timer(timer) is not None


def test_system_options() -> None:
    values = {"refresh.timer": "4:00-7:00", "refresh.hold": "forever", "refresh.retain": 3}
    check_system(values, values.get)
    check_system(["refresh.timer"], lambda k: None)  # unsetting is always allowed
    check_system(["refresh"], lambda k: None)  # so is unsetting the whole document
    check_system(["refresh"], lambda k: {})
    for key, value, problem in [("refresh.hold", "2030-01-01T00:00:00", "no time zone"),
                                ("refresh.hold", "tomorrow", "RFC 3339"), ("refresh.retain", 1, "from 2 to 20"),
                                ("refresh.retain", True, "from 2 to 20"),
                                ("refresh.timer", "x", "is not a valid weekday"),
                                ("refresh.timer", "00:00~24:00/99999999999", "1440 minutes has at most 1440 slots"),
                                ("refresh.colour", "red", "not a system option"),
                                ("refresh", 5, "must be a document of the options refresh.hold")]:
        with pytest.raises(ConfigError, match=problem):
            check_system([key], lambda k, v=value: v)
