# SPDX-License-Identifier: GPL-3.0-or-later
"""Tracing with OpenTelemetry, optional: each change a trace, each run of a task's handler a span.

Nothing here imports OpenTelemetry: engine._otel does, and only when
tracing is turned on, by enable_tracing or by an Overlord that finds the
standard OTEL_* variables set (tracing_wanted). Without the [otel] extra,
or with tracing off, the runner pays one test of None per run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

    tracer_provider is the OpenTelemetry TracerProvider to use; without one,
    the global provider if the application set one, else an SDK provider
    configured from the OTEL_* variables (its exporters, OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES), which disable_tracing shuts down. Raises
    EngineError when OpenTelemetry is not installed (the [otel] extra).
    """
    try:
        from . import _otel
    except ImportError as e:
        raise EngineError(f"cannot trace: OpenTelemetry is not installed ({e.name} is missing): "
                          "pip install 'overlord-engine[otel]'") from None
    w = session_of(state).uow
    old = w.timings.tracer
    if old is not None:
        old.close()
    w.timings.tracer = _otel.Tracer(w, tracer_provider)


def disable_tracing(state: State) -> None:
    """disable_tracing stops tracing state: open change spans end, and a provider enable_tracing made is flushed
    and shut down."""
    w = session_of(state).uow
    tracer, w.timings.tracer = w.timings.tracer, None
    if tracer is not None:
        tracer.close()


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
