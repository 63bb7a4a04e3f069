# SPDX-License-Identifier: GPL-3.0-or-later
"""Tracing with OpenTelemetry, optional: each change a trace, each run of a task's handler a span.

Nothing here imports OpenTelemetry: engine._otel does, and only when
tracing is turned on with a TracerProvider of the application's (handed to
enable_tracing, or set as the global one). Tracing asked for by the
standard OTEL_* variables alone (tracing_wanted; an Overlord asks) runs in
a helper process (engine._otelproc), and this process imports none of it.
Without the [otel] extra, or with tracing off, the runner pays one test of
None per run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._otelproc import ProcessTracer, database_of
from .errors import EngineError
from .session import session_of

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("engine.tracing")

#: The variables that ask for traces (the OpenTelemetry SDK's own): an exporter, or an endpoint to export to.
WANTED_BY = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """tracing_wanted says whether the environment asks for traces.

    It does when OTEL_TRACES_EXPORTER names an exporter other than "none",
    or an OTLP endpoint is set, unless OTEL_SDK_DISABLED is "true".
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(env.get(name, "").strip() for name in WANTED_BY[1:])


def enable_tracing(state: State, *, tracer_provider: Any = None) -> None:
    """enable_tracing makes each change of state a trace and each task run a span, exported by OpenTelemetry.

    tracer_provider is the OpenTelemetry TracerProvider to use, in this
    process; without one, the global provider if the application set one.
    Else the spans are made and exported in a helper process of the
    engine's, by an SDK provider configured there from the OTEL_* variables
    (its exporters, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), which
    disable_tracing flushes and ends. Raises EngineError when OpenTelemetry
    is not installed (the [otel] extra).
    """
    w = session_of(state).uow
    database = None
    if tracer_provider is None and not _global_provider():
        try:
            found = importlib.util.find_spec("opentelemetry.sdk")
        except ImportError as e:
            found, missing = None, e.name
        else:
            missing = "opentelemetry.sdk"
        if found is None:
            raise EngineError(f"cannot trace: OpenTelemetry is not installed ({missing} is missing): "
                              "pip install 'overlord-engine[otel]'")
        with state:  # (the store's connection, under the lock)
            database = database_of(w)  # None in memory: the spans are made in this process
    old = w.timings.tracer
    if old is not None:  # (first: the runs it committed are its own; it writes those waiting as their tracer)
        old.close()
        w.timings.tracer = None
    tracer: Any
    if database is not None:
        tracer = ProcessTracer(w, state, database)
    else:
        try:
            from . import _otel
        except ImportError as e:
            raise EngineError(f"cannot trace: OpenTelemetry is not installed ({e.name} is missing): "
                              "pip install 'overlord-engine[otel]'") from None
        tracer = _otel.Tracer(w, tracer_provider)
    w.timings.tracer = tracer


def _global_provider() -> bool:
    """_global_provider says whether the application set a global TracerProvider: it imported OpenTelemetry's API
    (and set one, or asks for one by OTEL_PYTHON_TRACER_PROVIDER)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None and not os.environ.get("OTEL_PYTHON_TRACER_PROVIDER", "").strip():
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def disable_tracing(state: State) -> None:
    """disable_tracing stops tracing state: open change spans end, and what enable_tracing made (a helper process)
    flushes what is left and ends."""
    w = session_of(state).uow
    tracer = w.timings.tracer
    if tracer is not None:
        tracer.close()  # (it writes the runs waiting for a batch first, as their tracer)
        if w.timings.tracer is tracer:
            w.timings.tracer = None


def trace_from_environment(state: State) -> bool:
    """trace_from_environment enables tracing when the environment asks for it (what an Overlord does).

    Without OpenTelemetry installed it logs a warning and goes on untraced.
    """
    if not tracing_wanted():
        return False
    try:
        enable_tracing(state)
    except EngineError as e:
        log.warning("%s; going on without traces", e)
        return False
    except Exception as e:  # an exporter that cannot be made must not keep the overlord from starting
        log.warning("cannot trace: %s: %s; going on without traces", type(e).__name__, e)
        return False
    return True
