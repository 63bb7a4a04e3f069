# SPDX-License-Identifier: GPL-3.0-or-later
"""The OpenTelemetry side of engine.tracing: imported only when tracing is on (the [otel] extra).

A change is a trace: its span starts when the change spawned and ends when
it became ready (opened at the first run of one of its tasks in this
process, ended by the run that found it ready). Each run of a task's do or undo handler is a span in it, from
the handler's start to its end, with the task's kind, id, phase, attempt,
outcome and change id as attributes. Times are the State's clock.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from .errors import EngineError
from .status import Status

if TYPE_CHECKING:
    from ._records import TaskRec
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

#: How many change spans may stay open: past that the oldest is ended (a change that ended without a run here).
_OPEN = 1024


class Tracer:
    """Tracer turns task runs into spans, and changes into traces.

    The recorder hands it what a span needs (read under the state lock, a
    few attributes); the spans are made and ended on a thread of its own,
    so that the SDK's work is not done while the recorder holds the lock.
    """

    def __init__(self, w: UnitOfWork, provider: Any = None) -> None:
        self._w = w
        self._own = None
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):  # the application set none: one from OTEL_*
                provider = self._own = provider_from_environment()
        self._tracer = provider.get_tracer("engine")
        # Only the thread touches the change spans (and close(), once the thread has ended).
        self._roots: dict[int, Span] = {}
        self._queue: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="engine-tracing", daemon=True)
        self._thread.start()

    def task_run(self, rec: TaskRec, phase: str, attempt: int, outcome: str, started: datetime,
                 elapsed: float) -> None:
        """task_run hands one run of rec's handler to the tracing thread (lock held): a span of its change's trace."""
        cid = rec.change_id
        change = None
        start = _ns(started)
        if cid is not None:
            crec = self._w.records.crec(cid)
            ready = None if crec.ready_time is None else (_ns(crec.ready_time), self._w.change_status(crec))
            change = (cid, crec.kind, crec.summary, _ns(crec.spawn_time), ready)
            # Within its change's span (a clock that stood still while the handler ran would put it before).
            start = max(start, change[3])
        error = None
        if outcome == "error":
            errors = [msg for _, level, msg in self._w.records.log_lines(rec) if level == "ERROR"]
            error = errors[-1] if errors else ""
        self._queue.put(_Run(rec.id, rec.kind, phase, attempt, outcome, start, start + int(elapsed * 1e9), error,
                             change))

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            try:
                self._span(run)
            except Exception as e:  # the SDK's failure is logged; the next runs are still traced
                log.error("cannot trace the run of task %s (%s): %s: %s", run.tid, run.kind, type(e).__name__, e)

    def _span(self, run: _Run) -> None:
        parent = None
        change = run.change
        if change is not None:
            parent = trace.set_span_in_context(self._root(change))
        cid = "" if change is None else str(change[0])
        span = self._tracer.start_span(run.kind, context=parent, kind=SpanKind.INTERNAL, start_time=run.start,
                                       attributes={
                                           "engine.task.id": str(run.tid),
                                           "engine.task.kind": run.kind,
                                           "engine.task.phase": run.phase,
                                           "engine.task.attempt": run.attempt,
                                           "engine.task.outcome": run.outcome,
                                           "engine.change.id": cid,
                                       })
        if run.error is not None:
            span.set_status(StatusCode.ERROR, run.error or None)
        span.end(end_time=run.end)
        if change is not None and change[4] is not None:
            self._end_root(change[0], *change[4])

    def _root(self, change: tuple[Any, ...]) -> Span:
        cid, kind, summary, spawn, _ = change
        root = self._roots.get(cid)
        if root is None:
            if len(self._roots) >= _OPEN:  # changes that ended without a last run here (aborted, say)
                oldest = next(iter(self._roots))
                self._roots.pop(oldest).end()
            root = self._roots[cid] = self._tracer.start_span(
                kind, kind=SpanKind.INTERNAL, start_time=spawn,
                attributes={"engine.change.id": str(cid), "engine.change.kind": kind,
                            "engine.change.summary": summary})
        return root

    def _end_root(self, cid: int, ready: int, status: Status) -> None:
        root = self._roots.pop(cid, None)
        if root is None:
            return
        root.set_attribute("engine.change.status", status.value)
        if status is Status.ERROR:
            root.set_status(StatusCode.ERROR)
        root.end(end_time=ready)

    def close(self) -> None:
        """close traces what is left to trace, ends the open change spans (now, as unfinished) and shuts down
        its own provider, exporting what is left."""
        self._queue.put(None)
        self._thread.join()
        roots, self._roots = self._roots, {}
        for root in roots.values():
            root.set_attribute("engine.change.status", "unfinished")
            root.end()
        if self._own is not None:
            self._own.shutdown()


@dataclass(frozen=True)
class _Run:
    """_Run is what a run's span needs, read under the state lock."""

    tid: int
    kind: str
    phase: str
    attempt: int
    outcome: str
    start: int
    end: int
    error: str | None
    #: (id, kind, summary, spawn time, (ready time, status) or None), or None for a task in no change.
    change: tuple[Any, ...] | None


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
