# SPDX-License-Identifier: GPL-3.0-or-later
"""The OpenTelemetry side of engine.tracing in the engine's own process: imported only when tracing is on with a
TracerProvider of the application's (the [otel] extra).

The spans are made by engine._otelspans (what they are, and how they are
made cheaply), on the tracing thread of engine._otelnotes, with the
provider the application handed over (or set as the global one). Tracing
asked for by the OTEL_* variables alone runs in a process of its own
instead (engine._otelproc).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from ._otelnotes import TracerBase
from ._otelspans import ConfigError, Spans
from ._otelspans import provider_from_environment as _provider
from .errors import EngineError

if TYPE_CHECKING:
    from .timings import Run
    from .unitofwork import UnitOfWork


class Tracer(TracerBase):
    """Tracer turns task runs into spans, and changes into traces, in this process.

    task_run notes a run (lock held); submit hands the runs a commit wrote
    to the tracer's thread, which makes their spans.
    """

    def __init__(self, w: UnitOfWork, provider: Any = None) -> None:
        super().__init__(w)
        self._own = None
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):  # the application set none: one from OTEL_*
                provider = self._own = provider_from_environment()
        #: spans makes the spans, with the provider (only the tracing thread touches it, and close once it ended).
        self.spans = Spans(provider, start_ns=_start_ns)
        self._thread.start()

    def hand(self, runs: list[Run], flush: bool, closing: bool) -> bool:
        self.spans.make(runs)
        self.cpu_seconds = time.thread_time()
        return True

    def close(self) -> None:
        """close traces what is left to trace, ends the open change spans (now, as unfinished) and shuts down
        its own provider, exporting what is left."""
        super().close()
        self.spans.end_open()
        if self._own is not None:
            self._own.shutdown()


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
