# SPDX-License-Identifier: GPL-3.0-or-later
"""The packed rows of task runs (task_timing_batches.runs): how engine.timings writes a batch of runs, and reads it.

A row per change per batch of runs, its runs as arrays (a field each) in
one JSON text, made in C (engine.timings, "Timings" in docs/runner.md).
"""

from __future__ import annotations

import json
import operator
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

#: A run as noted: task id, phase, attempt, outcome, when it ended (the State's clock, in microseconds since the
#: epoch), how long it took (seconds), and what its span needs of it, traced in this process (engine._otelnotes:
#: the task's kind, or (kind, error) for a run that failed; None untraced), and its task's change (None: in none;
#: noted: the task's record may have left the cache by the flush), and its task's kind (written with the batch: the
#: tracing helper reads it there).
Run = tuple[int, str, int, str, int, float, Any, "int | None", str]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The fields of a run in task_timing_batches.runs, each a JSON array (a run is the same index in each), or
#: one value when every run of the batch has that value (phase, attempt, outcome). A batch written since h27e also
#: has "kind" (the task's kind, one value or an array as those): the tracing helper reads it there, not per task.
RUN_FIELDS = ("task_id", "phase", "attempt", "outcome", "started", "duration")


def packed(runs: list[Run], by: str) -> tuple[str, int]:
    """packed is runs as task_timing_batches.runs, and their highest attempt.

    {"by": B, "since": S, "task_id": [...], "phase": [...], "attempt": [...], "outcome": [...], "started": [...],
    "duration": [...], "kind": [...]}: B names the book that wrote it (TimingBook.writer: the tracing helper of
    each engine on a shared database reads its own); S is the end of the first run in microseconds since the
    epoch, a start is the microseconds after S (its end less its duration, in integers: exact, and cheaper than datetime
    arithmetic), a duration is in microseconds (what a TaskTiming keeps); a phase, attempt, outcome or kind that
    all the runs share is written once, not as an array (most batches: "do", 1, "done"). The numbers are
    made and written in C (map, json's encoder), and the row is short: SQLite's cost of a row grows with its
    length (about 8 us a KB).
    """
    tids, phases, attempts, outcomes, ends, elapsed, _, _, kinds = zip(*runs, strict=True)
    n = len(tids)
    durations = list(map(round, map(operator.mul, elapsed, repeat(1e6, n))))
    first = ends[0]
    return _encode({
        "by": by, "since": first, "task_id": list(tids),
        "phase": phases[0] if phases.count(phases[0]) == n else list(phases),
        "attempt": attempts[0] if attempts.count(attempts[0]) == n else list(attempts),
        "outcome": outcomes[0] if outcomes.count(outcomes[0]) == n else list(outcomes),
        "started": list(map(operator.sub, map(operator.sub, ends, durations), repeat(first, n))),
        "duration": durations,
        "kind": kinds[0] if kinds.count(kinds[0]) == n else list(kinds),
    }), max(attempts)


#: The JSON of a batch, made in C (json's encoder: each number's text without a call of str per number).
_encode = json.JSONEncoder(separators=(",", ":")).encode


def unpacked(batch: dict[str, Any], fields: tuple[str, ...] = RUN_FIELDS) -> list[tuple[Any, ...]]:
    """unpacked is the runs of a batch (task_timing_batches.runs, parsed) as tuples of fields (RUN_FIELDS), oldest
    first (a started still in microseconds after the batch's since)."""
    tids = batch["task_id"]
    return list(zip(*(batch[name] if isinstance(batch[name], list) else [batch[name]] * len(tids)
                      for name in fields), strict=True))


def started(end: int, elapsed: float) -> datetime:
    """started is when a run that ended at end (microseconds since the epoch) after elapsed seconds started, to the
    microsecond, as its row says (packed; its span, engine._otel, starts then too)."""
    return _EPOCH + timedelta(microseconds=end - round(elapsed * 1e6))


def micros(when: datetime) -> int:
    """micros is a time in microseconds since the epoch."""
    d = when - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def stamp(when: datetime) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%S.%f}Z"
