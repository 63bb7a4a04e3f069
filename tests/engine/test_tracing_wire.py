# SPDX-License-Identifier: GPL-3.0-or-later
"""The tracing helper writes the OTLP requests of the runs' spans itself (engine._otelwire), as the SDK's encoder
would, and sends them through the SDK's OTLP/HTTP exporter; where it cannot be sure of that, it makes ReadableSpans
for the SDK's batch processor as before."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
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
from tests.support.helpers import flaky_then_failing_change, run_noop_change


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


_SPAWN = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
_US = int(_SPAWN.timestamp()) * 1_000_000


def _batch(name: str) -> tuple[Any, ...]:
    """_batch is a batch's runs as the helper reads them (Reader._columns): task ids, kinds, phases, attempts,
    outcomes (one for all, or one a run), starts (us), durations (ns), errors by index."""
    n = 300
    tids = list(range(1, n + 1))  # (task ids of 1 to 3 digits: spans of three lengths)
    starts = [_US + 1000 * i for i in range(n)]
    durations = [123_000 + i for i in range(n)]
    if name == "alike":
        return tids, "noop", "do", 1, "done", starts, durations, {}
    if name == "retries":
        attempts = [1 + i % 3 for i in range(n)]
        return tids, "flaky", "do", attempts, ["retry" if a < 3 else "done" for a in attempts], starts, durations, {}
    if name == "undo-errors":
        outcomes = ["done", "undone", "error", "error", "wait", "aborted"] * (n // 6)
        errors = {i: ("disk on fire \u2603" if i % 12 == 2 else "") for i in range(n) if outcomes[i] == "error"}
        errors[8] = "x" * 20_000  # (a span of more than 16 KB: a length of three bytes)
        return (tids, "fail", ["undo" if o == "undone" else "do" for o in outcomes], 1, outcomes, starts, durations,
                errors)
    if name == "unicode-kinds":
        kinds = ["f\u00e6il", "\u5b89\u88c5", "k" * 200, ""] * (n // 4)
        big = [98_765_432_101_234 + i for i in range(n)]  # (14 digits)
        return big, kinds, "do", 1, "done", starts, durations, {}
    assert name == "before-spawn"  # (a clock that stood still: the runs start at their change's spawn)
    return tids[:3], "noop", "do", 1, "done", [_US - 5, _US + 1, _US - 1_000_000], [0, 1, 2_500_000_000], {}


def _sdk_spans(spans: Any, change: tuple[Any, ...], columns: tuple[Any, ...], ids: list[int]) -> list[Any]:
    """_sdk_spans are the ReadableSpans of a batch's runs, made here field by field as the SDK's Tracer would."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

    tids, kinds, phases, attempts, outcomes, starts, durations, errors = columns
    n = len(tids)
    root = spans.root(change)
    resource, scope, _ = spans.parts
    out = []
    for i in range(n):
        kind, phase, attempt, outcome = (c[i] if type(c) is list else c for c in (kinds, phases, attempts, outcomes))
        start = max(starts[i] * 1000, root.spawn)
        error = errors.get(i)
        out.append(ReadableSpan(
            kind, context=SpanContext(root.trace_id, ids[i], is_remote=False, trace_flags=root.flags),
            parent=root.span_context, resource=resource,
            attributes={"engine.task.id": str(tids[i]), "engine.task.kind": kind, "engine.task.phase": phase,
                        "engine.task.attempt": attempt, "engine.task.outcome": outcome,
                        "engine.change.id": str(change[0])},
            kind=SpanKind.INTERNAL, status=Status(StatusCode.UNSET) if error is None else Status(StatusCode.ERROR,
                                                                                                 error or None),
            start_time=start, end_time=start + durations[i], instrumentation_scope=scope))
    return out


def _encoder(wire: Any, spans: Any, ids: list[int]) -> Any:
    """_encoder is the helper's Encoder drawing ids (as the SDK encodes them: big-endian) in turn."""
    drawn = iter([int.from_bytes(i.to_bytes(8, "big"), "little") for i in ids])
    return wire.Encoder(spans, lambda n: [next(drawn) for _ in range(n)])


@pytest.mark.parametrize("name", ["alike", "retries", "undo-errors", "unicode-kinds", "before-spawn"])
def test_a_batchs_spans_are_byte_for_byte_what_the_sdks_encoder_writes(otlp_env: Receiver, name: str) -> None:
    """engine._otelwire writes a batch's spans column by column; the request is, byte for byte, what the SDK's
    encoder writes of the ReadableSpans of the same runs made field by field (ids, times, the six attributes in
    order, status and its message, kind, flags, parent, the resource and scope): for runs alike, retries, undos
    and errors (with a message, without, of 20,000 characters), kinds beyond ASCII and 14-digit task ids, runs that
    start before their change."""
    provider, spans, out, wire = _helper_parts()
    assert isinstance(out, _otelrows.Requests)
    columns = _batch(name)
    change = (42, "install", "Install \u00e9t\u00e9", _SPAWN, None)
    ids = [random.getrandbits(64) | 1 for _ in columns[0]]
    ours = _encoder(wire, spans, ids)
    data = ours.request(ours.batch(change, columns))
    theirs = encode_spans(_sdk_spans(spans, change, columns, ids)).SerializeToString()
    assert data == theirs
    # And a field wrong is seen: the SDK's spans with one end a nanosecond off.
    off = _sdk_spans(spans, change, columns, ids)
    off[-1]._end_time += 1
    assert encode_spans(off).SerializeToString() != data
    provider.shutdown()


def test_an_encoded_request_is_sent_as_it_is(otlp_env: Receiver) -> None:
    """The exporter sends the request's bytes without a parse and a serialization (Serialized stands for the
    message: what export asks of it is its bytes); what the receiver decodes is the batch's spans."""
    provider, spans, out, wire = _helper_parts()
    columns = _batch("retries")
    change = (7, "install", "", _SPAWN, None)
    data = wire.Encoder(spans).request(wire.Encoder(spans).batch(change, columns))
    encoded = wire.Encoded(data, len(columns[0]))
    assert encoded.encoded_request.SerializePartialToString() is data
    assert len(encoded.encoded_request.resource_spans[0].scope_spans[0].spans) == len(columns[0])  # (parsed if asked)
    (exporter,) = out._exporters
    assert exporter.export(wire.Encoded(data, len(columns[0]))).name == "SUCCESS"
    got = otlp_env.spans()
    assert [s["attributes"]["engine.task.attempt"] for s in got] == columns[3]
    provider.shutdown()


def test_the_spans_of_an_engines_rows_are_what_the_sdks_encoder_writes(tmp_path: Path, otlp_env: Receiver) -> None:
    """The rows an engine wrote (a retry, an undo, an error), read by the helper (their kinds from the batch; from
    the tasks for a batch written before batches held them) and written by engine._otelwire: byte for byte the
    SDK's encoding of the runs the view task_timings shows."""
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setenv("OTEL_SDK_DISABLED", "true")  # (the engine untraced: its rows alone)
        o = Overlord(tmp_path / "state.db")
    try:
        assert o.state._uow.timings.tracer is None
        flaky_then_failing_change(o, lambda s: None)
        o.state._uow.timings.write_all()
        with o.state:
            o.state.set("a commit", "that writes the runs")
    finally:
        o.stop()
        o.state.close()
    db = sqlite3.connect(tmp_path / "state.db")
    view = db.execute("SELECT v.task_id, t.kind, v.phase, v.attempt, v.outcome, v.started, v.duration"
                      " FROM task_timings v JOIN tasks t ON t.id = v.task_id ORDER BY batch_id, seq").fetchall()
    (text,) = db.execute("SELECT runs FROM task_timing_batches").fetchone()
    assert "kind" in json.loads(text)
    db.close()
    assert [(r[1], r[2], r[4]) for r in view] == [("flaky", "do", "retry"), ("flaky", "do", "done"),
                                                 ("fail", "do", "error"), ("flaky", "undo", "undone")]
    provider, spans, out, wire = _helper_parts()
    rows = _otelrows.Rows({"sqlite": str(tmp_path / "state.db")})
    reader = _otelrows.Reader(rows, spans, out, 0, json.loads(text)["by"])
    ((_, change_id, runs, kind, summary, spawn),) = rows.batches(0)
    change = (change_id, kind, summary, _otelrows._time(spawn), None)
    for batch in (json.loads(runs), {k: v for k, v in json.loads(runs).items() if k != "kind"}):
        columns = reader._columns(batch)
        expected = (
            [r[0] for r in view], [r[1] for r in view], [r[2] for r in view], [r[3] for r in view],
            [r[4] for r in view],
            [int(_otelrows._time(r[5]).timestamp()) * 1_000_000 + _otelrows._time(r[5]).microsecond for r in view],
            [round(r[6] * 1e6) * 1000 for r in view], {2: "disk on fire"})
        theirs = encode_spans(_sdk_spans(spans, change, expected, ids := [random.getrandbits(64) | 1 for _ in view]))
        cut = _otelrows._id_texts(runs)
        assert cut is not None
        spaced = [cut[0], *(b" " + t for t in cut[1:])]  # (a row written with spaces: not taken)
        for texts in (None, cut, spaced):  # (the task ids' text from the int, or cut from the row)
            ours = _encoder(wire, spans, ids)
            assert ours.request(ours.batch(change, columns, texts)) == theirs.SerializeToString()
    assert _otelrows._id_texts(runs) == [str(r[0]).encode() for r in view]
    assert _otelrows._id_texts('{"since":1}') is None
    rows.close()
    provider.shutdown()


def test_the_exporters_session_reads_the_environment_once(otlp_env: Receiver, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper's exporter sends with the proxies, CA bundle and netrc credentials the environment gives its
    endpoint, read once when it starts (requests would read them at every request): the same settings."""
    import requests

    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector.invalid login me password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4318")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "elsewhere.invalid")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    provider, _, out, _ = _helper_parts()
    (exporter,) = out._exporters
    session = exporter._client._transport._session
    assert session.trust_env is False
    url = "http://collector.invalid:4318/v1/traces"
    assert session.proxies == requests.utils.get_environ_proxies(url) == {"http": "http://proxy.invalid:3128",
                                                                          "no": "elsewhere.invalid"}
    assert session.verify == str(tmp_path / "ca.pem")
    assert session.auth == ("me", "secret")
    provider.shutdown()
