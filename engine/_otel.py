# SPDX-License-Identifier: GPL-3.0-or-later
"""The OpenTelemetry side of engine.tracing in the engine's own process: imported only when tracing is on with a
TracerProvider of the application's (the [otel] extra).

The spans are made by engine._otelspans (what they are, and how they are
made cheaply), on the tracing thread of engine._otelnotes, with the
provider the application handed over (or set as the global one), a batch
of runs at a time: the runs of a change as a batch of timings wrote them,
with the change read once (engine.timings, engine._otelnotes). Where
Spans.make would make them in its own loop (the SDK as engine._otelspans
knows it), _BatchSpans.batch does, from the batch as it is: the same spans,
with each run's attributes copied from those of the batch's runs of the
same kind, phase, attempt and outcome. Tracing asked for by the OTEL_*
variables alone runs in a process of its own instead (engine._otelproc).
"""

from __future__ import annotations

import logging
import time
from itertools import repeat
from operator import add as _add
from operator import mul as _mul
from operator import sub as _sub
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.status import Status as SpanStatus

from ._otelemit import Emitters
from ._otelnotes import TracerBase
from ._otelspans import ConfigError, Spans
from ._otelspans import provider_from_environment as _provider
from .errors import EngineError

if TYPE_CHECKING:
    from ._otelnotes import Batch
    from .timingpack import Run
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.tracing")

_new_tuple = tuple.__new__
_UNSET = SpanStatus(StatusCode.UNSET)
_INTERNAL = SpanKind.INTERNAL


class Tracer(TracerBase):
    """Tracer turns task runs into spans, and changes into traces, in this process.

    engine.timings hands it the runs a commit wrote, by change (batch, then
    submit); its thread makes their spans (hand).
    """

    def __init__(self, w: UnitOfWork, provider: Any = None) -> None:
        super().__init__(w)
        self._own = None
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):  # the application set none: one from OTEL_*
                provider = self._own = provider_from_environment()
        #: spans makes the spans, with the provider (only the tracing thread touches it, and close once it ended).
        self.spans = _BatchSpans(provider, start_ns=_start_ns)
        self._thread.start()

    def hand(self, runs: Batch, flush: bool, closing: bool) -> bool:
        spans = self.spans
        for change, of in runs:
            if change is not None and spans.quick:
                spans.batch(change, of)
                continue
            made: list[Any] = []  # (runs as Spans.make takes them: what their spans need of their change)
            for run in of:
                noted = run[6]
                if noted is None:
                    continue  # noted before tracing started
                kind, error = (noted, None) if noted.__class__ is str else noted
                made.append((*run[:6], (kind, error, change)))
            spans.make(made)
        self.cpu_seconds = time.thread_time()
        return True

    def close(self) -> None:
        """close traces what is left to trace, ends the open change spans (now, as unfinished) and shuts down
        its own provider, exporting what is left."""
        super().close()
        self.spans.end_open()
        if self._own is not None:
            self._own.shutdown()


class _BatchSpans(Spans):
    """_BatchSpans are engine._otelspans' Spans, and the spans of a change's runs as a batch of timings has them."""

    def __init__(self, provider: Any, start_ns: Any = None) -> None:
        super().__init__(provider, start_ns=start_ns)
        self._emitters = Emitters()

    def batch(self, change: tuple[Any, ...], runs: list[Run]) -> None:
        """batch makes the spans of a change's runs as make's own loop does (the same spans), with what they share
        made once: the change's span and its fields, the attributes of runs alike (copied, then the task's id
        set), the SDK's pieces. Only where quick says that loop can."""
        fast = self._fast
        assert fast is not None
        try:
            root = self._roots.get(change[0]) or self._root(change)
        except Exception as e:  # the SDK's failure is logged; the next runs are still traced
            log.error("cannot trace the change %s (%s): %s: %s", change[0], change[1], type(e).__name__, e)
            return
        if root.valid and root.sampled:  # else the change's span is not recording, nor are its runs
            try:
                made = self._alike(root, runs)
            except Exception:  # (the SDK's failure: _each logs it, run by run)
                made = None
            if made is None:
                made = self._each(root, runs)
            if made:
                for emit in self._emitters(fast.processors()):  # (read once a batch: one added, from the next)
                    emit(made)
        if change[4] is not None:
            self.end_root(change[0], *change[4])

    def _each(self, root: Any, runs: list[Run]) -> list[Any]:
        """_each makes the spans of a change's runs one at a time (runs not alike: retries, errors, undos)."""
        fast = self._fast
        assert fast is not None
        made: list[Any] = []  # (the spans, handed to the processors at the end: emitters)
        add = made.append
        bits, readable, resource, scope = fast.bits, fast.readable, fast.resource, fast.scope
        trace_id, flags, state, parent, spawn, cid = (root.trace_id, root.flags, root.state, root.span_context,
                                                      root.spawn, root.cid)
        alike: dict[tuple[Any, ...], dict[str, Any]] = {}
        for tid, phase, attempt, outcome, ended, elapsed, noted, _, _ in runs:
            if noted is None:
                continue  # noted before tracing started
            try:
                if noted.__class__ is str:
                    kind, status = noted, _UNSET
                else:
                    kind, error = noted
                    status = SpanStatus(StatusCode.ERROR, error or None)
                key = (kind, phase, attempt, outcome)
                attributes = alike.get(key)
                if attributes is None:
                    attributes = alike[key] = {
                        "engine.task.id": "", "engine.task.kind": kind, "engine.task.phase": phase,
                        "engine.task.attempt": attempt, "engine.task.outcome": outcome, "engine.change.id": cid}
                attributes = attributes.copy()
                attributes["engine.task.id"] = str(tid)
                start = (ended - round(elapsed * 1e6)) * 1000
                if start < spawn:
                    start = spawn  # within its change's span (a clock that stood still)
                span_id = bits(64)
                if span_id:  # the SDK's RandomIdGenerator's id (it draws again for a 0)
                    ctx = _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, True))
                else:
                    ctx = SpanContext(trace_id, fast.ids.generate_span_id(), is_remote=False, trace_flags=flags,
                                      trace_state=state)
                add(readable(kind, ctx, parent, resource, attributes, (), (), _INTERNAL, None, status, start,
                             start + int(elapsed * 1e9), scope))
            except Exception as e:  # the SDK's failure is logged; the next runs are still traced
                log.error("cannot trace the run of task %s: %s: %s", tid, type(e).__name__, e)
        return made

    def _alike(self, root: Any, runs: list[Run]) -> list[Any] | None:
        """_alike makes the spans of a change's runs that are alike (the same kind, phase, attempt and outcome, none
        failed: W1's, W2's) column by column, each column made in C (map, zip): the same spans as _each makes;
        None when they are not alike."""
        n = len(runs)
        if not n:
            return []
        tids, phases, attempts, outcomes, ends, elapsed, noted, _, _ = zip(*runs, strict=True)
        kind, phase, attempt, outcome = noted[0], phases[0], attempts[0], outcomes[0]
        if (kind.__class__ is not str or noted.count(kind) != n or phases.count(phase) != n
                or attempts.count(attempt) != n or outcomes.count(outcome) != n):
            return None
        fast = self._fast
        assert fast is not None
        ids = list(map(fast.bits, repeat(64, n)))
        if 0 in ids:  # the SDK's RandomIdGenerator draws again for a 0
            ids = [i or fast.ids.generate_span_id() for i in ids]
        starts = list(map(_mul, map(_sub, ends, map(round, map(_mul, elapsed, repeat(1e6)))), repeat(1000)))
        spawn = root.spawn
        if min(starts) < spawn:  # within its change's span (a clock that stood still)
            starts = [start if start >= spawn else spawn for start in starts]
        template = {"engine.task.id": "", "engine.task.kind": kind, "engine.task.phase": phase,
                    "engine.task.attempt": attempt, "engine.task.outcome": outcome, "engine.change.id": root.cid}
        copy = template.copy
        attributes: list[dict[str, Any]] = []
        add = attributes.append
        for tid in map(str, tids):
            one = copy()
            one["engine.task.id"] = tid
            add(one)
        contexts = map(_new_tuple, repeat(SpanContext, n), zip(repeat(root.trace_id, n), ids, repeat(False),
                                                                repeat(root.flags), repeat(root.state), repeat(True)))
        return list(map(fast.readable, repeat(kind, n), contexts, repeat(root.span_context), repeat(fast.resource),
                        attributes, repeat(()), repeat(()), repeat(_INTERNAL), repeat(None), repeat(_UNSET), starts,
                        map(_add, starts, map(int, map(_mul, elapsed, repeat(1e9)))), repeat(fast.scope)))


def _start_ns(ended: int, elapsed: float) -> int:
    """_start_ns is when a run that ended at ended (microseconds since the epoch, as engine.timings notes it) after
    elapsed seconds started, in nanoseconds since the epoch (to the microsecond, as its timing says)."""
    return (ended - round(elapsed * 1e6)) * 1000


def provider_from_environment() -> Any:
    """provider_from_environment is an SDK TracerProvider configured from the OTEL_* variables (engine._otelspans);
    EngineError when they name an exporter that is not installed."""
    try:
        return _provider()
    except ConfigError as e:
        raise EngineError(str(e)) from None
