# SPDX-License-Identifier: GPL-3.0-or-later
"""The spans of engine.tracing, made with the OpenTelemetry SDK (in the engine's process, or the tracing helper's).

This module imports nothing of the engine, only the standard library and
OpenTelemetry: the tracing helper (engine._otelrows, run by its path) loads
it by its path, a process that starts in about 0.3 s and 24 MB where one
importing the engine would take 1 s and 54 MB. engine._otel makes spans
with it in the engine's own process.

A change is a trace: its span starts when the change spawned and ends when
it became ready (opened at the first run of one of its tasks, ended by the
run that found it ready). Each run of a task's do or undo handler is a span
in it, from the handler's start to its end, with the task's kind, id,
phase, attempt, outcome and change id as attributes. Times are the State's
clock.

A run's span is already over when it is made, so with the SDK's own Tracer
it is made as what the SDK hands its span processors when a span ends (a
ReadableSpan: the provider's resource, sampler, id generator, span limits
and processors, as start_span would use them) and given to the processors'
on_end; that is under a quarter of what start_span and end cost, most of it
the checks of attributes the engine makes itself. Spans.make does it for
the runs in a change in one loop where the SDK is as this module knows it
(its default sampler and id generator, ReadableSpan's parameters), else
one run at a time. Span processors' on_start is not called for these spans
(they start and end at once); a change's span, one per change, goes through
start_span and end as usual. With another implementation of the API than
the SDK's, every span goes through start_span and end.

The tracing helper process (engine/_otelrows.py, run by its path) loads
this module by its path too and makes the spans of the runs it reads from
the database's rows with it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.status import Status as SpanStatus

log = logging.getLogger("engine.tracing")

#: How many change spans may stay open: past that the oldest is ended (a change that ended without a run here).
OPEN = 1024
#: How many ended change spans are kept for runs that come after their change's end (the helper: a change is
#: seen ready before the batch of its last runs is written).
ENDED = 1024
#: How many attributes a run's span has (the fast path needs span limits that keep them all, untruncated).
_RUN_ATTRIBUTES = 6

#: A run as the spans are made of it: (task id, phase, attempt, outcome, its end (a datetime, or a POSIX timestamp
#: in the helper), its duration in seconds, what the tracer noted: (the task's kind, the error's message or None,
#: its change as (id, kind, summary, spawn time, (ready time, status's value) or None), or None)).
Run = tuple[Any, str, int, str, Any, float, tuple[str, "str | None", "tuple[Any, ...] | None"]]


class ConfigError(Exception):
    """ConfigError says that the OTEL_* variables ask for what cannot be made (an exporter not installed)."""


class Spans:
    """Spans makes the spans of runs with an OpenTelemetry TracerProvider, and keeps the changes' spans open.

    Used by one thread at a time: the tracing thread of engine._otel, or
    the helper's main loop.
    """

    def __init__(self, provider: Any, start_ns: Callable[[Any, float], int] | None = None,
                 trace_id: Callable[[tuple[Any, ...]], int] | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("engine")
        self._fast = _FastRuns.of(self._tracer)
        #: quick says whether the runs in a change are made in Spans.make's own loop (the SDK as it knows it).
        self.quick = self._fast is not None and self._fast.quick
        #: fast says whether runs' spans are made as ReadableSpans (else through start_span and end).
        self.fast = self._fast is not None
        self._start_ns = start_ns or start_ns_of
        self._roots: dict[int, _Root] = {}
        self._ended: dict[int, _Root] = {}
        # The trace id of a change's trace, from its change tuple (else the provider's generator draws one): set on
        # the provider's id generator (engine._otelrows.ChosenIds) for the change span's start.
        self._trace_id = trace_id
        self._ids: Any = getattr(provider, "id_generator", None)

    @property
    def parts(self) -> tuple[Any, Any, Callable[[int], int]] | None:
        """parts are what engine._otelwire needs of the SDK's tracer to write the runs' spans itself: its resource,
        its instrumentation scope and the random bits of its id generator; None unless quick."""
        fast = self._fast
        return (fast.resource, fast.scope, fast.bits) if fast is not None and self.quick else None

    @property
    def open(self) -> list[int]:
        """open are the ids of the changes whose span is open."""
        return list(self._roots)

    def root(self, change: tuple[Any, ...]) -> _Root:
        """root is the span of a change (its id, kind, summary, spawn time, ...), opened if it is not."""
        return self._roots.get(change[0]) or self._root(change)

    def make(self, runs: list[Run]) -> None:
        """make makes the spans of runs: those in a change through the fast path in this loop, where it can."""
        fast = self._fast
        quick = self.quick
        if quick:
            assert fast is not None
            ends = fast.on_ends()  # the processors' own on_end, read once for the batch
            bits, readable, resource, scope = fast.bits, fast.readable, fast.resource, fast.scope
        roots = self._roots
        started = self._start_ns
        for run in runs:
            try:
                noted = run[6]
                change = noted[2]
                if not quick or change is None:
                    self._span(run)
                    continue
                tid, phase, attempt, outcome, ended, elapsed, _ = run
                kind, error = noted[0], noted[1]
                root = roots.get(change[0]) or self._root(change)
                start = started(ended, elapsed)
                if start < root.spawn:
                    start = root.spawn  # within its change's span (a clock that stood still)
                if root.valid and root.sampled:  # else the change's span is not recording, nor are its runs
                    span_id = bits(64)
                    if span_id:  # the SDK's RandomIdGenerator's id (it draws again for a 0)
                        ctx = _new_tuple(SpanContext, (root.trace_id, span_id, False, root.flags, root.state, True))
                    else:
                        assert fast is not None
                        ctx = SpanContext(root.trace_id, fast.ids.generate_span_id(), is_remote=False,
                                          trace_flags=root.flags, trace_state=root.state)
                    span = readable(
                        kind, ctx, root.span_context, resource,
                        {"engine.task.id": str(tid), "engine.task.kind": kind, "engine.task.phase": phase,
                         "engine.task.attempt": attempt, "engine.task.outcome": outcome, "engine.change.id": root.cid},
                        (), (), SpanKind.INTERNAL, None,
                        _UNSET if error is None else SpanStatus(StatusCode.ERROR, error or None),
                        start, start + int(elapsed * 1e9), scope)
                    for end in ends:
                        end(span)
                if change[4] is not None:
                    self.end_root(change[0], *change[4])
            except Exception as e:  # the SDK's failure is logged; the next runs are still traced
                log.error("cannot trace the run of task %s (%s): %s: %s", run[0], run[6][0], type(e).__name__, e)

    def _span(self, run: Run) -> None:
        tid, phase, attempt, outcome, ended, elapsed, (kind, error, change) = run
        start = self._start_ns(ended, elapsed)  # when the run started, as its timing says
        end = int(elapsed * 1e9)
        if change is None:
            attributes = {"engine.task.id": str(tid), "engine.task.kind": kind, "engine.task.phase": phase,
                          "engine.task.attempt": attempt, "engine.task.outcome": outcome, "engine.change.id": ""}
            span = self._tracer.start_span(kind, context=None, kind=SpanKind.INTERNAL, start_time=start,
                                           attributes=attributes)
            if error is not None:
                span.set_status(StatusCode.ERROR, error or None)
            span.end(end_time=start + end)
            return
        root = self._roots.get(change[0]) or self._root(change)
        if start < root.spawn:
            start = root.spawn  # within its change's span (a clock that stood still)
        end += start
        attributes = {"engine.task.id": str(tid), "engine.task.kind": kind, "engine.task.phase": phase,
                      "engine.task.attempt": attempt, "engine.task.outcome": outcome, "engine.change.id": root.cid}
        if self._fast is not None:
            self._fast.span(kind, root, attributes, start, end, error)
        else:
            span = self._tracer.start_span(kind, context=root.context, kind=SpanKind.INTERNAL, start_time=start,
                                           attributes=attributes)
            if error is not None:
                span.set_status(StatusCode.ERROR, error or None)
            span.end(end_time=end)
        if change[4] is not None:
            self.end_root(change[0], *change[4])

    def _root(self, change: tuple[Any, ...]) -> _Root:
        cid, kind, summary, spawn, _ = change
        root = self._roots.get(cid) or self._ended.get(cid)
        if root is None:
            if len(self._roots) >= OPEN:  # changes that ended without a last run here (aborted, say)
                oldest = next(iter(self._roots))
                self._roots.pop(oldest).span.end()
            start = _ns(spawn)
            if self._trace_id is not None:  # (the helper's provider: its id generator takes the id chosen)
                self._ids.chosen = self._trace_id(change)
            span = self._tracer.start_span(
                kind, kind=SpanKind.INTERNAL, start_time=start,
                attributes={"engine.change.id": str(cid), "engine.change.kind": kind,
                            "engine.change.summary": summary})
            root = self._roots[cid] = _Root(span, start, str(cid))
        return root

    def end_root(self, cid: int, ready: datetime, status: str) -> None:
        """end_root ends a change's span, ready at ready with status (a run that comes later is still its child)."""
        root = self._roots.pop(cid, None)
        if root is None:
            return
        if len(self._ended) >= ENDED:
            del self._ended[next(iter(self._ended))]
        self._ended[cid] = root
        span = root.span
        span.set_attribute("engine.change.status", status)
        if status == "Error":
            span.set_status(StatusCode.ERROR)
        span.end(end_time=_ns(ready))

    def end_open(self) -> None:
        """end_open ends the change spans still open, now, as unfinished (tracing stops)."""
        roots, self._roots = self._roots, {}
        for root in roots.values():
            root.span.set_attribute("engine.change.status", "unfinished")
            root.span.end()


class _Root:
    """_Root is a change's span, open while its runs come, and what its runs' spans need of it."""

    __slots__ = ("cid", "context", "flags", "sampled", "span", "span_context", "spawn", "state", "trace_id", "valid")

    def __init__(self, span: Span, spawn: int, cid: str) -> None:
        self.span = span
        self.context = trace.set_span_in_context(span)
        parent = self.span_context = span.get_span_context()
        self.spawn = spawn
        self.cid = cid
        # The parent's fields a run's span reads (SpanContext's are properties: read once here).
        self.trace_id, self.flags, self.state = parent.trace_id, parent.trace_flags, parent.trace_state
        self.valid, self.sampled = parent.is_valid, parent.trace_flags.sampled


class _FastRuns:
    """_FastRuns makes the span of a run that is over as the SDK's Tracer would on its end, for a quarter of the cost.

    What start_span and end do for a span in a change's trace that starts
    and ends at once, without what it does not need: the context lookups,
    the span's lock and the attribute checks (the engine's attributes are
    valid by construction; span limits that would cut them send every span
    back through start_span). With the SDK's default id generator, and a
    SpanContext the tuple this module knows (checked once against one its
    constructor made), a span's context is made from the generator's
    random bits without the constructor's checks (it is valid by
    construction).
    """

    def __init__(self, tracer: Any, readable: Any) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.sampler = tracer.sampler
        self.resource = tracer.resource
        self.processor = tracer.span_processor
        self.ids = tracer.id_generator
        self.readable = readable
        # The SDK's own samplers that keep a span of a local parent if and only if the parent is sampled, with
        # the span's attributes and the parent's trace state (the default, parentbased_always_on, and
        # always_on): asking them for each run would tell what the change's span already says.
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, StaticSampler
        defaults: list[Any] = [ALWAYS_ON, ParentBased(ALWAYS_ON)]
        self.follows = type(self.sampler) in (ParentBased, StaticSampler) \
            and self.sampler.get_description() in {s.get_description() for s in defaults}
        self.scope = getattr(tracer, "_instrumentation_scope", None) or InstrumentationScope("engine")
        self.bits = _random_bits(self.ids)
        #: quick: Tracer._spans makes the spans of runs in a change itself (the default sampler, the default id
        #: generator, and ReadableSpan's parameters in the order it passes them).
        self.quick = self.follows and self.bits is not None and _positional(readable)

    def on_ends(self) -> tuple[Callable[[Any], None], ...]:
        """on_ends are the on_end of each span processor of the provider (processors)."""
        return tuple(p.on_end for p in self.processors())

    def processors(self) -> tuple[Any, ...]:
        """processors are the span processors of the provider: those of its SDK multi-processor, read now (one added
        later is called from the next batch on), else its own."""
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

        processor = self.processor
        inner = getattr(processor, "_span_processors", None)  # (the SDK's own: a tuple, replaced by each add)
        if type(processor) is SynchronousMultiSpanProcessor and isinstance(inner, tuple):
            return inner
        return (processor,)

    @classmethod
    def of(cls, tracer: Any) -> _FastRuns | None:
        """of returns the fast path for tracer, or None when it is not the SDK's or its span limits would bite."""
        try:
            from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
            from opentelemetry.sdk.trace import Tracer as SdkTracer
        except ImportError:  # the API without the SDK: an application's own implementation
            return None
        if type(tracer) is not SdkTracer:
            return None
        limits = getattr(tracer, "_span_limits", None)
        if not isinstance(limits, SpanLimits):
            limits = SpanLimits()  # what the provider uses unless told otherwise: the OTEL_*_LIMIT variables
        count, length = limits.max_span_attributes, limits.max_span_attribute_length
        if (count is not None and count < _RUN_ATTRIBUTES) or length is not None:
            return None
        return cls(tracer, ReadableSpan)

    def span(self, name: str, root: _Root, attributes: dict[str, Any], start: int, end: int,
             error: str | None) -> None:
        """span makes the span of a run in root's trace and hands it to the processors, if the sampler keeps it."""
        if not root.valid:
            return  # the change's span is not recording (a disabled tracer): nor are its runs
        trace_id = root.trace_id
        if self.follows:  # the SDK's default sampler: a run is sampled with its change, as it is
            if not root.sampled:
                return
            flags, trace_state, kept = root.flags, root.state, attributes
        else:
            sampled = self.sampler.should_sample(root.context, trace_id, name, SpanKind.INTERNAL, attributes)
            decision = sampled.decision
            if not decision.is_recording():
                return
            flags = TraceFlags((TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT)
                               | (root.flags & _RANDOM))
            trace_state, kept = sampled.trace_state, sampled.attributes
        bits = self.bits
        span_id = bits(64) if bits is not None else 0
        if span_id:  # the SDK's RandomIdGenerator's id (it draws again for a 0)
            ctx = _new_tuple(SpanContext, (trace_id, span_id, False, flags, trace_state, True))
        else:
            ctx = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=flags,
                              trace_state=trace_state)
        self.processor.on_end(self.readable(
            name, context=ctx, parent=root.span_context, resource=self.resource, attributes=kept,
            kind=SpanKind.INTERNAL, status=_UNSET if error is None else SpanStatus(StatusCode.ERROR, error or None),
            start_time=start, end_time=end, instrumentation_scope=self.scope))


_new_tuple = tuple.__new__


#: ReadableSpan's parameters, in order, as Tracer._spans passes them.
_READABLE = ("self", "name", "context", "parent", "resource", "attributes", "events", "links", "kind",
             "instrumentation_info", "status", "start_time", "end_time", "instrumentation_scope")


def _positional(readable: Any) -> bool:
    """_positional says whether readable's constructor takes the parameters Tracer._spans passes, in that order."""
    import inspect

    try:
        return tuple(inspect.signature(readable.__init__).parameters) == _READABLE
    except (TypeError, ValueError):
        return False


def _random_bits(ids: Any) -> Any:
    """_random_bits is random.getrandbits when ids is the SDK's RandomIdGenerator and a SpanContext is the tuple
    its constructor makes (then a span's context is made from its bits as that tuple), else None."""
    import random

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    if not isinstance(ids, RandomIdGenerator) or type(ids).generate_span_id is not RandomIdGenerator.generate_span_id:
        return None
    try:
        flags, state = TraceFlags(TraceFlags.SAMPLED), trace.DEFAULT_TRACE_STATE
        made = SpanContext(1, 2, is_remote=False, trace_flags=flags, trace_state=state)
        copied = _new_tuple(SpanContext, (1, 2, False, flags, state, True))
        same = made == copied and (copied.trace_id, copied.span_id, copied.is_remote, copied.trace_flags,
                                   copied.trace_state, copied.is_valid) == (1, 2, False, flags, state, True)
    except Exception:
        return None
    return random.getrandbits if same else None


#: The trace flag that says the trace id is random (newer SDKs set it; 0 where it does not exist).
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_UNSET = SpanStatus(StatusCode.UNSET)


def provider_from_environment(id_generator: Any = None) -> Any:
    """provider_from_environment is an SDK TracerProvider configured from the OTEL_* variables.

    The resource comes from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    the exporters are those OTEL_TRACES_EXPORTER names (exporters_from_environment),
    each behind a BatchSpanProcessor.
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = bare_provider(id_generator)
    for exporter in exporters_from_environment():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def bare_provider(id_generator: Any = None) -> Any:
    """bare_provider is an SDK TracerProvider with the resource of the OTEL_* variables, and no span processor."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(resource=Resource.create(), id_generator=id_generator)


def exporters_from_environment() -> list[Any]:
    """exporters_from_environment are the span exporters OTEL_TRACES_EXPORTER names (default otlp, over
    OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf unless grpc), found by the SDK's entry points."""
    exporters = []
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    for name in names:
        if name == "none":
            continue
        if name == "otlp":
            protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
            name = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise ConfigError(f"cannot trace: no OpenTelemetry span exporter named {name!r} is installed "
                              "(OTEL_TRACES_EXPORTER)")
        exporters.append(found[0].load()())
    return exporters


def start_ns_of(ended: datetime, elapsed: float) -> int:
    """start_ns_of is when a run that ended at ended after elapsed seconds started, in nanoseconds since the epoch
    (to the microsecond, as its timing says: engine.timings.started)."""
    d = ended - _EPOCH
    return ((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds - round(elapsed * 1e6)) * 1000


def _ns(when: datetime) -> int:
    """_ns is a time as nanoseconds since the epoch (OpenTelemetry's timestamps)."""
    d = when - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def queue_size() -> int:
    """queue_size is how many spans a batch processor holds (OTEL_BSP_MAX_QUEUE_SIZE, the SDK's 2,048 unless set)."""
    try:
        return int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "") or 2048)
    except ValueError:
        return 2048
