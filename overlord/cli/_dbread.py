# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a state database file without a daemon, and without ever writing to it.

open_read_only is the one function that opens the file: SQLite's read-only
mode (``file:...?mode=ro``), so that nothing (no migration, no checkpoint,
no journal) is written; a database no writer has open is read as immutable,
so that not even SQLite's -wal and -shm files are created beside it. The readers return the API's JSON shapes, so that
every view and --json output is the same whether it came from the daemon or
from the file. (When the engine offers ``State.open(path, read_only=True)``,
open_read_only becomes that and the readers the daemon's own change_info.)
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from ._output import CliError

_READY = ("Done", "Undone", "Error", "Hold")


def read_only_uri(db: Path) -> str:
    """read_only_uri is the SQLite URI that reads db without writing anything, or a CliError."""
    if not db.exists():
        raise CliError(f"cannot read state database {db}: no such file")
    if db.is_dir():
        raise CliError(f"cannot read state database {db}: it is a directory")
    if not os.access(db, os.R_OK):
        raise CliError(f"cannot read state database {db}: permission denied (the daemon keeps it private: "
                       "try with sudo, or ask the daemon)")
    # With no -wal file beside it nothing has the database open for writing (a writer keeps one while it
    # runs): read it as immutable, which creates no -wal or -shm file. Otherwise share the writer's.
    wal = db.with_name(db.name + "-wal")
    params = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return f"{db.resolve().as_uri()}?{params}"


def open_read_only(db: Path, tables: frozenset[str] = frozenset({"changes", "tasks", "alembic_version"})
                   ) -> sqlite3.Connection:
    """open_read_only opens a state database for reading only, refusing a file without the given tables."""
    uri = read_only_uri(db)
    try:
        conn = sqlite3.connect(uri, uri=True)
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        raise CliError(f"cannot read state database {db}: {e}") from None
    if not tables <= found:
        conn.close()
        raise CliError(f"cannot read state database {db}: it is not a state database")
    return conn


def _log_line(time: str, level: str, message: str) -> str:
    return f"{time[:19]}Z {level} {message}"


def _changes(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT id, kind, summary, status, spawn_time, ready_time, data FROM changes {where} "
                        "ORDER BY id", args).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    tasks: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_id: dict[int, dict[str, Any]] = {}
    for tid, cid, kind, summary, status, label, done, total, spawn, ready in conn.execute(
            "SELECT id, change_id, kind, summary, status, progress_label, progress_done, progress_total, "
            f"spawn_time, ready_time FROM tasks WHERE change_id IN ({marks}) ORDER BY id", ids):
        if total is None:
            label, done, total = "", (0 if status == "Do" else 1), 1
        task = {"id": str(tid), "kind": kind, "summary": summary, "status": status, "log": [],
                "progress": {"label": label, "done": done, "total": total},
                "spawn-time": spawn, "ready-time": ready, "lanes": [], "wait-tasks": []}
        tasks[cid].append(task)
        by_id[tid] = task
    task_ids = list(by_id)
    if task_ids:
        tmarks = ",".join("?" * len(task_ids))
        for tid, lane in conn.execute(f"SELECT task_id, lane FROM task_lanes WHERE task_id IN ({tmarks}) "
                                      "ORDER BY task_id, lane", task_ids):
            by_id[tid]["lanes"].append(lane)
        for tid, wait in conn.execute(f"SELECT task_id, wait_task_id FROM task_dependencies WHERE task_id IN "
                                      f"({tmarks}) ORDER BY task_id, wait_task_id", task_ids):
            by_id[tid]["wait-tasks"].append(str(wait))
        logs: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
        for tid, time, level, message in conn.execute(
                f"SELECT task_id, time, level, message FROM task_log WHERE task_id IN ({tmarks}) ORDER BY task_id, id",
                task_ids):
            logs[tid].append((time, level, message))
        for tid, lines in logs.items():
            by_id[tid]["log"] = [_log_line(*line) for line in lines[-10:]]
            by_id[tid]["_errors"] = [m for _, level, m in lines[-10:] if level == "ERROR"]
    out = []
    for cid, kind, summary, status, spawn, ready, data in rows:
        info: dict[str, Any] = {"id": str(cid), "kind": kind, "summary": summary, "status": status,
                                "ready": status in _READY, "spawn-time": spawn, "ready-time": ready,
                                "tasks": tasks.get(cid, [])}
        if status == "Error":
            errors = [f"- {t['summary']} ({m})" for t in info["tasks"] if t["status"] == "Error"
                      for m in t.get("_errors", [])]
            info["err"] = "\n".join(["cannot perform the following tasks:", *errors]) if errors else \
                f'internal inconsistency: change "{kind}" in ErrorStatus with no task errors logged'
        try:
            api_data = json.loads(data or "{}").get("api-data")
        except (ValueError, AttributeError):
            api_data = None
        if isinstance(api_data, dict) and api_data:
            info["data"] = api_data
        for t in info["tasks"]:
            t.pop("_errors", None)
        out.append(info)
    return out


def _read(db: Path, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    conn = open_read_only(db)
    try:
        return _changes(conn, where, args)
    except sqlite3.Error as e:
        raise CliError(f"cannot read state database {db}: {e}") from None
    finally:
        conn.close()


def read_changes(db: Path) -> list[dict[str, Any]]:
    """read_changes returns every change of a database file, with its tasks, oldest first."""
    return _read(db, "", ())


def read_change(db: Path, change_id: str) -> dict[str, Any]:
    """read_change returns one change of a database file, with its tasks."""
    if not change_id.isdigit():
        raise CliError(f"cannot find change with id {change_id!r} in {db}")
    found = _read(db, "WHERE id = ?", (int(change_id),))
    if not found:
        raise CliError(f"cannot find change with id {change_id!r} in {db}")
    return found[0]
