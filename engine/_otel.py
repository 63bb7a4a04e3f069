# SPDX-License-Identifier: GPL-3.0-or-later
"""The OpenTelemetry side of engine.tracing: imported only when tracing is on (the [otel] extra).

A change is a trace: its span starts when the change spawned and ends when
it became ready (opened at the first run of one of its tasks in this
process). Each run of a task's do or undo handler is a span in it, from
the handler's start to its end, with the task's kind, id, phase, attempt,
outcome and change id as attributes. Times are the State's clock.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from .errors import DatabaseCorruptError, EngineError, NotFoundError
from .status import Status

if TYPE_CHECKING:
    from ._records import ChangeRec, TaskRec
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How many change spans may stay open before those of ready (or gone) changes are looked for and ended.
_OPEN = 1024


class Tracer:
    """Tracer turns task runs into spans, and changes into traces."""

    def __init__(self, w: UnitOfWork, provider: Any = None) -> None:
        self._w = w
        self._own = None
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):  # the application set none: one from OTEL_*
                provider = self._own = provider_from_environment()
        self._tracer = provider.get_tracer("engine")
        self._mu = threading.Lock()
        self._roots: dict[int, Span] = {}

    def task_run(self, rec: TaskRec, phase: str, attempt: int, outcome: str, started: datetime,
                 elapsed: float) -> None:
        """task_run records one run of rec's handler as a span of its change's trace (lock held)."""
        cid = rec.change_id
        parent = None
        crec = None
        start = _ns(started)
        if cid is not None:
            crec = self._w.crec(cid)
            parent = trace.set_span_in_context(self._root(crec))
            # Within its change's span (a clock that stood still while the handler ran would put it before).
            start = max(start, _ns(crec.spawn_time))
        span = self._tracer.start_span(rec.kind, context=parent, kind=SpanKind.INTERNAL, start_time=start,
                                       attributes={
                                           "engine.task.id": str(rec.id),
                                           "engine.task.kind": rec.kind,
                                           "engine.task.phase": phase,
                                           "engine.task.attempt": attempt,
                                           "engine.task.outcome": outcome,
                                           "engine.change.id": "" if cid is None else str(cid),
                                       })
        if outcome == "error":
            errors = [msg for _, level, msg in self._w.log_lines(rec) if level == "ERROR"]
            span.set_status(StatusCode.ERROR, errors[-1] if errors else None)
        span.end(end_time=start + int(elapsed * 1e9))
        if crec is not None and crec.ready_time is not None:
            self._end_root(crec)
        if len(self._roots) > _OPEN:
            self._sweep()

    def _root(self, crec: ChangeRec) -> Span:
        with self._mu:
            root = self._roots.get(crec.id)
            if root is None:
                root = self._roots[crec.id] = self._tracer.start_span(
                    crec.kind, kind=SpanKind.INTERNAL, start_time=_ns(crec.spawn_time),
                    attributes={"engine.change.id": str(crec.id), "engine.change.kind": crec.kind,
                                "engine.change.summary": crec.summary})
            return root

    def _end_root(self, crec: ChangeRec) -> None:
        with self._mu:
            root = self._roots.pop(crec.id, None)
        if root is None:
            return
        status = self._w.change_status(crec)
        root.set_attribute("engine.change.status", status.value)
        if status is Status.ERROR:
            root.set_status(StatusCode.ERROR)
        end = crec.ready_time or self._w.now()
        root.end(end_time=max(_ns(end), _ns(crec.spawn_time)))

    def _sweep(self) -> None:
        """_sweep ends the spans of changes that became ready without a last run here (aborted, say)."""
        with self._mu:
            ids = list(self._roots)
        for cid in ids:
            try:
                crec = self._w.crec(cid)
            except (NotFoundError, DatabaseCorruptError):
                with self._mu:
                    root = self._roots.pop(cid, None)
                if root is not None:
                    root.end()
                continue
            if crec.ready_time is not None:
                self._end_root(crec)

    def close(self) -> None:
        """close ends the open change spans (at their change's ready time, or now) and shuts down its own
        provider, exporting what is left."""
        with self._mu:
            roots, self._roots = self._roots, {}
        for root in roots.values():
            root.set_attribute("engine.change.status", "unfinished")
            root.end()
        if self._own is not None:
            self._own.shutdown()


def provider_from_environment() -> Any:
    """provider_from_environment is an SDK TracerProvider configured from the OTEL_* variables.

    The resource comes from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    the exporters are those OTEL_TRACES_EXPORTER names (default otlp,
    over OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf unless grpc), found by the
    SDK's entry points, each behind a BatchSpanProcessor.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
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
            raise EngineError(f"cannot trace: no OpenTelemetry span exporter named {name!r} is installed "
                              "(OTEL_TRACES_EXPORTER)")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider


def _ns(when: datetime) -> int:
    """_ns is a time as nanoseconds since the epoch (OpenTelemetry's timestamps)."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
