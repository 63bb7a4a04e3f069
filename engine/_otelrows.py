# SPDX-License-Identifier: GPL-3.0-or-later
"""The tracing helper process: the spans of task runs made from the database's rows, exported by the SDK.

Run as `python -P engine/_otelrows.py FD` by engine._otelproc. It imports
nothing of the engine (engine._otelspans is loaded by its path, as a module
of its own): only the standard library, OpenTelemetry, and psycopg for a
database on PostgreSQL.

It reads its standard input, frames of 4 bytes of length and a pickle
written by the engine's process alone: first ("start", database, after,
identity), then ("flush",) and ("close",). database is {"sqlite": the
file} or {"postgresql": a libpq URL, password included: never on the
command line, where another user could read it}; after is the id of the
last row of task_timing_batches already there when tracing started;
identity names the database in trace ids; writer names the engine's
batches (their "by": on a database several engines share, each helper
makes the spans of its own engine's runs). It answers "ready CPU HOW" (HOW:
"requests" or "batches", output's choice; or "error MESSAGE") once its provider is made and the database opened, then
"flushed CPU" and "closed CPU", on the file descriptor named by its
argument.

Every POLL seconds, at a flush and at the end, it reads the rows of
task_timing_batches after the last it read (ids increase), with their
change's kind, summary and spawn time, its tasks' kinds (kept: a task's
kind never changes) and, for a run that ended in error, the last error of
its task's log up to the run's end; makes their spans (engine._otelspans),
and ends the span of each change it holds open that its row says is ready
(at its ready time, with its status), and exports the spans made (output:
Requests, the runs' spans written by engine._otelwire and sent by the SDK's
OTLP/HTTP exporter, where that is sure to give what the SDK's encoder
would; else Batches, ReadableSpans to the SDK's batch processors). Each
read is a short transaction of
its own (SQLite: the file opened read-only, PRAGMA query_only; it never
holds back a checkpoint). A change's trace id is derived from the
database's identity, the change's id and its spawn time: a helper started
anew (the engine restarted) puts the runs of a change begun before into
the same trace, under a change span of its own. At the end of its input
(the engine closed it, or died) it reads what is left, ends the change
spans still open (status "unfinished"), exports and exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import operator
import os
import pickle
import select
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

#: How often the helper reads the rows written since it last read, in seconds: a span is exported at most this
#: long (and the SDK's batch delay, OTEL_BSP_SCHEDULE_DELAY: 5 s by default) after its batch was committed.
POLL = 0.5
#: How many rows of task_timing_batches are read at a time.
ROWS = 64
#: How many task kinds are kept.
KINDS = 65_536


class ChosenIds(RandomIdGenerator):
    """ChosenIds is the SDK's RandomIdGenerator, whose next trace id may be chosen (a change's: Spans._root)."""

    chosen = 0

    def generate_trace_id(self) -> int:
        chosen, self.chosen = self.chosen, 0
        return chosen or super().generate_trace_id()


def trace_id_of(identity: str, cid: int, spawn: str) -> int:
    """trace_id_of is the trace id of a change: 128 bits of SHA-256 of the database's identity, the change's id and
    its spawn time (as the row holds it), never 0."""
    digest = hashlib.sha256(f"{identity}\n{cid}\n{spawn}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


class Rows:
    """Rows reads what the spans need from the database: SQLite's file, or PostgreSQL through psycopg."""

    def __init__(self, database: dict[str, str]) -> None:
        if "sqlite" in database:
            uri = Path(database["sqlite"]).resolve().as_uri() + "?mode=ro"
            self._db: Any = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA query_only = ON")
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._mark = "?"
        else:
            import psycopg

            self._db = psycopg.connect(database["postgresql"], autocommit=True)
            self._db.execute("SET default_transaction_read_only = on")
            self._mark = "%s"

    def _query(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        if self._mark != "?":
            sql = sql.replace("?", self._mark)
        return list(self._db.execute(sql, args).fetchall())

    def batches(self, after: int) -> list[Any]:
        """batches are the next rows of task_timing_batches after the id after: id, change id, runs (JSON text), and
        the change's kind, summary and spawn time."""
        return self._query(
            "SELECT b.id, b.change_id, b.runs, c.kind, c.summary, c.spawn_time FROM task_timing_batches b"
            " JOIN changes c ON c.id = b.change_id WHERE b.id > ? ORDER BY b.id LIMIT ?", (after, ROWS))

    def kinds(self, tids: list[int]) -> dict[int, str]:
        """kinds are the kinds of tasks."""
        out: dict[int, str] = {}
        for i in range(0, len(tids), 500):
            part = tids[i:i + 500]
            out.update(self._query(f"SELECT id, kind FROM tasks WHERE id IN ({','.join('?' * len(part))})", part))
        return out

    def error(self, tid: int, until: str) -> str:
        """error is the last error in a task's log up to a time (a run's end), or ""."""
        rows = self._query("SELECT message FROM task_log WHERE task_id = ? AND level = 'ERROR' AND time <= ?"
                           " ORDER BY id DESC LIMIT 1", (tid, until))
        return str(rows[0][0]) if rows else ""

    def ready(self, cids: list[int]) -> list[Any]:
        """ready are the changes among cids that are ready: id, ready time, status."""
        out: list[Any] = []
        for i in range(0, len(cids), 500):
            part = cids[i:i + 500]
            out += self._query(f"SELECT id, ready_time, status FROM changes WHERE ready_time IS NOT NULL"
                               f" AND id IN ({','.join('?' * len(part))})", part)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()


class Reader:
    """Reader turns the rows written since it last read into spans (Spans of engine._otelspans), exported by out
    (Requests, or Batches)."""

    def __init__(self, rows: Rows, spans: Any, out: Any, after: int, writer: str) -> None:
        self.rows, self.spans, self.out = rows, spans, out
        self._writer = writer  # the engine's batches ("by"): those of other engines on the database are theirs
        self.after = after
        self._kinds: dict[int, str] = {}

    def read(self) -> int:
        """read makes the spans of the rows written since the last read, ends the changes seen ready, and exports
        them; how many runs it read."""
        count = 0
        while True:
            batches = self.rows.batches(self.after)
            for bid, cid, text, kind, summary, spawn in batches:
                self.after = bid
                batch = json.loads(text)
                if batch.get("by", self._writer) != self._writer:
                    continue  # another engine's runs (a shared PostgreSQL database): its own helper's
                columns = self._columns(batch)
                count += len(columns[0])
                self.out.batch((cid, kind, summary, _time(spawn), None), columns, _id_texts(text))
            if len(batches) < ROWS:
                break
        open_ = self.spans.open
        if open_:
            for cid, ready, status in self.rows.ready(open_):
                self.spans.end_root(cid, _time(ready), status)
                self.out.ended()
        self.out.flush()  # exported now (with the SDK's batch processor: not after its delay, 5 s by default)
        return count

    def _columns(self, batch: dict[str, Any]) -> tuple[Any, ...]:
        """_columns are a batch's runs as engine._otelwire's Encoder.batch takes them, column by column (its Columns):
        the task ids, their kinds (one for all when they share it), phases, attempts and outcomes as the batch has
        them (one for all, or a list), starts in microseconds, durations in seconds, and the errors of the runs that
        failed (the last error of their task's log up to their end), by index: made by maps over the batch's
        arrays, without a step in Python per run (but for the runs that failed)."""
        tids = batch["task_id"]
        n = len(tids)
        kind = batch.get("kind")
        if kind is None:  # (a batch written before the batches had their kinds: the tasks' kinds, read)
            kinds = self._kinds
            missing = set(tids).difference(kinds)
            if missing:
                if len(kinds) + len(missing) > KINDS:
                    kinds.clear()
                    missing = set(tids)
                kinds.update(dict.fromkeys(missing, ""))  # (a task gone: no kind)
                kinds.update(self.rows.kinds(list(missing)))
            kind = list(map(kinds.__getitem__, tids))
            if kind.count(kind[0]) == n:
                kind = kind[0]
        outcome = batch["outcome"]
        starts = list(map(operator.add, batch["started"], repeat(batch["since"], n)))
        durations = batch["duration"]
        errors = {}
        if "error" in outcome if type(outcome) is list else outcome == "error":
            rows = self.rows
            for i, (tid, ended) in enumerate(zip(tids, map(operator.add, starts, durations), strict=True)):
                if outcome == "error" or outcome[i] == "error":
                    errors[i] = rows.error(tid, _text(ended))
        return (tids, kind, batch["phase"], batch["attempt"], outcome, starts,
                list(map(operator.mul, durations, repeat(1000, n))), errors)


class Requests:
    """Requests exports the runs' spans as OTLP requests that engine._otelwire writes from the runs, through the
    SDK's OTLP/HTTP exporters' own export, with the change spans the SDK made (collected as they end: ended)."""

    def __init__(self, encoder: Any, exporters: list[Any], ended: list[Any], size: int) -> None:
        self._encoder, self._exporters, self._ended, self._size = encoder, exporters, ended, size
        self._spans: list[bytes] = []
        self._wire = sys.modules["_otelwire"]

    def batch(self, change: tuple[Any, ...], columns: tuple[Any, ...], texts: list[bytes] | None = None) -> None:
        self._spans += self._encoder.batch(change, columns, texts)
        if len(self._spans) >= self._size:
            self._send()

    def ended(self) -> None:
        pass

    def flush(self) -> None:
        if self._ended:
            ended, self._ended[:] = list(self._ended), []
            self._spans += self._encoder.ended(ended)
        self._send()

    def _send(self) -> None:
        spans, self._spans = self._spans, []
        for i in range(0, len(spans), self._size):
            part = spans[i:i + self._size]
            encoded = self._wire.Encoded(self._encoder.request(part), len(part))
            for exporter in self._exporters:  # (a failure is the exporter's to log, as under a batch processor)
                exporter.export(encoded)

    def close(self, provider: Any) -> None:
        self.flush()
        for exporter in self._exporters:
            exporter.shutdown()
        provider.shutdown()


class Batches:
    """Batches hands the spans as ReadableSpans to the provider's batch processors (BatchSpanProcessor)."""

    def __init__(self, spans: Any, provider: Any, room: int) -> None:
        self._spans, self._provider, self._room = spans, provider, room
        self._made = 0

    def batch(self, change: tuple[Any, ...], columns: tuple[Any, ...], texts: list[bytes] | None = None) -> None:
        """batch makes the spans of a change's runs (Reader._columns) as ReadableSpans, a run at a time."""
        tids, kind, phase, attempt, outcome, starts, durations, errors = columns
        n = len(tids)
        kinds, phases, attempts, outcomes = (c if type(c) is list else [c] * n for c in (kind, phase, attempt, outcome))
        # (start in microseconds, duration in seconds): Spans makes the span from start to start + duration.
        self.runs([(tid, phases[i], attempts[i], outcomes[i], starts[i], durations[i] / 1e9,
                    (kinds[i], errors.get(i), change))
                   for i, tid in enumerate(tids)])

    def runs(self, runs: list[Any]) -> None:
        room = self._room
        for i in range(0, len(runs), room):
            self._spans.make(runs[i:i + room])
            self._made += len(runs[i:i + room])
            if self._made >= room:
                # The batch processors drop the spans that find their queue full: once spans for half a queue
                # were made, they are exported before more are made.
                self.flush()

    def ended(self) -> None:
        self._made += 1

    def flush(self) -> None:
        if self._made:
            self._provider.force_flush()
            self._made = 0

    def close(self, provider: Any) -> None:
        provider.shutdown()


class _Ended(SpanProcessor):
    """_Ended is a span processor that keeps the spans that end (the change spans, for Requests)."""

    def __init__(self, ended: list[Any]) -> None:
        self.ended = ended

    def on_end(self, span: Any) -> None:
        self.ended.append(span)


def output(otelspans: Any, identity: str) -> tuple[Any, Any, Any]:
    """output is the helper's provider, its Spans, and how their spans are exported: Requests where every exporter
    of OTEL_TRACES_EXPORTER is the SDK's OTLP/HTTP exporter and engine._otelwire writes the spans of sample runs as
    the SDK's encoder does, else Batches (each exporter behind a BatchSpanProcessor)."""
    exporters = otelspans.exporters_from_environment()

    def spans_of(provider: Any) -> Any:
        return otelspans.Spans(provider, lambda start_us, _: start_us * 1000,
                               lambda change: trace_id_of(identity, change[0], _text_of(change[3])))

    ended: list[Any] = []
    provider = otelspans.bare_provider(ChosenIds())
    wire = _load("_otelwire") if exporters and _otlp_http(exporters) else None
    if wire is not None and all(wire.install(e) for e in exporters):
        provider.add_span_processor(_Ended(ended))
        spans = spans_of(provider)
        if spans.parts is not None:
            tried: list[Any] = []
            trial = otelspans.bare_provider(ChosenIds())
            trial.add_span_processor(_Ended(tried))
            trial_spans = spans_of(trial)
            sample = _sample_runs()
            trial_spans.make(sample)
            if wire.agrees(trial_spans, sample, tried):
                for exporter in exporters:
                    wire.settle(exporter)
                return provider, spans, Requests(wire.Encoder(spans), exporters, ended, _request_size(wire))
        logging.getLogger("engine.tracing").info("the tracing helper exports through the SDK's batch processor")
        provider = otelspans.bare_provider(ChosenIds())
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    spans = spans_of(provider)
    return provider, spans, Batches(spans, provider, max(1, otelspans.queue_size() // 2))


def _id_texts(text: str) -> list[bytes] | None:
    """_id_texts are the task ids of a batch's row (its JSON text) as the text each is written in there, as
    bytes (the same as str of the int: JSON's integers); None where the row holds no array of them."""
    start = text.find('"task_id":[')
    end = text.find("]", start)
    if start < 0 or end < 0:
        return None
    return text[start + 11:end].encode().split(b",")


def _otlp_http(exporters: list[Any]) -> bool:
    return all(type(e).__module__.startswith("opentelemetry.exporter.otlp.proto.http") for e in exporters)


def _request_size(wire: Any) -> int:
    """_request_size is how many spans a request holds: OTEL_BSP_MAX_EXPORT_BATCH_SIZE if set, else REQUEST_SPANS."""
    try:
        return max(1, int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "") or wire.REQUEST_SPANS))
    except ValueError:
        return int(wire.REQUEST_SPANS)


def _sample_runs() -> list[Any]:
    """_sample_runs are runs of two changes, as Reader._runs makes them, that exercise each field of a run's span:
    errors with and without a message, an undo, a retry, text beyond ASCII, a run that starts before its change."""
    spawn = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    us = int((spawn - _EPOCH).total_seconds()) * 1_000_000
    one = (7, "install", "Install \u00e9t\u00e9", spawn, None)
    two = (123456789012, "refresh", "", spawn + timedelta(seconds=1), None)
    return [
        (1, "do", 1, "done", us + 10, 0.000123, ("noop", None, one)),
        (2, "do", 1, "error", us + 20, 1.5, ("f\u00e6il", "disk on fire \u2603", one)),
        (3, "undo", 2, "undone", us + 30, 0.0, ("noop", None, one)),
        (4, "do", 300, "retry", us - 5, 2.25, ("noop", "", one)),
        (98765432101234, "do", 1, "wait", us + 2_000_000, 0.5, ("x" * 200, None, two)),
    ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(text: str) -> datetime:
    """_time is the engine's time text (2026-12-07T19:30:00.000000Z) as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(us: int) -> str:
    """_text is microseconds since the epoch as the engine's time text."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _load(name: str) -> Any:
    """_load loads engine/NAME.py by its path, as a module of its own (not the engine's package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_frame(fd: int) -> Any:
    """read_frame reads one frame (4 bytes of length, then a pickle) from fd; None at its end, or at a frame
    cut short (its writer died while writing)."""
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    body = _read_exactly(fd, int.from_bytes(head, "big"))
    return None if body is None else pickle.loads(body)


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts = []
    while n:
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            return None
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def main(argv: list[str]) -> int:
    """main is the tracing helper: spans of the runs read from the database, exported by the SDK's provider made
    from the OTEL_* variables; it answers on the file descriptor argv[1] and exits at the end of its input."""
    # Ended by the end of its input alone (the engine's process closing it, or dying): a Ctrl-C or a service
    # manager's SIGTERM to the whole group would otherwise cut the export of the last spans short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = int(argv[1])

    def answer(line: str) -> None:
        with contextlib.suppress(OSError):  # the engine's process is gone: the end of the input follows
            os.write(answers, line.encode() + b"\n")

    start = read_frame(0)
    if start is None or start[0] != "start":
        return 0
    _, database, after, identity, writer = start
    try:
        otelspans = _load("_otelspans")
        provider, spans, out = output(otelspans, identity)
        rows = Rows(database)
    except Exception as e:
        config = type(e).__name__ == "ConfigError"
        answer(f"error {e}" if config else f"error {type(e).__name__}: {e}")
        return 1
    reader = Reader(rows, spans, out, after, writer)
    answer(f"ready {time.process_time()!r} {type(out).__name__.lower()}")
    while True:
        if not select.select([0], [], [], POLL)[0]:
            _read(reader)
            continue
        frame = read_frame(0)
        if frame is None or frame[0] == "close":
            break
        if frame[0] == "flush":
            _read(reader)
            provider.force_flush()
            answer(f"flushed {time.process_time()!r}")
    _read(reader)
    spans.end_open()
    out.close(provider)
    rows.close()
    answer(f"closed {time.process_time()!r}")
    return 0


def _read(reader: Reader) -> None:
    try:
        reader.read()
    except Exception as e:  # a database busy or gone a moment: read again at the next poll
        logging.getLogger("engine.tracing").error("the tracing helper cannot read the runs: %s: %s",
                                                  type(e).__name__, e)


def _text_of(spawn: datetime) -> str:
    return spawn.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
