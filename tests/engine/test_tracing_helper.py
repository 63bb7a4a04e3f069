# SPDX-License-Identifier: GPL-3.0-or-later
"""Tracing from the OTEL_* variables alone: the spans made and exported by the SDK in a helper process of the
engine's (engine._otelproc), to a real OTLP/HTTP receiver."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, Retry, Task, disable_tracing, enable_tracing
from engine.testing import FakeClock
from engine.tomb import Tomb
from tests.support.helpers import flaky_then_failing_change, run_noop_change

pytest.importorskip("opentelemetry.sdk.trace", reason="the [otel] extra is not installed")
pytest.importorskip("opentelemetry.proto", reason="the OTLP exporter is not installed")
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.otlp import Receiver
from engine import _otelproc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _otlp_env(endpoint: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "my-daemon",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})
    env.update(more)
    return env


@pytest.fixture
def otlp_env(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """otlp_env sets the standard variables of this process to export to receiver (and nothing else of OTEL_*)."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in _otlp_env(receiver.endpoint).items():
        if name.startswith("OTEL_"):
            monkeypatch.setenv(name, value)
    return receiver


def _workload(o: Overlord, clock: FakeClock) -> None:
    """_workload is a change whose first task fails once then runs, whose second fails: 4 runs, one undo."""
    flaky_then_failing_change(o, clock.advance)


def _in_process(path: Path) -> list[dict[str, Any]]:
    """_in_process runs _workload traced in this process (the application's provider) and returns its spans as
    bench.otlp.decode would."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "my-daemon",
                                                        "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock()
    o = Overlord(path, clock=clock)
    try:
        enable_tracing(o.state, tracer_provider=provider)
        _workload(o, clock)
        disable_tracing(o.state)
    finally:
        o.stop()
        o.state.close()
    out = []
    for s in exporter.get_finished_spans():
        assert s.context is not None
        out.append({
            "trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent is not None else "", "name": s.name,
            "kind": f"SPAN_KIND_{s.kind.name}", "start": s.start_time, "end": s.end_time,
            "attributes": dict(s.attributes or {}),
            "status": (f"STATUS_CODE_{s.status.status_code.name}", s.status.description or ""),
            "resource": dict(s.resource.attributes), "scope": s.instrumentation_scope.name
            if s.instrumentation_scope is not None else ""})
    return out


def _shape(spans: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """_shape is what two runs of _workload have in common: each span's name, kind, attributes, status, whether it
    is the change's, its service and scope; the change's start (its spawn time, the FakeClock's)."""
    out = []
    for s in spans:
        root = not s["parent_span_id"]
        out.append((s["name"], s["kind"], sorted(s["attributes"].items()), s["status"], root,
                    s["resource"]["service.name"], s["resource"]["deployment.environment"], s["scope"],
                    s["start"] if root else None))
    return sorted(out, key=repr)


def _check_structure(spans: list[dict[str, Any]]) -> None:
    """_check_structure: one trace, whose change span is the parent of every run's span and holds them in time."""
    (root,) = [s for s in spans if not s["parent_span_id"]]
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    assert len({s["span_id"] for s in spans}) == len(spans)
    for s in spans:
        if s is not root:
            assert s["parent_span_id"] == root["span_id"]
            assert root["start"] <= s["start"] <= s["end"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """database is where the traced engine's state is: a SQLite file, or a PostgreSQL database (the Overlord's
    keyword arguments)."""
    if request.param == "postgresql":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": tmp_path / "helper.db"}


def test_the_helper_makes_the_spans_the_engines_process_makes(tmp_path: Path, otlp_env: Receiver,
                                                              database: dict[str, Any]) -> None:
    expected = _in_process(tmp_path / "in-process.db")
    clock = FakeClock()
    o = Overlord(**database, clock=clock)  # the OTEL_* variables alone: the helper process
    try:
        tracer = o.state._uow.timings.tracer
        assert isinstance(tracer, _otelproc.ProcessTracer)
        _workload(o, clock)
        disable_tracing(o.state)  # the helper flushes, exports and ends
        assert tracer.ended and tracer._proc.returncode == 0  # it ended by itself
        assert tracer.helper_exports == "requests"  # the runs' spans written by engine._otelwire
    finally:
        o.stop()
        o.state.close()
    got = otlp_env.spans()
    assert [s["name"] for s in got if not s["parent_span_id"]] == ["install"]
    assert _shape(got) == _shape(expected)
    _check_structure(got)
    _check_structure(expected)
    (failed,) = [s for s in got if s["name"] == "fail"]
    assert failed["status"] == ("STATUS_CODE_ERROR", "disk on fire")
    assert [s["attributes"]["engine.task.attempt"] for s in got if s["name"] == "flaky"] == [1, 2, 2]


def test_the_helper_exports_every_span_however_fast_the_runs_come(tmp_path: Path, otlp_env: Receiver,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's batch processor drops the spans that find its queue full: the helper exports before it reads more
    runs (here a queue of 64 spans, for 300 runs that come at once)."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32")
    o = Overlord(tmp_path / "state.db")
    try:
        tracer = o.state._uow.timings.tracer
        run_noop_change(o, 300)
        assert tracer.flush(60)
    finally:
        o.stop()
        o.state.close()
    spans = otlp_env.spans()
    assert len([s for s in spans if s["parent_span_id"]]) == 300
    assert [s["name"] for s in spans if not s["parent_span_id"]] == ["install"]


ENGINE = """
    import sys, time
    from engine import Overlord, Retry

    def later(task, tomb):
        raise Retry(after=3600)

    o = Overlord(sys.argv[1])
    o.task_runner.add_handler("later", later)
    with o.state:
        chg = o.state.new_change("wait", "Wait an hour")
        chg.add_task(o.state.new_task("later", "later"))
    o.settle(30)
    tracer = o.state._uow.timings.tracer
    assert tracer.flush(60), "the helper did not export"
    print(tracer.pid, flush=True)
    time.sleep(600)
"""


def _kill_the_engine(script: str, db: Path, receiver: Receiver, before: Any = None) -> None:
    """_kill_the_engine runs script (an engine that prints its helper's pid) on db, checks before() if given,
    SIGKILLs the engine and waits for its helper to end."""
    env = _otlp_env(receiver.endpoint)
    env["PYTHONPATH"] = str(REPO)
    engine = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(db)],
                              env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert engine.stdout is not None
        line = engine.stdout.readline()
        assert line.strip().isdigit(), f"the engine's process said {line!r}"
        helper = os.pidfd_open(int(line))
        if before is not None:
            assert before()
        engine.send_signal(signal.SIGKILL)
        engine.wait(30)
        assert select.select([helper], [], [], 60)[0], "the helper outlived the engine's process"
        os.close(helper)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()

def test_the_helper_exports_what_is_left_and_ends_when_the_engine_is_killed(tmp_path: Path,
                                                                             receiver: Receiver) -> None:
    _kill_the_engine(ENGINE, tmp_path / "state.db", receiver,
                     lambda: [s["name"] for s in receiver.spans()] == ["later"])  # flushed: the change is not ready
    # At the end of its input, the helper ended the change's span, unfinished, and exported it.
    spans = receiver.spans()
    assert [(s["name"], s["attributes"].get("engine.change.status")) for s in spans] == [
        ("later", None), ("wait", "unfinished")]
    _check_structure(spans)


def test_the_helper_exports_the_runs_committed_without_being_asked(tmp_path: Path, otlp_env: Receiver) -> None:
    """The helper reads the rows every POLL seconds and exports at once: no flush, no stop needed."""
    o = Overlord(tmp_path / "state.db")
    try:
        run_noop_change(o, 3)
        with o.state:  # the runs' batch committed, as a busy runner's are within a second
            o.state._uow.timings.write_all()
        assert otlp_env.wait_for(4, 30), otlp_env.spans()
        spans = otlp_env.spans()
        assert sorted((s["name"], s["attributes"].get("engine.change.status")) for s in spans) == [
            ("install", "Done"), ("k", None), ("k", None), ("k", None)]
    finally:
        o.stop()
        o.state.close()


def test_each_engine_on_a_shared_database_traces_its_own_runs(pg_url: str, otlp_env: Receiver) -> None:
    """Two engines on one PostgreSQL database, both traced: each helper makes the spans of its engine's runs only
    (the batches say which engine wrote them), so every run is one span."""
    a, b = Overlord(url=pg_url), Overlord(url=pg_url)
    try:
        run_noop_change(a, 5)
        run_noop_change(b, 3)
    finally:
        a.stop()
        b.stop()
        a.state.close()
        b.state.close()
    runs = [s["attributes"]["engine.task.id"] for s in otlp_env.spans() if s["parent_span_id"]]
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 8


def test_a_database_in_memory_is_traced_in_the_engines_process(otlp_env: Receiver) -> None:
    """No other process can read a private in-memory database: its spans are made in the engine's process, with a
    provider made from the same variables."""
    from engine import _otel

    o = Overlord()
    try:
        assert isinstance(o.state._uow.timings.tracer, _otel.Tracer)
        run_noop_change(o, 2)
    finally:
        o.stop()
        o.state.close()
    assert sorted(s["name"] for s in otlp_env.spans()) == ["install", "k", "k"]


COMMITTED = """
    import sys, time
    from engine import Overlord, _otelnotes

    _otelnotes.GATHER = 3600  # (the pipe's design: runs handed over an hour after their commit)
    o = Overlord(sys.argv[1])
    o.task_runner.add_handler("k", lambda task, tomb: None)
    with o.state:
        chg = o.state.new_change("install", "Install foo")
        chg.add_task(o.state.new_task("k", "one"))
    o.settle(30)
    with o.state:  # the runs' batch committed; nothing more is asked of the tracer
        o.state._uow.timings.write_all()
    print(o.state._uow.timings.tracer.pid, flush=True)
    time.sleep(600)
"""


def test_the_helper_exports_the_runs_an_engine_committed_before_it_was_killed(tmp_path: Path,
                                                                              receiver: Receiver) -> None:
    """The spans come from the committed rows: an engine killed right after a commit loses none of them."""
    _kill_the_engine(COMMITTED, tmp_path / "state.db", receiver)
    spans = receiver.spans()
    assert sorted((s["name"], s["attributes"].get("engine.change.status")) for s in spans) == [
        ("install", "Done"), ("k", None)]
    _check_structure(spans)


def test_a_change_that_spans_a_restart_is_one_trace(tmp_path: Path, otlp_env: Receiver) -> None:
    """The trace id of a change comes from the database and the change: the helper of the engine started again
    puts the change's later runs in the trace its first helper began."""
    clock = FakeClock()
    tries = {"n": 0}

    def later(task: Task, tomb: Tomb) -> None:
        tries["n"] += 1
        if tries["n"] == 1:
            raise Retry(after=3600)

    o = Overlord(tmp_path / "state.db", clock=clock)
    try:
        o.task_runner.add_handler("later", later)
        with o.state:
            chg = o.state.new_change("install", "Install foo")
            chg.add_task(o.state.new_task("later", "later"))
            cid = chg.id
        o.settle(30)  # the retry is due in an hour
    finally:
        o.stop()
        o.state.close()
    first = otlp_env.spans()
    assert [(s["name"], s["attributes"].get("engine.task.outcome")) for s in first if s["parent_span_id"]] == [
        ("later", "retry")]
    o = Overlord(tmp_path / "state.db", clock=clock)
    try:
        o.task_runner.add_handler("later", later)
        o.settle(30, advance=clock.advance)
        with o.state:
            assert o.state.change(cid).status.value == "Done"
    finally:
        o.stop()
        o.state.close()
    spans = otlp_env.spans()
    assert sorted((s["name"], s["attributes"].get("engine.task.outcome"), s["attributes"].get("engine.change.status"))
                  for s in spans) == [("install", None, "Done"), ("install", None, "unfinished"),
                                      ("later", "done", None), ("later", "retry", None)]
    assert len({s["trace_id"] for s in spans}) == 1


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "engine.tracing" and r.levelno == logging.WARNING]


def test_a_helper_that_dies_leaves_the_engine_untraced_with_one_warning(tmp_path: Path, otlp_env: Receiver,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "engine.tracing")
    o = Overlord(tmp_path / "state.db")
    try:
        tracer = o.state._uow.timings.tracer
        assert isinstance(tracer, _otelproc.ProcessTracer)
        run_noop_change(o, 3)
        assert tracer.flush(60)
        os.kill(tracer.pid, signal.SIGKILL)
        run_noop_change(o, 3)  # runs, whatever became of the helper
        assert not tracer.flush(60)  # the helper is gone: nothing was exported
        assert o.state._uow.timings.tracer is None  # untraced from now on
        run_noop_change(o, 3)
    finally:
        o.stop()
        o.state.close()
    (warning,) = _warnings(caplog)
    assert warning.startswith(f"the tracing helper process (pid {tracer.pid}) ")
    assert warning.endswith("(exit code -9); going on without traces")
    assert len([s for s in otlp_env.spans() if s["parent_span_id"]]) == 3


def test_a_helper_that_cannot_start_says_why(tmp_path: Path, otlp_env: Receiver, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "bogus")
    o = Overlord(tmp_path / "state.db")
    try:
        tracer = o.state._uow.timings.tracer
        run_noop_change(o, 2)
        assert not tracer.flush(60)
        assert o.state._uow.timings.tracer is None
    finally:
        o.stop()
        o.state.close()
    assert _warnings(caplog) == [
        f"the tracing helper process (pid {tracer.pid}) could not start: cannot trace: no OpenTelemetry span "
        "exporter named 'bogus' is installed (OTEL_TRACES_EXPORTER) (exit code 1); going on without traces"]


def test_a_stuck_helper_never_holds_the_runner(tmp_path: Path, otlp_env: Receiver, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A helper that never answers: nothing of a run goes through it, the runner goes on; the helper, once it ends,
    is reported and the engine goes on untraced."""
    stuck = tmp_path / "stuck.py"
    stuck.write_text("import time\ntime.sleep(600)\n")
    monkeypatch.setattr(_otelproc, "HELPER", stuck)
    o = Overlord(tmp_path / "state.db")
    try:
        tracer = o.state._uow.timings.tracer
        run_noop_change(o, 100)  # done, though no span of them can be made
        assert _warnings(caplog) == []
        os.kill(tracer.pid, signal.SIGKILL)
        assert not tracer.flush(60)
        assert o.state._uow.timings.tracer is None
    finally:
        o.stop()
        o.state.close()
    (gone,) = _warnings(caplog)
    assert gone == f"the tracing helper process (pid {tracer.pid}) did not start (exit code -9); going on without " \
                   "traces"


def test_stopping_ends_a_helper_that_does_not_end(tmp_path: Path, otlp_env: Receiver,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A helper that starts, then neither reads nor ends: stopping waits CLOSE_WAIT for it, then kills it."""
    deaf = tmp_path / "deaf.py"
    deaf.write_text("import os, sys, time\nos.write(int(sys.argv[1]), b'ready 0.0\\n')\ntime.sleep(600)\n")
    monkeypatch.setattr(_otelproc, "HELPER", deaf)
    monkeypatch.setattr(_otelproc, "CLOSE_WAIT", 1.0)
    o = Overlord(tmp_path / "state.db")
    try:
        tracer = o.state._uow.timings.tracer
        run_noop_change(o, 3)
    finally:
        o.stop()  # disable_tracing: the runs handed over, the helper told to end, then killed
        o.state.close()
    assert tracer._proc.returncode == -signal.SIGKILL
    assert _warnings(caplog) == [
        f"the tracing helper process (pid {tracer.pid}) did not answer (exit code -9); going on without traces"]


def test_the_helper_finds_what_the_engines_process_put_on_its_path(tmp_path: Path, otlp_env: Receiver,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An exporter installed where only the engine's process looks (a directory it put on sys.path at run time, as
    a pex or a plug-in directory does), named by OTEL_TRACES_EXPORTER: the helper finds it too."""
    plugins = tmp_path / "plugins"
    (plugins / "file_exporter-1.0.dist-info").mkdir(parents=True)
    (plugins / "file_exporter-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: file-exporter\nVersion: 1.0\n")
    (plugins / "file_exporter-1.0.dist-info" / "entry_points.txt").write_text(
        "[opentelemetry_traces_exporter]\nfile = file_exporter:FileExporter\n")
    (plugins / "file_exporter.py").write_text(textwrap.dedent("""
        import os
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class FileExporter(SpanExporter):
            def export(self, spans):
                with open(os.environ["SPANS_FILE"], "a") as f:
                    f.writelines(s.name + "\\n" for s in spans)
                return SpanExportResult.SUCCESS
    """))
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "file")
    monkeypatch.setenv("SPANS_FILE", str(tmp_path / "spans.txt"))
    o = Overlord(tmp_path / "state.db")
    try:
        run_noop_change(o, 1)
    finally:
        o.stop()
        o.state.close()
    assert sorted((tmp_path / "spans.txt").read_text().split()) == ["install", "k"]


FORKS = """
    import os, sys, time
    from engine import Overlord

    o = Overlord(sys.argv[1])
    o.task_runner.add_handler("k", lambda task, tomb: None)
    with o.state:
        o.state.new_change("install", "Install foo").add_task(o.state.new_task("k", "one"))
    o.settle(30)
    tracer = o.state._uow.timings.tracer
    assert tracer.flush(60), "the helper did not export"
    child = os.fork()
    if child == 0:  # a daemon's fork: no tracer of its own, and the helper's pipe not held open
        said = "untraced" if o.state._uow.timings.tracer is None and tracer.ended else "traced"
        os.write(1, f"fork {said}\\n".encode())  # one write: the two processes share the pipe
        time.sleep(600)
        os._exit(0)
    os.write(1, f"engine {tracer.pid} {child}\\n".encode())
    time.sleep(600)
"""


def test_a_fork_of_the_engine_neither_traces_nor_keeps_the_helper_alive(tmp_path: Path, receiver: Receiver) -> None:
    env = _otlp_env(receiver.endpoint)
    env["PYTHONPATH"] = str(REPO)
    engine = subprocess.Popen([sys.executable, "-c", textwrap.dedent(FORKS), str(tmp_path / "state.db")],
                              env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    fork = 0
    try:
        assert engine.stdout is not None
        lines = [engine.stdout.readline() for _ in range(2)]
        said = dict(line.split(" ", 1) for line in lines)
        assert said.get("fork", "").strip() == "untraced", lines
        pid, fork = (int(n) for n in said["engine"].split())
        helper = os.pidfd_open(pid)
        engine.send_signal(signal.SIGKILL)
        engine.wait(30)
        # The fork lives on, holding what it inherited: the helper still sees the end of its input.
        assert select.select([helper], [], [], 60)[0], "the helper outlived the engine's process"
        os.close(helper)
        os.kill(fork, 0)  # (still alive)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        if fork:
            os.kill(fork, signal.SIGKILL)
    assert sorted(s["name"] for s in receiver.spans()) == ["install", "k"]
