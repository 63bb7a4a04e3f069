# SPDX-License-Identifier: GPL-3.0-or-later
"""Spans made in the engine's process a batch at a time (engine._otel) and handed to the processors at once
(engine._otelemit): the same spans, in the same order, as one at a time."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, disable_tracing, enable_tracing
from engine.testing import FakeClock
from tests.support.helpers import run_noop_change

pytest.importorskip("opentelemetry.sdk.trace", reason="the [otel] extra is not installed")
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine import _otel, _otelemit

_SPAWN = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)
_SPAWN_US = 1_796_698_800_000_000  # (_SPAWN in microseconds since the epoch)


def _spans_of(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [{"name": s.name, "context": s.context, "parent": s.parent, "attributes": dict(s.attributes or {}),
             "start": s.start_time, "end": s.end_time, "kind": s.kind,
             "status": (s.status.status_code, s.status.description), "resource": s.resource.attributes,
             "scope": s.instrumentation_scope} for s in exporter.get_finished_spans()]


def _runs(n: int, **differ: Any) -> list[Any]:
    """n runs of a change 7 as engine.timings notes them (traced: the task's kind), the first starting before its
    change spawned (a clock that stood still); differ sets a field of the last (by name) to tell it apart."""
    runs = [[100_000 + i, "do", 1, "done", _SPAWN_US + 1000 + 10 * i, 0.0001 + i * 1e-7, "noop", 7, "noop"]
            for i in range(n)]
    runs[0][4] = _SPAWN_US + 50
    names = ("tid", "phase", "attempt", "outcome", "ended", "elapsed", "noted")
    for name, value in differ.items():
        runs[-1][names.index(name)] = value
    return [tuple(r) for r in runs]


def _made(runs: list[Any], way: str, seed: int = 27) -> list[dict[str, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "d"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = _otel._BatchSpans(provider, start_ns=_otel._start_ns)
    assert spans.quick
    change = (7, "install", "Install foo", _SPAWN, None)
    random.seed(seed)  # (the SDK's span ids: the same draws either way)
    if way == "batch":
        spans.batch(change, runs)
    else:
        root = spans.root(change)
        for emit in spans._emitters(spans._fast.processors()):  # type: ignore[union-attr]
            emit(getattr(spans, way)(root, runs))
    return [s for s in _spans_of(exporter) if s["parent"] is not None]


def test_runs_alike_are_made_column_by_column_as_one_by_one() -> None:
    runs = _runs(300)
    alike = _made(runs, "_alike")
    assert alike == _made(runs, "_each")
    assert len(alike) == 300 and len({s["context"].span_id for s in alike}) == 300
    assert alike[0]["start"] == _SPAWN_US * 1000  # within its change's span
    assert alike[1]["start"] == (_SPAWN_US + 1010 - 100) * 1000 and alike[1]["end"] == alike[1]["start"] + 100_100
    assert alike[5]["attributes"] == {"engine.task.id": "100005", "engine.task.kind": "noop",
                                      "engine.task.phase": "do", "engine.task.attempt": 1,
                                      "engine.task.outcome": "done", "engine.change.id": "7"}


@pytest.mark.parametrize("differ", [{"phase": "undo"}, {"attempt": 2}, {"outcome": "retry"},
                                    {"noted": ("noop", "disk on fire")}, {"noted": "other"}, {"noted": None}])
def test_runs_not_alike_are_made_one_by_one(differ: dict[str, Any]) -> None:
    runs = _runs(20, **differ)
    spans = _otel._BatchSpans(TracerProvider(), start_ns=_otel._start_ns)
    assert spans._alike(spans.root((7, "install", "Install foo", _SPAWN, None)), runs) is None
    made = _made(runs, "batch")
    assert made == _made(runs, "_each")
    assert len(made) == (19 if differ == {"noted": None} else 20)


def _bsp(exporter: InMemorySpanExporter, **kw: Any) -> BatchSpanProcessor:
    return BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000, **kw)  # (exported by force_flush)


@contextlib.contextmanager
def _held(*processors: BatchSpanProcessor) -> Iterator[None]:
    """_held keeps the processors' workers from exporting (their export lock held): their queues are as emitted."""
    locks = [p._batch_processor._export_lock for p in processors]
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in locks:
            lock.release()


def _readable(n: int, first: int = 0) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = _otel._BatchSpans(provider, start_ns=_otel._start_ns)
    return spans._alike(spans.root((7, "install", "Install foo", _SPAWN, None)),  # type: ignore[return-value]
                        _runs(n + first)[first:])


@pytest.mark.parametrize("sizes", [[256, 256, 256], [100, 3], [2048]])
def test_the_batch_processor_gets_a_batch_at_once_as_its_on_end_would(sizes: list[int]) -> None:
    at_once, one_by_one = InMemorySpanExporter(), InMemorySpanExporter()
    bulk, each = _bsp(at_once), _bsp(one_by_one)
    emit = _otelemit.emitter(bulk)
    assert emit.__name__ == "batched"  # the SDK's processor as engine._otelemit knows it
    first = 0
    with _held(bulk, each):
        for n in sizes:
            batch = _readable(n, first)
            first += n
            emit(batch)
            _otelemit.emitter_each(each)(batch)
        assert len(bulk._batch_processor._queue) == len(each._batch_processor._queue) == first
        assert list(bulk._batch_processor._queue) == list(each._batch_processor._queue)
        assert bulk._batch_processor._worker_awaken.is_set() == each._batch_processor._worker_awaken.is_set() \
            == (first >= 512)
    bulk.force_flush()
    each.force_flush()
    assert at_once.get_finished_spans() == one_by_one.get_finished_spans()
    assert len(at_once.get_finished_spans()) == first


def test_a_batch_past_the_queues_room_goes_through_on_end(caplog: pytest.LogCaptureFixture) -> None:
    """A batch that does not fit in the queue goes through the processor's on_end, span by span: its warning, its
    drops (the oldest), as the SDK would; so does one after it was shut down, and one in a process forked since."""
    at_once, one_by_one = InMemorySpanExporter(), InMemorySpanExporter()
    bulk, each = _bsp(at_once, max_queue_size=300, max_export_batch_size=300), \
        _bsp(one_by_one, max_queue_size=300, max_export_batch_size=300)
    emit = _otelemit.emitter(bulk)
    with caplog.at_level(logging.WARNING), _held(bulk, each):
        for first in (0, 200):
            batch = _readable(200, first)
            emit(batch)
            _otelemit.emitter_each(each)(batch)
        assert "Queue full" in caplog.text
        assert list(bulk._batch_processor._queue) == list(each._batch_processor._queue)
    bulk.force_flush()
    each.force_flush()
    assert at_once.get_finished_spans() == one_by_one.get_finished_spans()
    assert len(at_once.get_finished_spans()) == 300
    bulk._batch_processor._pid = -1  # (as if forked: the SDK's on_end starts a new worker)
    emit(_readable(3, 400))
    assert bulk._batch_processor._pid > 0 and len(bulk._batch_processor._queue) == 3
    bulk.shutdown()
    emit(_readable(3, 500))  # shut down: the SDK ignores them (its own log line)
    assert len(at_once.get_finished_spans()) == 303


def test_another_processor_gets_each_span_and_one_failing_spares_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    class Failing(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("no")

    class Noting(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span)

    assert _otelemit.emitter(_bsp(InMemorySpanExporter())).__name__ == "batched"
    exporter = InMemorySpanExporter()
    assert _otelemit.emitter(Noting(exporter)).__name__ == "each"
    emitters = _otelemit.Emitters()
    procs = (Failing(exporter), Noting(exporter))
    batch = _readable(3)
    with caplog.at_level(logging.ERROR):
        for emit in emitters(procs):
            emit(batch)
    assert seen == batch
    assert caplog.text.count("cannot trace the run of task") == 3
    assert emitters(procs) is emitters(procs)  # (made once for the same processors)


def test_every_run_is_exported_by_the_batch_processor_at_stop(tmp_path: Path, clock: FakeClock) -> None:
    """A change of 600 runs (batches of 256 and what is left at the stop, written by the State's close) traced with
    the SDK's BatchSpanProcessor: each run a span of its change's trace, none lost at the boundaries."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(_bsp(exporter))
    o = Overlord(tmp_path / "state.db", clock=clock)
    enable_tracing(o.state, tracer_provider=provider)
    try:
        chg = run_noop_change(o, 600)
        with o.state:
            ids, cid = sorted(int(t.id) for t in chg.tasks()), chg.id
    finally:
        o.stop()
        disable_tracing(o.state)
        o.state.close()
    assert provider.force_flush()
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    runs = [s for s in spans if s.parent is not None]
    assert root.name == "install" and (root.attributes or {})["engine.change.id"] == cid
    assert len(runs) == 600 and {s.name for s in runs} == {"k"}
    assert all(s.parent == root.context for s in runs)
    assert sorted(int((s.attributes or {})["engine.task.id"]) for s in runs) == ids
    assert all(root.start_time <= s.start_time <= s.end_time for s in runs)  # type: ignore[operator]
