# SPDX-License-Identifier: GPL-3.0-or-later
"""History databases: N finished tasks (changes of 10 chained tasks, Done and clean).

Running 100,000 tasks through the engine to build history would measure the
engine, not prepare a benchmark; so the engine runs ONE change of 10 chained
tasks to completion (settle, cleanups included) in a template database, and
its rows (changes, tasks, edges, lanes, log) are cloned with plain sqlite3
inserts, new ids and spread-out times, into a database whose schema the
engine created. The clones are therefore exactly what the engine writes for
such a change. Built files are cached under var/bench-cache/, keyed by the
schema revision, a fingerprint of the schema SQL and of the template's row
shapes, so a changed schema or a change in what the engine writes rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .common import HISTORY_CHAIN, BenchError

#: Bump when the builder's output changes for the same template.
BUILDER_VERSION = 3
#: The template runs under this fixed clock, so every time it writes is this one value.
TEMPLATE_TIME = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
#: History change k gets HISTORY_START + k * HISTORY_STEP as all its times.
HISTORY_START = datetime(2025, 1, 1, tzinfo=UTC)
HISTORY_STEP = timedelta(seconds=10)
_CHUNK_CHANGES = 5_000

#: How each table's columns map when a row of the template is cloned.
#: cid: the new change id; tid: a task id of the new change; auto: left to SQLite; runs: a batch of task runs
#: (engine.timings: JSON with task ids and times in microseconds), its task ids and times moved.
ROLES: dict[str, dict[str, str]] = {
    "changes": {"id": "cid"},
    "tasks": {"id": "tid", "change_id": "cid"},
    "task_dependencies": {"task_id": "tid", "wait_task_id": "tid"},
    "task_lanes": {"task_id": "tid"},
    "task_log": {"id": "auto", "task_id": "tid"},
    "task_timing_batches": {"id": "auto", "change_id": "cid", "runs": "runs"},
}
#: Tables whose rows are not cloned: rows that belong to no change, and the notices (a change-update notice
#: lives 7 days after its change's last transition: a history of finished changes has pruned them).
GLOBAL_TABLES = {"sequences", "alembic_version", "state_data", "warnings", "notices", "ensure_timings"}


def _to_text(when: datetime) -> str:
    from engine._time import to_text

    return to_text(when)


def new_empty_db(path: Path) -> Path:
    """new_empty_db creates a database with the engine's schema and no rows."""
    from engine import State

    path.parent.mkdir(parents=True, exist_ok=True)
    State.open(path).close()
    return path


def schema_fingerprint(path: Path) -> str:
    """schema_fingerprint hashes the schema SQL and revision of a database."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        revision = con.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        con.close()
    return hashlib.sha256(repr((rows, revision)).encode()).hexdigest()


@dataclass
class Template:
    """Template holds the rows the engine wrote for one finished 10-task chained change."""

    columns: dict[str, list[str]]
    rows: dict[str, list[tuple[Any, ...]]]
    time_text: str
    first_task: int
    change_id: int

    def shape_digest(self) -> str:
        """shape_digest hashes the rows with floats (handler run times) blanked."""
        def norm(v: Any) -> Any:
            return "<float>" if isinstance(v, float) else v

        shape = {t: (self.columns[t], [tuple(norm(v) for v in r) for r in rows]) for t, rows in self.rows.items()}
        return hashlib.sha256(repr(sorted(shape.items())).encode()).hexdigest()


def make_template(work_dir: Path) -> Template:
    """make_template runs one change of 10 chained no-op tasks through the engine and reads its rows."""
    from engine import Overlord, Status

    path = work_dir / "template.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    o = Overlord(path, clock=lambda: TEMPLATE_TIME)
    try:
        o.task_runner.add_handler("noop", _noop)
        with o.state:
            chg = o.state.new_change("history", "a finished change of 10 chained tasks")
            prev = None
            for i in range(HISTORY_CHAIN):
                t = o.state.new_task("noop", f"task {i + 1} of the chain")
                if prev is not None:
                    t.wait_for(prev)
                chg.add_task(t)
                prev = t
        o.settle(timeout=120)
        with o.state:
            if chg.status is not Status.DONE or not chg.is_ready() or not chg.is_clean():
                raise BenchError(f"cannot build history: the template change ended {chg.status}, "
                                 f"ready={chg.is_ready()}, clean={chg.is_clean()}")
    finally:
        o.stop()
        o.state.close()
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        columns: dict[str, list[str]] = {}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            n = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if table in GLOBAL_TABLES:
                continue
            if table not in ROLES:
                if n:
                    raise BenchError(f"cannot build history: the engine wrote to table {table!r}, "
                                     "which bench/build.py does not know; teach it the table's id columns")
                continue
            columns[table] = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
            rows[table] = con.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall()
    finally:
        con.close()
    if len(rows.get("changes", [])) != 1 or len(rows.get("tasks", [])) != HISTORY_CHAIN:
        raise BenchError(f"cannot build history: expected 1 change and {HISTORY_CHAIN} tasks in the template, "
                         f"found {len(rows.get('changes', []))} and {len(rows.get('tasks', []))}")
    id_col = columns["tasks"].index("id")
    task_ids = sorted(r[id_col] for r in rows["tasks"])
    if task_ids != list(range(task_ids[0], task_ids[0] + HISTORY_CHAIN)):
        raise BenchError(f"cannot build history: template task ids are not consecutive: {task_ids}")
    return Template(columns, rows, _to_text(TEMPLATE_TIME), task_ids[0], rows["changes"][0][0])


def _noop(task: Any, tomb: Any) -> None:
    return None


def cache_key(schema: str, template: Template) -> str:
    """cache_key names what a cached history file was built from."""
    from engine.db import SCHEMA_HEAD

    return f"{SCHEMA_HEAD}-{schema[:10]}-{template.shape_digest()[:10]}-b{BUILDER_VERSION}"


Cloner = Callable[[int, int, str], list[tuple[Any, ...]]]


def _moved_runs(text: str, tid_shift: int, ts: str, template_ts: str) -> str:
    """_moved_runs is a batch of task runs (task_timing_batches.runs) of the template moved to a clone: its task ids
    shifted, its times moved from the template's time to the clone's."""
    from engine._time import from_text

    runs = json.loads(text)
    runs["task_id"] = [tid + tid_shift for tid in runs["task_id"]]
    runs["since"] += (from_text(ts) - from_text(template_ts)) // timedelta(microseconds=1)
    return json.dumps(runs, separators=(",", ":"))


def _cloner(table: str, columns: list[str], template: Template) -> tuple[list[str], Cloner]:
    roles = ROLES[table]
    keep = [i for i, c in enumerate(columns) if roles.get(c) != "auto"]
    out_cols = [columns[i] for i in keep]
    rows = [tuple(r[i] for i in keep) for r in template.rows[table]]
    cid_pos = [j for j, c in enumerate(out_cols) if roles.get(c) == "cid"]
    tid_pos = [j for j, c in enumerate(out_cols) if roles.get(c) == "tid"]
    runs_pos = [j for j, c in enumerate(out_cols) if roles.get(c) == "runs"]
    time_text = template.time_text
    plans = []
    for r in rows:
        time_pos = [j for j, v in enumerate(r) if v == time_text]
        tid_off = [(j, r[j] - template.first_task) for j in tid_pos if r[j] is not None]
        plans.append((list(r), time_pos, tid_off))

    def clone(cid: int, first_tid: int, ts: str) -> list[tuple[Any, ...]]:
        out = []
        for base, time_pos, tid_off in plans:
            row = base.copy()
            for j in cid_pos:
                if row[j] is not None:
                    row[j] = cid
            for j, off in tid_off:
                row[j] = first_tid + off
            for j in time_pos:
                row[j] = ts
            for j in runs_pos:
                row[j] = _moved_runs(base[j], first_tid - template.first_task, ts, time_text)
            out.append(tuple(row))
        return out

    return out_cols, clone


def build_history(path: Path, n_tasks: int, template: Template, empty_db: Path) -> float:
    """build_history writes a database of n_tasks finished tasks at path; returns seconds taken."""
    if n_tasks % HISTORY_CHAIN:
        raise ValueError(f"history size {n_tasks} is not a multiple of {HISTORY_CHAIN}")
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + f".building-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.write_bytes(empty_db.read_bytes())
    n_changes = n_tasks // HISTORY_CHAIN
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -262144")
        first_change = con.execute("SELECT last_id FROM sequences WHERE name = 'change'").fetchone()[0] + 1
        first_task = con.execute("SELECT last_id FROM sequences WHERE name = 'task'").fetchone()[0] + 1
        cloners = {t: _cloner(t, template.columns[t], template) for t in ROLES if template.rows.get(t)}
        sql = {t: f'INSERT INTO "{t}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
               for t, (cols, _) in cloners.items()}
        con.execute("BEGIN")
        for start in range(0, n_changes, _CHUNK_CHANGES):
            batch: dict[str, list[tuple[Any, ...]]] = {t: [] for t in cloners}
            for k in range(start, min(n_changes, start + _CHUNK_CHANGES)):
                ts = _to_text(HISTORY_START + k * HISTORY_STEP)
                cid, tid = first_change + k, first_task + k * HISTORY_CHAIN
                for t, (_, clone) in cloners.items():
                    batch[t] += clone(cid, tid, ts)
            for t in cloners:  # changes, tasks, edges...: parents first
                con.executemany(sql[t], batch[t])
        if n_changes:
            con.execute("UPDATE sequences SET last_id = ? WHERE name = 'change'", (first_change + n_changes - 1,))
            con.execute("UPDATE sequences SET last_id = ? WHERE name = 'task'", (first_task + n_tasks - 1,))
        con.execute("COMMIT")
        con.execute("PRAGMA journal_mode = WAL")
    finally:
        con.close()
    verify_history(tmp, n_tasks)
    os.replace(tmp, path)
    return time.perf_counter() - t0


def verify_history(path: Path, n_tasks: int) -> None:
    """verify_history opens a built database with the engine and checks what it reads."""
    from engine import State, Status

    st = State.open(path)
    try:
        with st:
            if st.task_count() != n_tasks:
                raise BenchError(f"built history {path} has {st.task_count()} tasks, expected {n_tasks}")
            if n_tasks:
                last = st.change(str(n_tasks // HISTORY_CHAIN))
                if last is None:
                    raise BenchError(f"built history {path}: its last change is missing")
                tasks = last.tasks()
                if (last.status is not Status.DONE or not last.is_ready() or not last.is_clean()
                        or len(tasks) != HISTORY_CHAIN or any(t.status is not Status.DONE for t in tasks)
                        or [w.id for w in tasks[1].wait_tasks()] != [tasks[0].id]):
                    raise BenchError(f"built history {path}: the engine does not read its last change as "
                                     "a finished clean chain")
    finally:
        st.close()


class HistoryCache:
    """HistoryCache hands out cached history databases, building the missing ones."""

    def __init__(self, cache_dir: Path, work_dir: Path, log: Callable[[str], None] = print) -> None:
        self.cache_dir = cache_dir
        self.work_dir = work_dir
        self.log = log
        self._key: str | None = None
        self._template: Template | None = None
        self._empty: Path | None = None

    def _prepare(self) -> tuple[str, Template, Path]:
        if self._key is None or self._template is None or self._empty is None:
            self._empty = new_empty_db(self.work_dir / "schema.db")
            self._template = make_template(self.work_dir / "template")
            self._key = cache_key(schema_fingerprint(self._empty), self._template)
        return self._key, self._template, self._empty

    def get(self, n_tasks: int) -> Path:
        """get returns the cached database of n_tasks finished tasks, building it if needed."""
        key, template, empty = self._prepare()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / f"history-{n_tasks}-{key}.db"
        if path.exists():
            return path
        for stale in self.cache_dir.glob(f"history-{n_tasks}-*.db*"):
            # Built by an older schema or engine (or an interrupted build): never used again.
            self.log(f"removing stale {stale.name}")
            stale.unlink(missing_ok=True)
        if n_tasks == 0:
            tmp = path.with_name(path.name + f".building-{os.getpid()}")
            tmp.write_bytes(empty.read_bytes())
            os.replace(tmp, path)
            return path
        self.log(f"building {path.name} ({n_tasks:,} finished tasks)...")
        seconds = build_history(path, n_tasks, template, empty)
        self.log(f"built {path.name} in {seconds:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
        return path
