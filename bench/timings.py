# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.timings: what keeping timings (engine.timings) and tracing (engine.tracing) cost W1 and W2.

Each round runs W1 (one change of 10,000 independent no-op tasks) and W2 (a
chain of 1,000) in each mode, each run in a fresh process on a fresh
database file:

- "without": no instrumentation (the timings' two hooks made no-ops);
- "timings": the engine as it is with tracing disabled (every handler run
  kept as a row, written in batches by commits that happen anyway);
- "traced": timings and tracing enabled in the engine's process, where the
  OpenTelemetry SDK is installed (a global TracerProvider of the
  application's): a span per run and per change, through the SDK's
  BatchSpanProcessor to an exporter that drops them; the time runs until
  every span is made and exported;
- "helper": tracing from the standard variables alone
  (OTEL_TRACES_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT): the spans made
  from the database's rows by the engine's helper process (engine._otelproc,
  engine._otelrows) and exported by the
  SDK's OTLP exporter over HTTP to a sink in a process of its own that
  answers 200 (bench/otlp.py); the time runs until the helper has exported
  every span; the helper's CPU time is reported beside the engine's;
- "traced-api" (with --api): as "traced", every run's span made through the
  SDK's start_span and end (what the engine did before its fast path);
- "traced-otlp" (with --otlp): as "traced", to the SDK's OTLP exporter over
  HTTP to the sink, in the engine's process (what "helper" takes out of it).

Paired rounds: in each round each mode runs beside a run of "without" of
its own, the two back to back, which goes first alternating, the pairs of
the modes in turn; a ratio is a run's figure over its pair's "without" run,
seconds apart, so that the drift of a shared machine's load cancels out
(h27e; before, a round's modes ran back to back against one "without").
The figure the goal is about comes first, and again last (PRIMARY): the
CPU time per task of every process of ours, the engine's and, for
"helper", the helper process's (not the OTLP sink's: the collector's
stand-in), and tasks/s until every span is exported beside it, each as
its median, the median of its pairs' ratios, their spread (the middle half
from 4 pairs on, else lowest to highest), and whether that spread meets
the goal (CPU <= 1.05, tasks/s >= 0.95: "met" all of it, "NOT met" none of
it, "unsure" the noise larger than the cost). The tables give the
medians of the rounds, and the median of the pairs' ratios to "without"
with the middle half of them, of: tasks/s until
every span is exported (submit and run, then the tracer or helper caught
up); tasks/s until the change's tasks are ready (what the application sees:
the same run, less the export's lag); the process's CPU time per task (all
threads) until the change was ready, and until the process is quiet after
it (every mode alike waits for that: the engine's last ensure pass after
W1's change is ready costs some 0.15 s of CPU, which a traced mode's wait
for its export counted and the others did not, 15 us a task of W1 that
tracing does not cost) and, for "helper", the engine's and the helper's
together (helper+). Then, traced, the share of the process's
CPU time that the tracing thread spent, the export lag (from the change's
ready to its last span exported), and the helper's CPU per task.

Each round also measures the instrumentation's direct CPU cost per run
(direct): in one process, commits recording 16 runs each (W1) or one (W2),
the modes alternating every batch (BATCH_RUNS runs), so that the load of a shared
machine, which moves the A/B ratios by 10 to 30 %, weighs on the modes
alike; that cost over the A/B's "without" CPU per task is printed beside
the goal. For "helper", the engine's process's cost (what the goal is
about) and the helper's own, per run it read (it reads the runs of the
"timings" and "traced" blocks too), are shown apart, then their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import DEFAULT_TMP, RESULT_PREFIX, ROOT, BenchError
from .timingsout import primary, tables

TIMEOUT = 600.0


#: What a timed run gives (_one): tasks/s until every span is exported, and until the tasks were ready; the engine's
#: process's CPU us per task (until quiet), its tracing thread's, the helper's; the export lag after the last task, in
#: ms; the engine's process's CPU us per task until the change was ready.
Run = tuple[float, float, float, float, float, float, float]


def _one(tmp: Path, name: str, tasks: int, chained: bool, mode: str, endpoint: str) -> Run:
    db = tmp / f"{name}-{mode}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    result = _child("timed", {"db": str(db), "tasks": tasks, "chained": chained, "mode": mode,
                              "endpoint": endpoint})
    per_task = 1e6 / tasks
    return (float(result["tasks_per_s"]), tasks / result["ready_s"], result["cpu_s"] * per_task,
            result.get("tracer_cpu_s", 0.0) * per_task, result.get("helper_cpu_s", 0.0) * per_task,
            result["export_lag_s"] * 1e3, result["cpu_ready_s"] * per_task)


def _otlp_environment(endpoint: str) -> None:
    os.environ.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def timed(db: str, tasks: int, chained: bool, mode: str, endpoint: str) -> dict[str, Any]:
    """timed is W1 (or W2, chained) in one mode (the module's docstring), in this process.

    Traced, the time runs until every span is made and exported (the tracer's
    thread and the SDK's batch processor, or the helper, have caught up), so
    that no part of the tracing's work falls outside it.
    """
    from bench.workloads import _run_one_change

    if mode == "without":
        from engine.timings import TimingBook

        TimingBook.task_run = lambda *args, **kw: None  # type: ignore[method-assign]
        TimingBook.ensure_pass = lambda *args, **kw: None  # type: ignore[method-assign]
    figures: dict[str, float] = {}
    if mode in ("without", "timings"):
        return _figures(_run_one_change(db, tasks, chained=chained, ready_timeout=TIMEOUT,
                                        after_ready=_finished(figures, None)), figures)
    spans = [0]
    provider: Any = None
    _otlp_environment(endpoint)  # the Overlord traces: through the global provider, if one is set, else the helper
    if mode == "helper":
        import engine.overlord
        from engine.tracing import trace_from_environment

        def started(state: Any) -> bool:
            """started is trace_from_environment, once the helper is ready (as a daemon's, started long before)."""
            from engine.session import session_of

            traced = trace_from_environment(state)
            if not traced or not session_of(state).uow.timings.tracer.flush(TIMEOUT):
                raise BenchError("the tracing helper did not start")
            return traced

        engine.overlord.trace_from_environment = started  # type: ignore[attr-defined]
    else:
        if mode == "traced-api":
            from engine import _otelspans

            _otelspans._FastRuns.of = classmethod(lambda cls, tracer: None)  # type: ignore[method-assign,assignment]
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        from engine._otel import provider_from_environment

        class Drop(SpanExporter):
            def export(self, batch: Any) -> SpanExportResult:
                spans[0] += len(batch)
                return SpanExportResult.SUCCESS

        if mode == "traced-otlp":
            provider = provider_from_environment()
        else:
            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)

    def caught_up(o: Any) -> None:
        tracer = o.state._uow.timings.tracer
        if tracer is None or not tracer.flush(TIMEOUT):
            raise BenchError("the tracer is off, or did not catch up")
        figures["tracer_cpu_s"] = tracer.cpu_seconds
        if mode == "helper":
            figures["helper_cpu_s"] = tracer.helper_cpu_seconds
            figures["helper_start_cpu_s"] = tracer.helper_start_cpu_seconds
        elif not provider.force_flush():
            raise BenchError("the spans could not be exported")

    from bench.otlp import received

    before = received(endpoint) if mode in ("helper", "traced-otlp") else 0
    result = _run_one_change(db, tasks, chained=chained, ready_timeout=TIMEOUT,
                             after_ready=_finished(figures, caught_up))
    if mode in ("helper", "traced-otlp"):
        spans[0] = received(endpoint) - before
    # (traced-otlp: the SDK's batch processor in the engine's process drops spans when its queue is full)
    if mode in ("traced", "helper") and spans[0] < tasks:
        raise BenchError(f"only {spans[0]} spans of {tasks} task runs were exported")
    return _figures(result, figures)


def _finished(figures: dict[str, float], caught_up: Any) -> Any:
    """_finished is what a timed run does once its change is ready, in every mode alike: the tracer's catching up
    (caught_up, traced), then a wait until the engine's process is quiet (its work after the change's ready: the
    last ensure pass over a change of 10,000 tasks costs W1 some 0.15 s of CPU, which a traced mode's wait for its
    export would otherwise count and the others not); figures gets the clocks at each step."""
    import time

    def after_ready(o: Any) -> None:
        figures["ready_t"], figures["ready_cpu"] = time.perf_counter(), time.process_time()
        if caught_up is not None:
            caught_up(o)
        figures["exported_t"] = time.perf_counter()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # quiet: less than 2 ms of CPU in 100 ms
            c0 = time.process_time()
            time.sleep(0.1)
            if time.process_time() - c0 < 0.002:
                break
        figures["end_t"], figures["end_cpu"] = time.perf_counter(), time.process_time()

    return after_ready


def _figures(result: dict[str, Any], figures: dict[str, float]) -> dict[str, Any]:
    """_figures are a timed run's: tasks/s until every span was exported and until the change was ready, the export
    lag between them, the CPU until ready and until quiet (cpu_s), and the tracer's."""
    total = result["total_s"]  # (from the submit to the end of _finished's wait)
    end_t, end_cpu = figures.pop("end_t"), figures.pop("end_cpu")
    ready_s = total - (end_t - figures.pop("ready_t"))
    exported_s = total - (end_t - figures.pop("exported_t"))
    out = {**result, **figures, "ready_s": ready_s, "exported_s": exported_s, "export_lag_s": exported_s - ready_s,
           "cpu_ready_s": result["cpu_s"] - (end_cpu - figures.pop("ready_cpu"))}
    out["tasks_per_s"] = result["tasks"] / exported_s
    return out


def direct(db: str, runs: int, per_commit: int, traced: bool, endpoint: str = "") -> dict[str, float]:
    """direct is the CPU time per run that timings, and tracing, add to the commits that record runs (in-process).

    One process, one State on db with a change of `runs` tasks: blocks of
    commits, each commit dirtying per_commit tasks (what recording an
    outcome writes), alternate between the three modes: nothing noted, each
    run noted (TimingBook.task_run, its row written in batches by the commits; those left waiting at the
    end of a block by one more commit, counted in the block), and,
    traced, its span too (the block waits for the tracing thread, whose CPU
    time counts, and the SDK's batch processor exports to an exporter that
    drops the spans), and, with an endpoint, its span made by the helper
    process from the rows ("helper": this process's CPU, nothing more than
    timings' work by design, so what it measures is what the helper reading
    the same database beside it costs; it reads them every POLL seconds, and
    at a flush at the end that waits until it exported every run written;
    "helper-process": its CPU over the whole run, per run it read).
    Blocks of the modes follow each other within milliseconds, so the load of a shared machine weighs on them alike: the
    median over the cycles of blocks of a mode's CPU time per run less that
    of "nothing noted" in the same cycle is what the instrumentation costs a
    run, whatever the workload around it.
    """
    import time

    from engine import State
    from engine.session import session_of
    from engine.timings import BATCH_RUNS

    st = State.open(db, synchronous="NORMAL")  # no sync per commit: CPU time is measured, not the disk's waits
    try:
        with st:
            chg = st.new_change("bench", "direct cost")
            ids = []
            for i in range(runs):
                t = st.new_task("noop", f"task {i}")
                chg.add_task(t)
                ids.append(int(t.id))
        w = session_of(st).uow
        book = w.timings
        tracer: Any = None
        provider: Any = None
        helper: Any = None
        if traced and endpoint:
            from engine._otelproc import ProcessTracer, database_of

            _otlp_environment(endpoint)
            with st:
                where = database_of(w)
            assert where is not None
            helper = ProcessTracer(w, st, where)
            if not helper.flush(TIMEOUT):  # started
                raise BenchError("the tracing helper did not start")
        if traced:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

            from engine import _otel

            class Drop(SpanExporter):
                def export(self, batch: Any) -> SpanExportResult:
                    return SpanExportResult.SUCCESS

            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(Drop()))
            tracer = _otel.Tracer(w, provider)
        modes = ["without", "timings", *(["traced"] if traced else []), *(["helper"] if helper else [])]
        diffs: dict[str, list[float]] = {mode: [] for mode in [*modes[1:], *(["helper-process"] if helper else [])]}
        # Runs per block: a batch's worth (BATCH_RUNS), written by one of the block's commits as in a run.
        block = max(per_commit, BATCH_RUNS // per_commit * per_commit)
        h0 = helper.helper_cpu_seconds if helper is not None else 0.0
        cycles = 0
        for cycle, k in enumerate(range(0, runs - block + 1, block)):
            cpu = {}
            for mode in modes[cycle % len(modes):] + modes[:cycle % len(modes)]:
                book.tracer = tracer if mode == "traced" else helper if mode == "helper" else None
                c0 = time.process_time()
                for j in range(k, k + block, per_commit):
                    with st:
                        for tid in ids[j:j + per_commit]:
                            rec = w.records.trec(tid)
                            w.dirty_task(rec)
                            if mode != "without":
                                book.task_run(rec, "do", 1, 0.0001)
                if mode != "without":  # the runs left waiting for a batch are written in this block, not the next
                    book.write_all()
                    with st:
                        pass
                if mode == "traced":
                    tracer.flush(60)
                    provider.force_flush()
                cpu[mode] = time.process_time() - c0
            for mode in modes[1:]:
                diffs[mode].append((cpu[mode] - cpu["without"]) / block)
            cycles += 1
        if helper is not None:
            # The helper reads every batch written (those of "timings" and "traced" blocks too), as it does beside
            # a runner: every POLL seconds, and once at the end (this flush). Its CPU over the whole run, per run it
            # read (a flush per cycle, as before h27e, cost it a request per 768 runs: 2 us a run that no runner's
            # helper pays).
            if not helper.flush(TIMEOUT):
                raise BenchError("the tracing helper did not export")
            per_run = (helper.helper_cpu_seconds - h0) / (block * cycles * (len(modes) - 1))
            diffs["helper-process"] = [per_run] * cycles
        if tracer is not None:
            book.tracer = None
            tracer.close()
            provider.shutdown()
        if helper is not None:
            helper.close()
    finally:
        st.close()
    return {mode: statistics.median(d) * 1e6 for mode, d in diffs.items()}


def _child(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """_child runs timed or direct in a fresh process, with the repository on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-m", "bench.timings", "--child", kind, json.dumps(params)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX):]))
    raise BenchError(f"{kind}: the child process exited with {out.returncode} and no figures:\n"
                     + "\n".join((out.stderr or out.stdout).strip().splitlines()[-15:]))


def _have_sdk() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """main runs the rounds and prints the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.timings", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="rounds (default 9)")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke run")
    parser.add_argument("--api", action="store_true", help="also trace every span through start_span")
    parser.add_argument("--otlp", action="store_true", help="also trace to an OTLP/HTTP sink in the engine's process")
    parser.add_argument("--no-helper", action="store_true", help="leave out the helper process's mode")
    parser.add_argument("--only", choices=("w1", "w2"), help="only this workload")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, params = args.child
        got = (timed if kind == "timed" else direct)(**json.loads(params))
        sys.stdout.write(RESULT_PREFIX + json.dumps(got) + "\n")
        return 0
    scale = 10 if args.quick else 1
    # name, tasks, chained, runs a commit records in the direct measurement (W2: one; W1: batches of outcomes)
    workloads = [("W1 fan-out", 10_000 // scale, False, 16), ("W2 chain", 1_000 // scale, True, 1)]
    if args.only:
        workloads = [w for w in workloads if w[0].lower().startswith(args.only)]
    modes = ["without", "timings"]
    sdk = _have_sdk()
    helper = sdk and not args.no_helper
    if sdk:
        modes += ["traced", *(["helper"] if helper else []), *(["traced-api"] if args.api else []),
                  *(["traced-otlp"] if args.otlp else [])]
    rates: dict[tuple[str, str], list[float]] = {}
    ready_rates: dict[tuple[str, str], list[float]] = {}
    ready_ratios: dict[tuple[str, str], list[float]] = {}
    lags: dict[tuple[str, str], list[float]] = {}
    ready_cpus: dict[tuple[str, str], list[float]] = {}
    ready_cpu_ratios: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    rate_ratios: dict[tuple[str, str], list[float]] = {}
    cpu_ratios: dict[tuple[str, str], list[float]] = {}
    tracer_cpus: dict[tuple[str, str], list[float]] = {}
    helper_cpus: dict[tuple[str, str], list[float]] = {}
    directs: dict[tuple[str, str], list[float]] = {}
    all_cpus: dict[tuple[str, str], list[float]] = {}
    all_ratios: dict[tuple[str, str], list[float]] = {}
    DEFAULT_TMP.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="timings-", dir=DEFAULT_TMP))
    sink = None
    endpoint = ""
    if helper or "traced-otlp" in modes:
        sink = subprocess.Popen([sys.executable, "-m", "bench.otlp"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert sink.stdout is not None
        endpoint = f"http://127.0.0.1:{int(sink.stdout.readline())}"
    try:
        for r in range(args.runs):
            for name, tasks, chained, per_commit in workloads:
                # Paired: each mode's run beside a run of "without" (the pair's order alternating), the pairs of
                # the modes in turn; a ratio is a run's over its own pair's "without" run, seconds apart.
                others = modes[1:]
                order = others[r % len(others):] + others[:r % len(others)]
                pairs: list[tuple[str, Run, Run]] = []
                for i, mode in enumerate(order):
                    first, second = ("without", mode) if (r + i) % 2 == 0 else (mode, "without")
                    ran = {m: _one(tmp, name.split()[0], tasks, chained, m, endpoint) for m in (first, second)}
                    pairs.append((mode, ran[mode], ran["without"]))
                    pairs.append(("without", ran["without"], ran["without"]))
                for mode, run, base in pairs:
                    rate, ready_rate, cpu, tracer_cpu, helper_cpu, lag, ready_cpu = run
                    every = cpu + helper_cpu  # (the CPU of every process of ours: the engine's, and the helper's)
                    all_cpus.setdefault((name, mode), []).append(every)
                    all_ratios.setdefault((name, mode), []).append(every / base[2])
                    ready_cpus.setdefault((name, mode), []).append(ready_cpu)
                    ready_cpu_ratios.setdefault((name, mode), []).append(ready_cpu / base[6])
                    tracer_cpus.setdefault((name, mode), []).append(tracer_cpu / cpu)
                    helper_cpus.setdefault((name, mode), []).append(helper_cpu)
                    rates.setdefault((name, mode), []).append(rate)
                    ready_rates.setdefault((name, mode), []).append(ready_rate)
                    lags.setdefault((name, mode), []).append(lag)
                    cpus.setdefault((name, mode), []).append(cpu)
                    rate_ratios.setdefault((name, mode), []).append(rate / base[0])
                    ready_ratios.setdefault((name, mode), []).append(ready_rate / base[1])
                    cpu_ratios.setdefault((name, mode), []).append(cpu / base[2])
                    if mode == "helper":
                        cpus.setdefault((name, "helper+"), []).append(cpu + helper_cpu)
                        cpu_ratios.setdefault((name, "helper+"), []).append((cpu + helper_cpu) / base[2])
                db = tmp / f"direct-{name.split()[0]}.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(str(db) + suffix).unlink(missing_ok=True)
                for mode, us in _child("direct", {"db": str(db), "runs": 6_000 // scale, "per_commit": per_commit,
                                                  "traced": sdk, "endpoint": endpoint if helper else ""}).items():
                    directs.setdefault((name, mode), []).append(us)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if sink is not None:
            sink.terminate()
            sink.wait()
    primary(args.runs, workloads, modes, all_cpus, all_ratios, rates, rate_ratios)
    tables(args.runs, workloads, modes, rates, cpus, rate_ratios, cpu_ratios, tracer_cpus, helper_cpus, directs,
           ready_rates, ready_ratios, lags, ready_cpus, ready_cpu_ratios)
    primary(args.runs, workloads, modes, all_cpus, all_ratios, rates, rate_ratios)  # (again, last: the figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
