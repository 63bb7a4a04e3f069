# SPDX-License-Identifier: GPL-3.0-or-later
"""OpenTelemetry, optional: each change a trace, each task run a span (engine.tracing), with the SDK's exporters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, Retry, Task, disable_tracing, enable_tracing, tracing_wanted
from engine.testing import FakeClock
from engine.tomb import Tomb
from tests.support.helpers import flaky_then_failing_change, run_noop_change

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the [otel] extra is not installed")
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import SpanLimits, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("env", "wanted"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_the_standard_variables_ask_for_traces(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted


def _traced(path: Path, clock: FakeClock | None = None, **provider_args: object) -> tuple[Overlord,
                                                                                          InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "my-daemon"}), **provider_args)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    o = Overlord(path / "state.db", clock=clock)
    enable_tracing(o.state, tracer_provider=provider)
    return o, exporter


@pytest.fixture
def traced(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Overlord, InMemorySpanExporter]]:
    o, exporter = _traced(tmp_path, clock)
    yield o, exporter
    o.stop()
    o.state.close()


@pytest.fixture(params=["in one loop", "one by one", "through start_span"])
def traced_by_each_path(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Overlord, InMemorySpanExporter]]:
    """traced_by_each_path is traced, the spans of runs made by each of the tracer's ways: the quick loop (the
    SDK as the tracer knows it), the fast path one run at a time, the SDK's start_span and end."""
    from engine import _otelspans

    if request.param == "one by one":
        monkeypatch.setattr(_otelspans, "_positional", lambda readable: False)
        monkeypatch.setattr(_otelspans, "_random_bits", lambda ids: None)
    elif request.param == "through start_span":
        monkeypatch.setattr(_otelspans._FastRuns, "of", classmethod(lambda cls, tracer: None))
    o, exporter = _traced(tmp_path, clock)
    spans = o.state._uow.timings.tracer.spans
    assert (spans.fast, spans.quick) == {
        "in one loop": (True, True), "one by one": (True, False), "through start_span": (False, False)}[request.param]
    yield o, exporter
    o.stop()
    o.state.close()


def test_each_change_is_a_trace_and_each_run_a_span(traced_by_each_path: tuple[Overlord, InMemorySpanExporter],
                                                    clock: FakeClock) -> None:
    o, exporter = traced_by_each_path
    cid, aid, bid = flaky_then_failing_change(o, clock.advance)
    disable_tracing(o.state)  # the spans are made on a thread of their own: what is left is made now
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "install"
    assert dict(root.attributes or {}) == {"engine.change.id": cid, "engine.change.kind": "install",
                                           "engine.change.summary": "Install foo", "engine.change.status": "Error"}
    assert root.status.status_code is StatusCode.ERROR
    runs_seen = [(s.name, dict(s.attributes or {})) for s in spans if s.parent is not None]
    assert runs_seen == [
        ("flaky", {"engine.task.id": aid, "engine.task.kind": "flaky", "engine.task.phase": "do",
                   "engine.task.attempt": 1, "engine.task.outcome": "retry", "engine.change.id": cid}),
        ("flaky", {"engine.task.id": aid, "engine.task.kind": "flaky", "engine.task.phase": "do",
                   "engine.task.attempt": 2, "engine.task.outcome": "done", "engine.change.id": cid}),
        ("fail", {"engine.task.id": bid, "engine.task.kind": "fail", "engine.task.phase": "do",
                  "engine.task.attempt": 1, "engine.task.outcome": "error", "engine.change.id": cid}),
        ("flaky", {"engine.task.id": aid, "engine.task.kind": "flaky", "engine.task.phase": "undo",
                   "engine.task.attempt": 2, "engine.task.outcome": "undone", "engine.change.id": cid}),
    ]
    for span in spans:
        assert span.kind is SpanKind.INTERNAL
        assert span.resource.attributes["service.name"] == "my-daemon"  # the provider's resource
        assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "engine"
        assert span.context is not None and root.context is not None
        assert span.context.trace_id == root.context.trace_id  # one trace
        assert span.context.trace_flags.sampled
        if span is not root:
            assert span.parent is not None and span.parent.span_id == root.context.span_id
            assert root.start_time is not None and root.end_time is not None
            assert span.start_time is not None and span.end_time is not None
            assert root.start_time <= span.start_time <= span.end_time
    (failed,) = [s for s in spans if s.name == "fail"]
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == "disk on fire"
    assert len({s.context.span_id for s in spans if s.context is not None}) == len(spans)


def test_a_flush_writes_the_runs_waiting_and_their_spans_are_made(traced: tuple[Overlord, InMemorySpanExporter]
                                                                  ) -> None:
    """In the engine's process the spans are made from the batches of runs the timings write (engine.timings); the
    tracer's flush commits the runs waiting for one (the State's clock stands still: no batch is due) and waits
    until their spans are handed to the SDK, tracing still on."""
    o, exporter = traced
    run_noop_change(o, 3)
    tracer = o.state._uow.timings.tracer
    assert tracer is not None
    assert [s.name for s in exporter.get_finished_spans()] == []  # waiting for their batch
    assert tracer.flush(30)
    assert not o.state._uow.timings.runs.held
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["install", "k", "k", "k"]
    assert o.state._uow.timings.tracer is tracer


def _run_change(o: Overlord, *kinds: str) -> None:
    for kind in kinds:
        o.task_runner.add_handler(kind, lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("install", "Install foo")
        for kind in kinds:
            chg.add_task(o.state.new_task(kind, kind))
    o.settle(30)
    disable_tracing(o.state)


class _Quiet(Sampler):
    """_Quiet samples every span but those named quiet."""

    def should_sample(self, parent_context: object, trace_id: int, name: str, kind: object = None,
                      attributes: object = None, links: object = None, trace_state: object = None) -> SamplingResult:
        return SamplingResult(Decision.DROP if name == "quiet" else Decision.RECORD_AND_SAMPLE,
                              attributes)  # type: ignore[arg-type]

    def get_description(self) -> str:
        return "quiet"


def test_the_providers_sampler_decides_for_each_run(tmp_path: Path) -> None:
    o, exporter = _traced(tmp_path, sampler=_Quiet())
    try:
        _run_change(o, "loud", "quiet")
    finally:
        o.stop()
        o.state.close()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["install", "loud"]


def test_the_providers_span_limits_hold_for_runs(tmp_path: Path) -> None:
    o, exporter = _traced(tmp_path, span_limits=SpanLimits(max_span_attribute_length=4))
    try:
        _run_change(o, "install-snap")
    finally:
        o.stop()
        o.state.close()
    (run,) = [s for s in exporter.get_finished_spans() if s.parent is not None]
    assert run.name == "install-snap"
    assert dict(run.attributes or {})["engine.task.kind"] == "inst"


def test_a_change_left_unready_is_ended_when_tracing_stops(traced: tuple[Overlord, InMemorySpanExporter]) -> None:
    o, exporter = traced

    def later(task: Task, tomb: Tomb) -> None:
        raise Retry(after=3600)

    o.task_runner.add_handler("later", later)
    with o.state:
        chg = o.state.new_change("wait", "Wait an hour")
        chg.add_task(o.state.new_task("later", "later"))
    o.settle(30)
    disable_tracing(o.state)  # the change is not ready: its span ends now
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["later", "wait"]
    assert (spans[1].attributes or {})["engine.change.status"] == "unfinished"
    disable_tracing(o.state)  # twice: nothing more


def _child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**base, **env}, timeout=120, cwd=REPO)


RUN_ONE = """
    import sys, tempfile
    from engine import Overlord
    with tempfile.TemporaryDirectory() as d:
        o = Overlord(d + "/state.db")
        o.task_runner.add_handler("k", lambda task, tomb: None)
        with o.state:
            chg = o.state.new_change("install", "Install foo")
            chg.add_task(o.state.new_task("k", "one"))
        o.settle(30)
        print("tracer:", type(o.state._uow.timings.tracer).__name__, file=sys.stderr)
        o.stop()
        o.state.close()
    print("otel loaded:", any(m.split(".")[0] == "opentelemetry" for m in sys.modules), file=sys.stderr)
    print("otel sdk loaded:", any(m.startswith(("opentelemetry.trace", "opentelemetry.sdk.")) for m in sys.modules),
          file=sys.stderr)
"""


def test_the_standard_variables_export_through_the_sdk() -> None:
    """OTEL_TRACES_EXPORTER=console: the SDK's console exporter prints the spans (JSON) as the overlord stops, in
    the helper process (its standard output is the engine's): the engine's process loads none of the SDK."""
    p = _child(RUN_ONE, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="my-daemon")
    assert p.returncode == 0, p.stderr
    assert "tracer: ProcessTracer" in p.stderr and "otel sdk loaded: False" in p.stderr
    decoder, text, spans = json.JSONDecoder(), p.stdout.strip(), []
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    assert sorted(s["name"] for s in spans) == ["install", "k"]
    assert all(s["resource"]["attributes"]["service.name"] == "my-daemon" for s in spans)
    (run,) = [s for s in spans if s["name"] == "k"]
    assert run["attributes"]["engine.task.outcome"] == "done" and run["attributes"]["engine.change.id"] == "1"


def test_the_standard_variables_set_the_sampler_and_the_span_limits() -> None:
    p = _child(RUN_ONE, OTEL_TRACES_EXPORTER="console", OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT="2")
    assert p.returncode == 0, p.stderr
    assert '"engine.task.outcome": "do"' in p.stdout and '"engine.change.kind": "in"' in p.stdout
    p = _child(RUN_ONE, OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER="always_off")
    assert p.returncode == 0, p.stderr
    assert "tracer: ProcessTracer" in p.stderr and p.stdout == ""


def test_without_the_variables_nothing_is_imported() -> None:
    p = _child(RUN_ONE)
    assert p.returncode == 0, p.stderr
    assert "tracer: NoneType" in p.stderr and "otel loaded: False" in p.stderr and p.stdout == ""


def test_without_the_extra_the_overlord_says_so_and_runs(tmp_path: Path) -> None:
    code = "import sys\nsys.modules['opentelemetry'] = None  # as if the [otel] extra were not installed\n"
    p = _child(code + textwrap.dedent(RUN_ONE), OTEL_TRACES_EXPORTER="otlp")
    assert p.returncode == 0, p.stderr
    assert "cannot trace: OpenTelemetry is not installed (opentelemetry is missing): " \
           "pip install 'overlord-engine[otel]'; going on without traces" in p.stderr



def test_enough_runs_handed_over_cut_the_gathering_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracing thread lets runs gather up to GATHER seconds, or until GATHER_RUNS were handed over."""
    import threading

    import engine.timings
    from engine import _otelnotes

    monkeypatch.setattr(_otelnotes, "GATHER", 600.0)
    monkeypatch.setattr(_otelnotes, "GATHER_RUNS", 3)
    monkeypatch.setattr(engine.timings, "BATCH_RUNS", 3)  # (the runs are handed over as their batch is written)
    got = threading.Event()

    class Counting(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            result = super().export(spans)
            if len([s for s in self.get_finished_spans() if s.parent is not None]) >= 3:
                got.set()
            return result

    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    o = Overlord(tmp_path / "state.db")
    try:
        enable_tracing(o.state, tracer_provider=provider)
        run_noop_change(o, 3)
        assert got.wait(30), "the runs' spans waited for GATHER"
    finally:
        o.stop()
        o.state.close()


def test_a_tracer_that_fails_never_fails_the_run(traced: tuple[Overlord, InMemorySpanExporter],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    o, _ = traced

    class Broken:
        notes = True

        def task_run(self, *args: object) -> None:  # (a run that failed)
            raise RuntimeError("exporter on fire")

        def batch(self, *args: object) -> None:  # (the runs a commit writes)
            raise RuntimeError("exporter on fire")

        def close(self) -> None:
            pass

    def bad(task: Task, tomb: Tomb) -> None:
        raise RuntimeError("no")

    disable_tracing(o.state)
    o.state._uow.timings.tracer = Broken()
    o.task_runner.add_handler("k", lambda task, tomb: None)
    o.task_runner.add_handler("bad", bad)
    with o.state:
        chg = o.state.new_change("install", "Install foo")
        chg.add_task(o.state.new_task("k", "one"))
        failing = o.state.new_change("install", "Install bar")
        failing.add_task(o.state.new_task("bad", "two"))
    o.settle(30)
    with o.state:
        o.state._uow.timings.write_all()  # the commit that writes their batch, with the tracer failing
    with o.state:
        assert chg.status.value == "Done" and failing.status.value == "Error"
        assert [t.outcome for t in chg.timings()] == ["done"]
        assert [t.outcome for t in failing.timings()] == ["error"]
        assert not o.state._uow.timings.runs.held  # written all the same
    assert "cannot trace the run of task 2 (bad): RuntimeError: exporter on fire" in caplog.text
    assert "cannot trace 2 runs: RuntimeError: exporter on fire" in caplog.text
