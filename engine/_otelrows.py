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
makes the spans of its own engine's runs). It answers "ready CPU" (or
"error MESSAGE") once its provider is made and the database opened, then
"flushed CPU" and "closed CPU", on the file descriptor named by its
argument.

Every POLL seconds, at a flush and at the end, it reads the rows of
task_timing_batches after the last it read (ids increase), with their
change's kind, summary and spawn time, its tasks' kinds (kept: a task's
kind never changes) and, for a run that ended in error, the last error of
its task's log up to the run's end; makes their spans (engine._otelspans),
and ends the span of each change it holds open that its row says is ready
(at its ready time, with its status). Each read is a short transaction of
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
import os
import pickle
import select
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    """Reader turns the rows written since it last read into spans (Spans of engine._otelspans)."""

    def __init__(self, rows: Rows, spans: Any, provider: Any, after: int, room: int, writer: str) -> None:
        self.rows, self.spans, self.provider = rows, spans, provider
        self._writer = writer  # the engine's batches ("by"): those of other engines on the database are theirs
        self.after = after
        self._kinds: dict[int, str] = {}
        self._room, self._made = room, 0

    def read(self) -> int:
        """read makes the spans of the rows written since the last read, ends the changes seen ready; how many
        runs it read."""
        count = 0
        while True:
            batches = self.rows.batches(self.after)
            for bid, cid, text, kind, summary, spawn in batches:
                self.after = bid
                batch = json.loads(text)
                if batch.get("by", self._writer) != self._writer:
                    continue  # another engine's runs (a shared PostgreSQL database): its own helper's
                runs = self._runs(cid, batch, (cid, kind, summary, _time(spawn), None))
                count += len(runs)
                room = self._room
                for i in range(0, len(runs), room):
                    self.spans.make(runs[i:i + room])
                    self._made += len(runs[i:i + room])
                    if self._made >= room:
                        # The batch processors drop the spans that find their queue full: once spans for half
                        # a queue were made, they are exported before more are made.
                        self.provider.force_flush()
                        self._made = 0
            if len(batches) < ROWS:
                break
        open_ = self.spans.open
        if open_:
            for cid, ready, status in self.rows.ready(open_):
                self.spans.end_root(cid, _time(ready), status)
                self._made += 1
        if self._made:  # exported now, not after the batch processor's delay (OTEL_BSP_SCHEDULE_DELAY, 5 s)
            self.provider.force_flush()
            self._made = 0
        return count

    def _runs(self, cid: int, batch: dict[str, Any], change: tuple[Any, ...]) -> list[Any]:
        tids = batch["task_id"]
        n = len(tids)
        since = batch["since"]
        fields = [batch[name] if isinstance(batch[name], list) else [batch[name]] * n
                  for name in ("phase", "attempt", "outcome", "started", "duration")]
        kinds = self._kinds
        missing = [tid for tid in set(tids) if tid not in kinds]
        if missing:
            if len(kinds) + len(missing) > KINDS:
                kinds.clear()
            kinds.update(self.rows.kinds(missing))
        runs = []
        for tid, phase, attempt, outcome, started, duration in zip(tids, *fields, strict=True):
            start = since + started
            error = None
            if outcome == "error":
                error = self.rows.error(tid, _text(start + duration))
            # (start in microseconds, duration in seconds): Spans makes the span from start to start + duration.
            runs.append((tid, phase, attempt, outcome, start, duration / 1e6,
                         (kinds.get(tid, ""), error, change)))
        return runs


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(text: str) -> datetime:
    """_time is the engine's time text (2026-12-07T19:30:00.000000Z) as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(us: int) -> str:
    """_text is microseconds since the epoch as the engine's time text."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _load_spans() -> Any:
    """_load_spans loads engine/_otelspans.py by its path, as a module of its own (not the engine's package)."""
    spec = importlib.util.spec_from_file_location("_otelspans", Path(__file__).with_name("_otelspans.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_otelspans"] = module
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
        otelspans = _load_spans()
        provider = otelspans.provider_from_environment(ChosenIds())
        spans = otelspans.Spans(provider, lambda start_us, _: start_us * 1000,
                                lambda change: trace_id_of(identity, change[0], _text_of(change[3])))
        rows = Rows(database)
    except Exception as e:
        config = type(e).__name__ == "ConfigError"
        answer(f"error {e}" if config else f"error {type(e).__name__}: {e}")
        return 1
    reader = Reader(rows, spans, provider, after, max(1, otelspans.queue_size() // 2), writer)
    answer(f"ready {time.process_time()!r}")
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
    provider.shutdown()
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
