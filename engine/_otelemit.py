# SPDX-License-Identifier: GPL-3.0-or-later
"""How the spans of a batch of runs reach the span processors, in the engine's process (engine._otel).

The tracing thread makes a batch's spans (engine._otel._BatchSpans.batch),
then hands them to each processor of the application's provider at once:
Emitters gives, for each processor, a function that takes the batch's
spans. For a processor in general, that is its on_end, span by span, as
the SDK's own provider would call it. For the SDK's BatchSpanProcessor as
this module knows it (checked when it is first seen: its type and its
BatchProcessor's fields), the spans go into its queue in one extendleft,
which is what its on_end does to each (appendleft, newest on the left),
with its checks made once for the batch: the span sampled (the batch's
runs are made only when their change's span is), the processor not shut
down, not forked since (its pid: an os.getpid() per span was 0.27 us), and
room in its queue for the whole batch. Where any of them fails, the
batch's spans go through its on_end one by one, so its warnings, its drop
counts and its fork handling are its own; and its worker is woken as its
emit would have woken it (the queue at its export batch's size). The spans,
their order in the queue and what the exporter gets are the same; the SDK's
on_end and emit cost 1.1 to 1.5 us a span on W1, the batch's extendleft a
few hundredths.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("engine.tracing")

#: What takes a batch's spans for a processor.
Emit = Callable[[list[Any]], None]


class Emitters:
    """Emitters are the functions that hand a batch's spans to each span processor, made once per processors seen."""

    def __init__(self) -> None:
        self._of: tuple[Any, ...] = ()
        self._emits: tuple[Emit, ...] = ()

    def __call__(self, processors: tuple[Any, ...]) -> tuple[Emit, ...]:
        if processors != self._of:  # (the SDK's multi-processor replaces its tuple when one is added)
            self._emits = tuple(map(emitter, processors))
            self._of = processors
        return self._emits


def emitter(processor: Any) -> Emit:
    """emitter is what hands a batch's spans to processor: its queue's extendleft where it is the SDK's batch
    processor as this module knows it, else its on_end a span at a time."""
    return _batched(processor) or emitter_each(processor)


def _batched(processor: Any) -> Emit | None:
    """_batched is the batch's extendleft into processor's queue, or None when processor is not the SDK's
    BatchSpanProcessor with the BatchProcessor this module knows."""
    try:
        from opentelemetry.sdk._shared_internal import BatchProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    if type(processor) is not BatchSpanProcessor:
        return None
    inner = getattr(processor, "_batch_processor", None)
    if type(inner) is not BatchProcessor:
        return None
    field = functools.partial(getattr, inner)  # (the SDK's own fields, by name: read once a batch)
    try:
        queue = field("_queue")
        known = (isinstance(queue, deque) and queue.maxlen == field("_max_queue_size")
                 and isinstance(field("_max_export_batch_size"), int) and isinstance(field("_pid"), int)
                 and isinstance(field("_shutdown"), bool) and isinstance(field("_worker_awaken"), threading.Event))
    except AttributeError:
        return None
    if not known:
        return None
    each = emitter_each(processor)
    getpid = os.getpid

    def batched(spans: list[Any]) -> None:
        queue = field("_queue")
        if field("_shutdown") or field("_pid") != getpid() or len(queue) + len(spans) > field("_max_queue_size"):
            each(spans)  # its own way: the warning and drop count of a queue full, a fork's new worker
            return
        queue.extendleft(spans)
        if len(queue) >= field("_max_export_batch_size"):
            awaken = field("_worker_awaken")
            if not awaken.is_set():
                awaken.set()

    return batched


def emitter_each(processor: Any) -> Emit:
    """emitter_each hands a batch's spans to processor's on_end, one at a time."""
    on_end = processor.on_end

    def each(spans: list[Any]) -> None:
        for span in spans:
            try:
                on_end(span)
            except Exception as e:  # the processor's failure is logged; the next spans are still handed over
                log.error("cannot trace the run of task %s: %s: %s", span.attributes.get("engine.task.id"),
                          type(e).__name__, e)

    return each
