# SPDX-License-Identifier: GPL-3.0-or-later
"""The spans of task runs encoded as OTLP protobuf straight from the rows, for the SDK's OTLP/HTTP exporter to send.

Loaded by its path by the tracing helper (engine/_otelrows.py), like
engine/_otelspans.py: it imports nothing of the engine, only the standard
library and OpenTelemetry (the SDK, opentelemetry-proto and the OTLP
exporter's common encoder).

The OTLP exporter's encoder (encode_spans) builds a protobuf object per
span, per attribute and per attribute's value: some 30 us of CPU a span,
where a task run of W1 costs the engine some 60. A run's span differs from
its neighbours in a few fields (its span id, start, end and task id; the
kind, phase, attempt, outcome and error that most runs of a batch share), so
Encoder writes a batch's spans column by column (Encoder.batch): each span
is the join of seven pieces, in the order of their field numbers, as the
SDK's encoder serializes them: its length and trace id (made once per
change and length of the task id's text), its span id, its parent, name and
kind (once per change and kind), its start and end (struct, a batch at a
time), the task id attribute's head (once per length) and text, and the
other attributes, status and flags (once per kind, phase, attempt, outcome
and error): all of it made by maps over the batch's columns, in C, about
0.5 us a span. The pieces made once come from opentelemetry-proto's classes;
the resource's and the scope's part of a request is the SDK encoder's own,
made once; the change spans (one a change) are the SDK encoder's, as they
were. What it writes is checked byte for byte against the SDK's encoder
when the helper starts (agrees): where they differ (another version of the
SDK or of OTLP), the helper makes ReadableSpans and hands them to the SDK's
batch processor as before.

Request wraps the spans' bytes as an ExportTraceServiceRequest's bytes and
hands them to the exporter's own export (its request size limit, retries,
compression, headers and metrics): the exporter's encode_spans, looked up by
its export at each call, is wrapped so that it hands back, for a request
already encoded (Encoded), an object whose SerializePartialToString (all
that export asks of it) is those bytes, without a parse and a serialization
of the request (1 us a span); anything else it asks of it is the parsed
message's (Serialized), and anything else is encoded as before (install).
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import mul
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

#: How many spans an export request holds at most, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says (a request costs
#: the exporter about 1.5 ms of CPU whatever its size: 3 us a span in requests of the SDK's 512).
REQUEST_SPANS = 4096

_SPAN_ID = struct.Struct("<Q").pack  # a span id's 8 bytes (Encoder's ids: the int whose little-endian bytes they are)
_TIMES = struct.Struct("<BQBQ").pack  # fields 7 and 8 (start and end, fixed64)
_UNSET = PbStatus().SerializeToString()  # (empty: the SDK encodes an unset status as an empty Status)
_join = b"".join

#: A batch's runs as Encoder.batch takes them, column by column: task ids; kinds (one for all, or one a run);
#: phases, attempts, outcomes (each one for all, or one a run); starts (microseconds since the epoch); durations
#: (nanoseconds); errors (a run's index: its error's message, for the runs that failed).
Columns = tuple[list[int], "str | list[str]", Any, Any, Any, list[int], list[int], dict[int, str]]


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


def random_ids(n: int) -> list[int]:
    """random_ids are n span ids as the SDK's RandomIdGenerator draws them (64 random bits, drawn again for a 0), as
    Encoder takes them: the ints whose little-endian bytes are the ids (random bits either way)."""
    bits = random.getrandbits
    ids = list(map(bits, repeat(64, n)))
    while 0 in ids:
        ids[ids.index(0)] = bits(64)
    return ids


class Encoder:
    """Encoder writes the spans of task runs as the OTLP exporter's encoder would write them, from parts made once.

    batch makes the spans' bytes (each a Span field of a ScopeSpans) of a
    change's runs, with the change spans of engine._otelspans.Spans (their
    trace id, span id, spawn time, sampled flag); runs does it for runs one
    tuple each; request wraps spans' bytes as a request. ids draws the span
    ids (random_ids; the tests' own to compare bytes with the SDK's).
    """

    def __init__(self, spans: Any, ids: Callable[[int], list[int]] = random_ids) -> None:
        self._spans = spans
        self._ids = ids
        resource, scope, _ = spans.parts
        # The request's head and tail: the resource and scope as the SDK's encoder writes them (from a request of
        # one span), in field order around the spans (ResourceSpans: resource, scope_spans, schema_url; ScopeSpans:
        # scope, spans, schema_url).
        (rs,) = encode_spans([_sample(resource, scope)]).resource_spans
        (ss,) = rs.scope_spans
        self._scope = ScopeSpans(scope=ss.scope).SerializeToString() if ss.HasField("scope") else b""
        self._scope_tail = ScopeSpans(schema_url=ss.schema_url).SerializeToString()
        self._resource = ResourceSpans(resource=rs.resource).SerializeToString() if rs.HasField("resource") else b""
        self._resource_tail = ResourceSpans(schema_url=rs.schema_url).SerializeToString()
        self._kind = varint(6 << 3) + varint(PbSpan.SpanKind.SPAN_KIND_INTERNAL)
        self._flags = varint(16 << 3 | 5) + struct.pack("<I", PbSpan.SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
                                                       if hasattr(PbSpan, "SpanFlags") else 0x100)
        self._roots: dict[int, tuple[Any, bytes, bytes]] = {}  # a change's id: (its root, trace id (and state), parent)
        self._heads: dict[int, bytes] = {}  # the task id attribute's head, by the id's length
        # The fields after the task id, the same for the runs of a kind, phase, attempt, outcome and error in a change.
        self._tails: dict[tuple[Any, ...], bytes] = {}

    def batch(self, change: tuple[Any, ...], columns: Columns, texts: list[bytes] | None = None) -> list[bytes]:
        """batch is the spans' bytes of a change's runs (columns), if the change's span is sampled; texts, when
        given, are the task ids' text (the helper's: cut from the row's JSON, without an int's str per run)."""
        spans = self._spans
        cid = change[0]
        root = spans.root(change)
        got = self._roots.get(cid)
        if got is None or got[0] is not root:
            got = self._roots[cid] = self._change(root)
            if len(self._roots) > 4096:
                del self._roots[next(iter(self._roots))]
        if change[4] is not None:
            spans.end_root(cid, *change[4])
        if not (root.valid and root.sampled):
            return []  # the change's span is not recording, nor are its runs
        tids, kinds, phases, attempts, outcomes, starts_us, durations, errors = columns
        n = len(tids)
        if not n:
            return []
        _, trace, parent = got
        starts = list(map(mul, starts_us, repeat(1000, n)))
        spawn = root.spawn
        if min(starts) < spawn:
            starts = [spawn if s < spawn else s for s in starts]  # within its change's span (a clock that stood still)
        ends = map(int.__add__, starts, durations)
        if (texts is None or len(texts) != n or texts[0] != str(tids[0]).encode()
                or texts[-1] != str(tids[-1]).encode()):  # (a row written otherwise: the ids' text made here)
            texts = list(map(str.encode, map(str, tids)))
        lengths = list(map(len, texts))
        heads = self._heads
        for length in set(lengths).difference(heads):
            heads[length] = _attribute("engine.task.id", "0" * length)[:-length]
        uniform = not errors and all(type(c) is not list for c in (kinds, phases, attempts, outcomes))
        if uniform:  # (most batches: W1's, W2's)
            middle, tail = self._parts(parent, (kinds, phases, attempts, outcomes, None, root.cid))
            fixed = len(trace) + 10 + len(middle) + 18 + len(tail)
            firsts = {k: _span_head(fixed + len(heads[k]) + k) + trace + b"\x12\x08" for k in set(lengths)}
            # The span id, its parent, name and kind, its start and end: one struct.
            core = struct.Struct(f"<Q{len(middle)}sBQBQ").pack
            return list(map(_join, zip(map(firsts.__getitem__, lengths),
                                       map(core, self._ids(n), repeat(middle, n), repeat(0x39, n), starts,
                                           repeat(0x41, n), ends),
                                       map(heads.__getitem__, lengths), texts, repeat(tail, n), strict=True)))
        keys = list(zip(*(c if type(c) is list else repeat(c, n) for c in (kinds, phases, attempts, outcomes)),
                        (errors.get(i) for i in range(n)) if errors else repeat(None, n), repeat(root.cid, n),
                        strict=True))
        parts = {key: self._parts(parent, key) for key in set(keys)}
        fixed_of = {key: len(trace) + 10 + len(m) + 18 + len(t) for key, (m, t) in parts.items()}
        heads_of = {(k, key): _span_head(fixed_of[key] + len(heads[k]) + k) + trace + b"\x12\x08"
                    for k, key in set(zip(lengths, keys, strict=True))}
        return list(map(_join, zip(map(heads_of.__getitem__, zip(lengths, keys, strict=True)),
                                   map(_SPAN_ID, self._ids(n)), (parts[key][0] for key in keys),
                                   map(_TIMES, repeat(0x39, n), starts, repeat(0x41, n), ends),
                                   map(heads.__getitem__, lengths), texts, (parts[key][1] for key in keys),
                                   strict=True)))

    def runs(self, runs: Sequence[Any]) -> list[bytes]:
        """runs are the spans' bytes of runs (engine._otelspans.Run; the helper's: start in microseconds), those of
        changes whose span is sampled: batch, for each stretch of runs of one change."""
        out: list[bytes] = []
        i = 0
        while i < len(runs):
            change = runs[i][6][2]
            j = i + 1
            while j < len(runs) and runs[j][6][2] is change:
                j += 1
            part = runs[i:j]
            tids, phases, attempts, outcomes, starts, elapsed, noted = map(list, zip(*part, strict=True))
            durations = [int(e * 1e9) for e in elapsed]  # (as engine._otelspans.Spans.make ends a span)
            errors = {k: error for k, (_, error, _) in enumerate(noted) if error is not None}
            out += self.batch(change, (tids, [k for k, _, _ in noted], phases, attempts, outcomes, starts, durations,
                                       errors))
            i = j
        return out

    def request(self, spans: list[bytes]) -> bytes:
        """request is an ExportTraceServiceRequest of spans (Span fields of a ScopeSpans), with the resource and
        scope of the helper's provider."""
        scope = len(self._scope) + sum(map(len, spans)) + len(self._scope_tail)
        head = b"\x12" + varint(scope)  # (the lengths first: the spans' bytes are copied once, by one join)
        parts = [b"\x0a" + varint(len(self._resource) + len(head) + scope + len(self._resource_tail))
                 + self._resource + head + self._scope]
        parts += spans
        parts.append(self._scope_tail + self._resource_tail)
        return _join(parts)

    def ended(self, readable: Sequence[Any]) -> list[bytes]:
        """ended are the bytes of SDK spans (ReadableSpans: the change spans), encoded by the SDK's encoder."""
        return [_field(2, span.SerializeToString()) for rs in encode_spans(readable).resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def _change(self, root: Any) -> tuple[Any, bytes, bytes]:
        """_change is what each span of a change's runs has the same: its trace id (and trace state: field 3, after
        the span id, but written before it would be out of order; kept apart), its parent."""
        state = ",".join(f"{k}={v}" for k, v in root.state.items()) if root.state else ""
        trace = _field(1, root.trace_id.to_bytes(16, "big"))
        parent = _field(4, root.span_context.span_id.to_bytes(8, "big"))
        return root, trace, (_field(3, state.encode()) if state else b"") + parent

    def _parts(self, parent: bytes, key: tuple[Any, ...]) -> tuple[bytes, bytes]:
        """_parts are a run's fields between its span id and start (trace state, parent, name, kind), and those after
        its task id (its other attributes, status and flags), from (kind, phase, attempt, outcome, error, change
        id)."""
        tails = self._tails
        tail = tails.get(key)
        kind, phase, attempt, outcome, error, cid = key
        if tail is None:
            if len(tails) >= 16384:
                tails.clear()
            status = _UNSET if error is None else PbStatus(code=PbStatus.STATUS_CODE_ERROR,
                                                           message=error).SerializeToString()
            tail = tails[key] = _join((
                _attribute("engine.task.kind", kind), _attribute("engine.task.phase", phase),
                _attribute("engine.task.attempt", attempt), _attribute("engine.task.outcome", outcome),
                _attribute("engine.change.id", cid), _field(15, status), self._flags))
        name = _field(5, kind.encode()) if kind else b""  # (proto3: an empty name is not written)
        return _join((parent, name, self._kind)), tail


def _span_head(length: int) -> bytes:
    """_span_head is a Span field's tag and length, for a span of length bytes (its trace id follows)."""
    return b"\x12" + varint(length)


def _sample(resource: Any, scope: Any) -> Any:
    """_sample is a span with the resource and scope given (Encoder's request head is made from it)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    return ReadableSpan("sample", context=SpanContext(1, 1, is_remote=False), resource=resource,
                        instrumentation_scope=scope, start_time=1, end_time=2)


def agrees(spans: Any, runs: Sequence[Any], readable: Sequence[Any]) -> bool:
    """agrees says whether an Encoder of spans writes runs byte for byte as the SDK's encoder writes readable (the
    ReadableSpans that spans.make made of the same runs), given their span ids."""
    try:
        drawn = iter([int.from_bytes(span.context.span_id.to_bytes(8, "big"), "little") for span in readable])
        encoder = Encoder(spans, lambda n: [next(drawn) for _ in range(n)])
        ours = encoder.request(encoder.runs(runs))
        return ours == encode_spans(readable).SerializeToString() and len(readable) == len(runs)
    except Exception:
        return False


class Serialized:
    """Serialized is a request already encoded, as the exporter's export uses what encode_spans returns: its
    SerializePartialToString (and SerializeToString) are the bytes; anything else is the parsed message's."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._message: Any = None

    def SerializePartialToString(self, **_: Any) -> bytes:
        return self._data

    def SerializeToString(self, **_: Any) -> bytes:
        return self._data

    def ByteSize(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._message is None:
            self._message = ExportTraceServiceRequest.FromString(self._data)
        return getattr(self._message, name)


class Encoded(Sequence[Any]):
    """Encoded is a request already encoded, handed to an exporter's export in place of its spans (install)."""

    def __init__(self, data: bytes, count: int) -> None:
        #: encoded_request is the request, what install's encode_spans hands the exporter's export.
        self.encoded_request = Serialized(data)
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
        # (by its attribute, not its class: this module loaded again, by another helper's output, wraps nothing twice)
        request = getattr(spans, "encoded_request", None)
        return original(spans) if request is None else request

    encode.encoded = True  # type: ignore[attr-defined]
    setattr(module, "encode_spans", encode)  # noqa: B010 (a module's global: mypy knows no such attribute)
    return True


def settle(exporter: Any) -> bool:
    """settle has the requests session of the SDK's OTLP/HTTP exporter read the environment once, now, not at each
    request: with trust_env (the default), requests looks up the proxies (every variable of the environment), the
    CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) and ~/.netrc at every request, some 0.3 ms of CPU of the 1 ms a
    request costs the helper. The helper sends to one endpoint and its environment never changes: the same
    proxies, CA bundle and netrc credentials are set on the session, and trust_env turned off. False (nothing
    changed) where the exporter's session is not as this knows it."""
    try:
        import requests
    except ImportError:  # (an exporter whose transport is not requests')
        return False
    session = getattr(getattr(getattr(exporter, "_client", None), "_transport", None), "_session", None)
    url = getattr(exporter, "_endpoint", None)
    if type(session) is not requests.Session or not session.trust_env or not isinstance(url, str):
        return False
    settings = session.merge_environment_settings(url, {}, None, session.verify, None)
    auth = None if session.auth else requests.utils.get_netrc_auth(url)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    if auth:
        session.auth = auth
    session.trust_env = False
    return True
