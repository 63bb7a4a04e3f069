# SPDX-License-Identifier: GPL-3.0-or-later
"""The tracing helper writes the OTLP requests of the runs' spans itself (engine._otelwire), as the SDK's encoder
would, and sends them through the SDK's OTLP/HTTP exporter; where it cannot be sure of that, it makes ReadableSpans
for the SDK's batch processor as before."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord

pytest.importorskip("opentelemetry.sdk.trace", reason="the [otel] extra is not installed")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the OTLP exporter is not installed")
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.otlp import Receiver
from engine import _otelrows
from tests.support.helpers import run_noop_change


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """otlp_env: the standard variables of this process export to a receiver (and nothing else of OTEL_*)."""
    r = Receiver().start()
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-daemon")
    yield r
    r.stop()


def _traced(path: Path, tasks: int) -> str:
    """_traced runs a change of tasks no-op tasks traced from the variables; how the helper exported them."""
    o = Overlord(path)
    try:
        tracer = o.state._uow.timings.tracer
        run_noop_change(o, tasks)
        assert tracer.flush(60)
        how = tracer.helper_exports
    finally:
        o.stop()
        o.state.close()
    return how


def test_the_helper_sends_the_runs_spans_in_requests_of_its_own(tmp_path: Path, otlp_env: Receiver,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs' spans go in requests of at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans (4,096 unless set), the change's
    span with them: every span once, none lost."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "40")
    how = _traced(tmp_path / "state.db", 100)
    assert how == "requests"
    spans = otlp_env.spans()
    assert sorted(s["attributes"]["engine.task.id"] for s in spans if s["parent_span_id"]) == \
        sorted({s["attributes"]["engine.task.id"] for s in spans if s["parent_span_id"]})
    assert len(spans) == 101 and [s["name"] for s in spans if not s["parent_span_id"]] == ["install"]
    assert max(otlp_env.sizes) <= 40 and len(otlp_env.sizes) >= 3
    assert {s["resource"]["service.name"] for s in spans} == {"my-daemon"}


def test_span_limits_send_the_spans_through_the_sdks_batch_processor(tmp_path: Path, otlp_env: Receiver,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits that would cut a run's attributes: the helper makes ReadableSpans for the SDK, which applies them."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    how = _traced(tmp_path / "state.db", 3)
    assert how == "batches"
    spans = otlp_env.spans()
    assert sorted(s["attributes"]["engine.task.outcome"] for s in spans if s["parent_span_id"]) == ["done"] * 3
    (root,) = [s for s in spans if not s["parent_span_id"]]
    assert root["attributes"]["engine.change.summary"] == "Inst"


def _helper_parts(identity: str = "db") -> tuple[Any, Any, Any, Any]:
    """_helper_parts are the helper's own (engine/_otelrows.output): its provider, Spans, output, and _otelwire."""
    otelspans = _otelrows._load("_otelspans")
    provider, spans, out = _otelrows.output(otelspans, identity)
    return provider, spans, out, sys.modules.get("_otelwire")


def test_the_helpers_requests_are_what_the_sdks_encoder_writes(otlp_env: Receiver) -> None:
    """The runs of the helper's check (errors with and without a message, an undo, a retry, text beyond ASCII, a
    task id of 14 digits, a run that starts before its change), written by engine._otelwire, and by the SDK's
    encoder from the ReadableSpans the SDK's path makes of them: the same request, but for the random span ids."""
    provider, spans, out, wire = _helper_parts()
    assert isinstance(out, _otelrows.Requests)
    kept: list[Any] = []
    provider.add_span_processor(_otelrows._Ended(kept))
    runs = _otelrows._sample_runs()
    spans.make(runs)
    readable = [s for s in kept if s.parent is not None]
    encoder = wire.Encoder(spans)
    ours = ExportTraceServiceRequest.FromString(encoder.request(encoder.runs(runs)))
    theirs = encode_spans(readable)
    ids = []
    for request in (ours, theirs):
        for span in request.resource_spans[0].scope_spans[0].spans:
            ids.append(span.span_id)
            span.span_id = b""
    assert len(set(ids)) == 2 * len(runs) and all(len(i) == 8 for i in ids)
    assert ours == theirs
    errors = [(s.status.code, s.status.message) for s in ours.resource_spans[0].scope_spans[0].spans]
    assert errors == [(0, ""), (2, "disk on fire \u2603"), (0, ""), (2, ""), (0, "")]
    provider.shutdown()


def test_the_helper_uses_the_sdks_path_where_its_encoding_differs(otlp_env: Receiver,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK whose encoder writes a run's span otherwise (here: engine._otelwire made to write an unset status
    differently) is found out by the check when the helper starts: its spans go through the SDK's encoder."""
    load = _otelrows._load

    def changed(name: str) -> Any:
        module = load(name)
        if name == "_otelwire":
            module._UNSET = module.PbStatus(code=1).SerializeToString()
        return module

    monkeypatch.setattr(_otelrows, "_load", changed)
    provider, _, out, _ = _helper_parts()
    assert isinstance(out, _otelrows.Batches)
    provider.shutdown()
