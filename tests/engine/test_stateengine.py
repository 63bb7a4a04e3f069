# SPDX-License-Identifier: GPL-3.0-or-later
"""StateEngine, after snapd's overlord/stateengine_test.go."""

from __future__ import annotations

import pytest

from engine import EngineError, EnsureError, State, StateEngine


class FakeManager:
    """FakeManager records its calls in a shared list; it may fail start_up or ensure."""

    def __init__(self, name: str, calls: list[str], *, ensure_error: Exception | None = None,
                 startup_error: Exception | None = None) -> None:
        self.name = name
        self.calls = calls
        self.ensure_error = ensure_error
        self.startup_error = startup_error

    def start_up(self) -> None:
        self.calls.append(f"startup:{self.name}")
        if self.startup_error is not None:
            raise self.startup_error

    def ensure(self) -> None:
        self.calls.append(f"ensure:{self.name}")
        if self.ensure_error is not None:
            raise self.ensure_error

    def wait(self) -> None:
        self.calls.append(f"wait:{self.name}")

    def stop(self) -> None:
        self.calls.append(f"stop:{self.name}")


class PlainManager:
    """PlainManager has no start_up: it is optional."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def ensure(self) -> None:
        self.calls.append(f"ensure:{self.name}")

    def wait(self) -> None:
        self.calls.append(f"wait:{self.name}")

    def stop(self) -> None:
        self.calls.append(f"stop:{self.name}")


def engine_with(st: State, *managers: object) -> StateEngine:
    se = StateEngine(st)
    for m in managers:
        se.add_manager(m)  # type: ignore[arg-type]
    return se


def test_new_and_state(st: State) -> None:
    se = StateEngine(st)
    assert se.state is st


def test_start_up(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls), PlainManager("plain", calls), FakeManager("mgr2", calls))
    se.start_up()
    assert calls == ["startup:mgr1", "startup:mgr2"]
    se.start_up()  # a no-op the second time
    assert calls == ["startup:mgr1", "startup:mgr2"]


def test_start_up_error(st: State) -> None:
    calls: list[str] = []
    err1, err2 = RuntimeError("boom1"), RuntimeError("boom2")
    se = engine_with(st, FakeManager("mgr1", calls, startup_error=err1),
                     FakeManager("mgr2", calls, startup_error=err2))
    with pytest.raises(EnsureError) as info:
        se.start_up()
    assert info.value.errors == [err1, err2]
    assert "boom1" in str(info.value)
    assert "boom2" in str(info.value)
    assert str(info.value).index("boom1") < str(info.value).index("boom2")
    assert calls == ["startup:mgr1", "startup:mgr2"]


def test_ensure_before_start_up_errors(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls), FakeManager("mgr2", calls))
    with pytest.raises(EngineError):
        se.ensure()
    assert calls == []


def test_ensure(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls), PlainManager("plain", calls), FakeManager("mgr2", calls))
    se.start_up()
    calls.clear()
    se.ensure()
    assert calls == ["ensure:mgr1", "ensure:plain", "ensure:mgr2"]
    se.ensure()
    assert calls == ["ensure:mgr1", "ensure:plain", "ensure:mgr2"] * 2


def test_ensure_error(st: State, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    err1, err3 = RuntimeError("boom1"), ValueError("boom3")
    se = engine_with(st, FakeManager("mgr1", calls, ensure_error=err1), FakeManager("mgr2", calls),
                     FakeManager("mgr3", calls, ensure_error=err3))
    se.start_up()
    calls.clear()
    with pytest.raises(EnsureError) as info:
        se.ensure()
    # Every manager ran, though the first one failed; the error lists every failure.
    assert calls == ["ensure:mgr1", "ensure:mgr2", "ensure:mgr3"]
    assert info.value.errors == [err1, err3]
    text = str(info.value)
    assert "boom1" in text and "boom3" in text
    assert isinstance(info.value, EngineError)
    # The log names each failing manager by its class, not by an object address.
    warned = [r.getMessage() for r in caplog.records if r.name == "engine.stateengine"]
    assert warned == ["state ensure error in FakeManager: boom1", "state ensure error in FakeManager: boom3"]


def test_wait(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls), PlainManager("plain", calls))
    se.start_up()
    calls.clear()
    se.wait()
    assert calls == ["wait:mgr1", "wait:plain"]


def test_stop(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls), FakeManager("mgr2", calls))
    se.start_up()
    calls.clear()
    se.stop()
    assert calls == ["stop:mgr1", "stop:mgr2"]
    se.stop()  # once only
    assert calls == ["stop:mgr1", "stop:mgr2"]
    with pytest.raises(EngineError):
        se.ensure()
    assert calls == ["stop:mgr1", "stop:mgr2"]


def test_stop_calls_every_manager_even_when_one_fails(st: State) -> None:
    calls: list[str] = []

    class Failing(FakeManager):
        def stop(self) -> None:
            super().stop()
            raise RuntimeError("cannot stop")

    se = engine_with(st, Failing("mgr1", calls), FakeManager("mgr2", calls))
    se.start_up()
    calls.clear()
    se.stop()
    assert calls == ["stop:mgr1", "stop:mgr2"]


def test_add_manager_appends(st: State) -> None:
    calls: list[str] = []
    se = engine_with(st, FakeManager("mgr1", calls))
    se.start_up()
    se.add_manager(PlainManager("late", calls))
    calls.clear()
    se.ensure()
    assert calls == ["ensure:mgr1", "ensure:late"]


def test_a_manager_needs_only_ensure(st: State) -> None:
    """start_up, wait and stop are optional, as snapd's StateStarterUp, StateWaiter and StateStopper are."""
    calls: list[str] = []

    class EnsureOnly:
        def ensure(self) -> None:
            calls.append("ensure")

    se = StateEngine(st)
    se.add_manager(EnsureOnly())
    se.start_up()
    se.ensure()
    se.wait()
    se.stop()
    assert calls == ["ensure"]
    with pytest.raises(TypeError, match="it has no ensure"):
        se.add_manager(object())  # type: ignore[arg-type]

    class BadStop(EnsureOnly):
        stop = "later"

    with pytest.raises(TypeError, match="its stop is not a method"):
        se.add_manager(BadStop())
