# SPDX-License-Identifier: GPL-3.0-or-later
"""The spans of task runs encoded as OTLP protobuf straight from the rows, for the SDK's OTLP/HTTP exporter to send.

Loaded by its path by the tracing helper (engine/_otelrows.py), like
engine/_otelspans.py: it imports nothing of the engine, only the standard
library and OpenTelemetry (the SDK, opentelemetry-proto and the OTLP
exporter's common encoder).

The OTLP exporter's encoder (encode_spans) builds a protobuf object per
span, per attribute and per attribute's value: some 30 us of CPU a span,
where a task run of W1 costs the engine some 60. A run's span differs from
its neighbours in a few fields (its span id, start, end, task id, and the
attempt, outcome and error that most runs share), so Encoder writes each
span's bytes from pieces made once (by the protobuf classes of
opentelemetry-proto: a change's trace and parent, a kind's name, each
attribute's key and value) and the few that vary, in protobuf's wire
format: a few us a span. The resource's and the scope's part of a request
is the SDK encoder's own, made once; the change spans (one a change) are
the SDK encoder's, as they were. What it writes is checked against the
SDK's encoder when the helper starts (check): where they differ (another
version of the SDK or of OTLP), the helper makes ReadableSpans and hands
them to the SDK's batch processor as before.

Request wraps the spans' bytes as an ExportTraceServiceRequest and hands it
to the exporter's own export (its request size limit, retries, compression,
headers and metrics): the exporter's encode_spans, looked up by its export
at each call, is wrapped so that it hands back a request already encoded
(Encoded) and encodes anything else as before (install).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

#: How many spans an export request holds at most, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says (a request costs
#: the exporter about 1.5 ms of CPU whatever its size: 3 us a span in requests of the SDK's 512).
REQUEST_SPANS = 4096

_SPAN_ID = struct.Struct(">BBQ").pack  # field 2 (span_id), 8 bytes, big-endian as the SDK's _encode_span_id
_TIMES = struct.Struct("<BQBQ").pack  # fields 7 and 8 (start and end, fixed64)
_UNSET = PbStatus().SerializeToString()  # (empty: the SDK encodes an unset status as an empty Status)


def varint(n: int) -> bytes:
    """varint is n in protobuf's base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """_field is a length-delimited field (a message, string or bytes) of payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _attribute(key: str, value: Any) -> bytes:
    """_attribute is a span's attribute (field 9), encoded by opentelemetry-proto as the SDK's encoder makes it."""
    any_value = AnyValue(int_value=value) if type(value) is int else AnyValue(string_value=value)
    return _field(9, KeyValue(key=key, value=any_value).SerializeToString())


class Encoder:
    """Encoder writes the spans of task runs as the OTLP exporter's encoder would write them, from parts made once.

    runs makes the spans' bytes (each a Span field of a ScopeSpans), with
    the change spans of engine._otelspans.Spans (their trace id, span id,
    spawn time, sampled flag); request wraps spans' bytes as a request.
    """

    def __init__(self, spans: Any) -> None:
        self._spans = spans
        resource, scope, self._bits = spans.parts
        # The request's head: the resource and scope as the SDK's encoder writes them (from a request of one span
        # with the spans left out), and the span's fields it writes the same for every run.
        req = encode_spans([_sample(resource, scope)])
        (rs,) = req.resource_spans
        (ss,) = rs.scope_spans
        del ss.spans[:]
        self._scope = ss.SerializeToString()
        del rs.scope_spans[:]
        self._resource = rs.SerializeToString()
        self._kind = varint(6 << 3) + varint(PbSpan.SpanKind.SPAN_KIND_INTERNAL)
        self._flags = varint(16 << 3 | 5) + struct.pack("<I", PbSpan.SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
                                                       if hasattr(PbSpan, "SpanFlags") else 0x100)
        self._roots: dict[int, tuple[Any, bytes]] = {}  # a change's id: (its root, its runs' shared fields)
        self._tids: dict[int, bytes] = {}  # the task id attribute's head, by the id's length
        # The fields after the task id, the same for the runs of a kind, phase, attempt, outcome and error in a change.
        self._tails: dict[tuple[Any, ...], bytes] = {}

    def runs(self, runs: Sequence[Any]) -> list[bytes]:
        """runs are the spans' bytes of runs (engine._otelspans.Run; the helper's: start in microseconds), those of
        changes whose span is sampled."""
        out = []
        spans, roots, bits, times, span_id = self._spans, self._roots, self._bits, _TIMES, _SPAN_ID
        tids, tails = self._tids, self._tails
        for tid, phase, attempt, outcome, start_us, elapsed, (kind, error, change) in runs:
            cid = change[0]
            root = spans.root(change)
            got = roots.get(cid)
            if got is None or got[0] is not root:
                got = roots[cid] = (root, self._change(root))
                if len(roots) > 4096:
                    del roots[next(iter(roots))]
            if not (root.valid and root.sampled):
                continue  # the change's span is not recording, nor are its runs
            if change[4] is not None:
                spans.end_root(cid, *change[4])
            start = start_us * 1000
            if start < root.spawn:
                start = root.spawn  # within its change's span (a clock that stood still)
            ident = bits(64) or bits(64) or 1  # the SDK's RandomIdGenerator's (it draws again for a 0)
            text = str(tid).encode()
            head = tids.get(len(text)) or self._tid_head(len(text))
            shared = (kind, phase, attempt, outcome, error, root.cid)
            body = b"".join((got[1], span_id(0x12, 8, ident), times(0x39, start, 0x41, start + int(elapsed * 1e9)),
                             head, text, tails.get(shared) or self._tail(shared)))
            n = len(body)
            out.append((bytes((0x12, n)) if n < 0x80 else bytes((0x12, n & 0x7F | 0x80, n >> 7)) if n < 0x4000
                        else b"\x12" + varint(n)) + body)
        return out

    def request(self, spans: list[bytes]) -> bytes:
        """request is an ExportTraceServiceRequest of spans (Span fields of a ScopeSpans), with the resource and
        scope of the helper's provider."""
        scope = self._scope + b"".join(spans)
        resource = self._resource + _field(2, scope)
        return _field(1, resource)

    def ended(self, readable: Sequence[Any]) -> list[bytes]:
        """ended are the bytes of SDK spans (ReadableSpans: the change spans), encoded by the SDK's encoder."""
        return [_field(2, span.SerializeToString()) for rs in encode_spans(readable).resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def _change(self, root: Any) -> bytes:
        """_change is what each span of a change's runs has the same: its trace id, its parent, its kind, flags."""
        parent = root.span_context.span_id
        return (_field(1, root.trace_id.to_bytes(16, "big")) + _field(4, parent.to_bytes(8, "big"))
                + self._kind + self._flags)

    def _tail(self, shared: tuple[Any, ...]) -> bytes:
        """_tail is a run's name, attributes but its task id, and status, from (kind, phase, attempt, outcome,
        error, change id)."""
        kind, phase, attempt, outcome, error, cid = shared
        if len(self._tails) >= 16384:
            self._tails.clear()
        status = _UNSET if error is None else PbStatus(code=PbStatus.STATUS_CODE_ERROR,
                                                       message=error).SerializeToString()
        tail = self._tails[shared] = b"".join((
            _field(5, kind.encode()), _attribute("engine.task.kind", kind), _attribute("engine.task.phase", phase),
            _attribute("engine.task.attempt", attempt), _attribute("engine.task.outcome", outcome),
            _attribute("engine.change.id", cid), _field(15, status)))
        return tail

    def _tid_head(self, length: int) -> bytes:
        """_tid_head is the engine.task.id attribute, all but the id's text of that length."""
        whole = _attribute("engine.task.id", "0" * length)
        head = self._tids[length] = whole[:-length]
        return head


def _sample(resource: Any, scope: Any) -> Any:
    """_sample is a span with the resource and scope given (Encoder's request head is made from it)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    return ReadableSpan("sample", context=SpanContext(1, 1, is_remote=False), resource=resource,
                        instrumentation_scope=scope, start_time=1, end_time=2)


def agrees(encoder: Encoder, runs: Sequence[Any], readable: Sequence[Any]) -> bool:
    """agrees says whether encoder writes runs as the SDK's encoder writes readable (the ReadableSpans that
    engine._otelspans.Spans.make made of the same runs), but for their random span ids."""
    try:
        ours = ExportTraceServiceRequest.FromString(encoder.request(encoder.runs(runs)))
        theirs = encode_spans(readable)
        for request in (ours, theirs):
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if len(span.span_id) != 8 or not any(span.span_id):
                            return False
                        span.span_id = b""
        return bool(ours == theirs) and len(readable) == len(runs)
    except Exception:
        return False


class Encoded(Sequence[Any]):
    """Encoded is a request already encoded, handed to an exporter's export in place of its spans (install)."""

    def __init__(self, data: bytes, count: int) -> None:
        self.request = ExportTraceServiceRequest.FromString(data)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        raise IndexError("an encoded request has no spans to read")

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def install(exporter: Any) -> bool:
    """install has the SDK's OTLP/HTTP exporter's export take an Encoded request (its module's encode_spans, which
    export looks up at each call, wrapped); False where its export does not encode through it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if type(exporter) is not OTLPSpanExporter:
        return False
    module = sys.modules[OTLPSpanExporter.__module__]
    if "encode_spans" not in OTLPSpanExporter.export.__code__.co_names or not callable(
            getattr(module, "encode_spans", None)):
        return False
    original = module.encode_spans
    if getattr(original, "encoded", False):
        return True

    def encode(spans: Any) -> Any:
        return spans.request if type(spans) is Encoded else original(spans)

    encode.encoded = True  # type: ignore[attr-defined]
    setattr(module, "encode_spans", encode)  # noqa: B010 (a module's global: mypy knows no such attribute)
    return True
