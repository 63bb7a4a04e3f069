# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.timings: what keeping timings (engine.timings) and tracing (engine.tracing) cost W1 and W2.

Each round runs W1 (one change of 10,000 independent no-op tasks) and W2 (a
chain of 1,000) in each mode, each run in a fresh process on a fresh
database file:

- "without": no instrumentation (the timings' two hooks made no-ops);
- "timings": the engine as it is with tracing disabled (every handler run
  kept as a row, written with its outcome);
- "traced": timings and tracing enabled, where the OpenTelemetry SDK is
  installed: a span per run and per change, through the SDK's
  BatchSpanProcessor to an exporter that drops them; the time runs until
  every span is made and exported;
- "traced-api" (with --api): the same, every run's span made through the
  SDK's start_span and end (what the engine did before its fast path);
- "traced-otlp" (with --otlp): tracing from the standard variables alone
  (OTEL_TRACES_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT): the SDK's OTLP
  exporter over HTTP, to a sink in a process of its own that answers 200.

Which mode goes first turns from round to round. The tables give the
medians of the rounds, of tasks/s and of the process's CPU time per task
(all threads), and the median of the rounds' ratios to "without" (the runs
of a round ran back to back, so the drift of the machine's load over
minutes cancels out); then, traced, the share of the process's CPU time
that the tracing thread spent (making the spans; the notes the recorder
takes for them, under 1 us a run, are not in it), which the load of a
shared machine disturbs far less than the A/B ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import DEFAULT_TMP, run_child

TIMEOUT = 600.0


#: An OTLP/HTTP sink: reads each export request and answers 200 (its port on stdout).
SINK = """
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _one(tmp: Path, name: str, tasks: int, chained: bool, mode: str, endpoint: str) -> tuple[float, float, float]:
    db = tmp / f"{name}-{mode}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    traced: bool | str = mode.startswith("traced") and (mode.partition("-")[2] or True)
    result = run_child("timed", {"db": str(db), "tasks": tasks, "chained": chained, "ready_timeout": TIMEOUT,
                                 "timings": mode != "without", "traced": traced, "endpoint": endpoint},
                       timeout=TIMEOUT)
    per_task = 1e6 / tasks
    return float(result["tasks_per_s"]), result["cpu_s"] * per_task, result.get("tracer_cpu_s", 0.0) * per_task


def _have_sdk() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """main runs the rounds and prints the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.timings", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke run")
    parser.add_argument("--api", action="store_true", help="also trace every span through start_span")
    parser.add_argument("--otlp", action="store_true", help="also trace to an OTLP/HTTP sink, from OTEL_* alone")
    parser.add_argument("--only", choices=("w1", "w2"), help="only this workload")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    workloads = [("W1 fan-out", 10_000 // scale, False), ("W2 chain", 1_000 // scale, True)]
    if args.only:
        workloads = [w for w in workloads if w[0].lower().startswith(args.only)]
    modes = ["without", "timings"]
    if _have_sdk():
        modes += ["traced", *(["traced-api"] if args.api else []), *(["traced-otlp"] if args.otlp else [])]
    rates: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    rate_ratios: dict[tuple[str, str], list[float]] = {}
    cpu_ratios: dict[tuple[str, str], list[float]] = {}
    tracer_cpus: dict[tuple[str, str], list[float]] = {}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="timings-", dir=DEFAULT_TMP))
    sink = None
    endpoint = ""
    if "traced-otlp" in modes:
        sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        endpoint = f"http://127.0.0.1:{int(sink.stdout.readline())}"
    try:
        for r in range(args.runs):
            for name, tasks, chained in workloads:
                order = modes[r % len(modes):] + modes[:r % len(modes)]  # each mode goes first in turn
                got = {mode: _one(tmp, name.split()[0], tasks, chained, mode, endpoint) for mode in order}
                for mode, (rate, cpu, tracer_cpu) in got.items():
                    tracer_cpus.setdefault((name, mode), []).append(tracer_cpu / cpu)
                    rates.setdefault((name, mode), []).append(rate)
                    cpus.setdefault((name, mode), []).append(cpu)
                    rate_ratios.setdefault((name, mode), []).append(rate / got["without"][0])
                    cpu_ratios.setdefault((name, mode), []).append(cpu / got["without"][1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if sink is not None:
            sink.terminate()
            sink.wait()
    others = [m for m in modes if m != "without"]
    med = statistics.median
    print(f"median of {args.runs} rounds; ratios: to 'without', median of the rounds' ratios")
    print(f"{'tasks/s (submit + run)':28}" + "".join(f"{m:>12}" for m in modes)
          + "".join(f"{m + ' /':>14}" for m in others))
    for name, tasks, _ in workloads:
        print(f"{f'{name} ({tasks:,})':28}" + "".join(f"{med(rates[(name, m)]):12,.0f}" for m in modes)
              + "".join(f"{med(rate_ratios[(name, m)]):14.3f}" for m in others))
    print(f"{'CPU us per task':28}" + "".join(f"{m:>12}" for m in modes) + "".join(f"{m + ' /':>14}" for m in others))
    for name, tasks, _ in workloads:
        print(f"{f'{name} ({tasks:,})':28}" + "".join(f"{med(cpus[(name, m)]):12,.1f}" for m in modes)
              + "".join(f"{med(cpu_ratios[(name, m)]):14.3f}" for m in others))
    traced = [m for m in modes if m.startswith("traced")]
    if traced:
        print(f"{'tracing thread, share of CPU':28}" + "".join(f"{m:>12}" for m in traced))
        for name, tasks, _ in workloads:
            print(f"{f'{name} ({tasks:,})':28}" + "".join(f"{med(tracer_cpus[(name, m)]):12.3f}" for m in traced))
    print("target: tasks/s ratio >= 0.95 and CPU ratio <= 1.05 (timings, and tracing when enabled, cost W1 and W2 "
          "no more than 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
