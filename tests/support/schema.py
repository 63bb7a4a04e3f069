# SPDX-License-Identifier: GPL-3.0-or-later
"""Schema helpers shared by the migration, upgrade and crash tests.

The alembic CLI run from the checkout, Alembic run in this process on a
file, a layout-blind view of a file's schema, and a dump of its rows.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from engine.db import alembic_config

REPO = Path(__file__).resolve().parents[2]


def alembic(db: Path, *args: str) -> str:
    """alembic runs the alembic CLI from the checkout on db and returns its output."""
    exe = Path(sys.executable).with_name("alembic")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "alembic"]
    proc = subprocess.run([*cmd, "-x", f"db={db}", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"alembic {' '.join(args)} failed ({proc.returncode}):\n{out}"
    return out


def config(db: Path) -> Config:
    """config is the run-time Alembic Config (as engine.db builds it) pointed at the file db."""
    return alembic_config(f"sqlite:///{db}")


def upgrade(db: Path, revision: str = "head") -> None:
    """upgrade runs Alembic's upgrade to revision on db in this process."""
    command.upgrade(config(db), revision)


def downgrade(db: Path, revision: str) -> None:
    """downgrade runs Alembic's downgrade to revision on db in this process."""
    command.downgrade(config(db), revision)


def check(db: Path) -> None:
    """check runs `alembic check` on db: it raises unless the schema equals the models."""
    command.check(config(db))


def revisions() -> list[Script]:
    """revisions lists the migration scripts, oldest first."""
    return list(reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())))


def copy_db(src: Path, dst: Path) -> Path:
    """copy_db copies a database through SQLite's backup (a consistent copy, WAL included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    """rows runs sql on db and returns every row."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def tables(db: Path) -> set[str]:
    """tables names the tables of db."""
    return {str(r[0]) for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def revision_of(db: Path) -> list[str]:
    """revision_of returns the rows of alembic_version (one revision, or none at Alembic's base)."""
    return [str(r[0]) for r in rows(db, "SELECT version_num FROM alembic_version")]


def _split_top_level(body: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def normalised_schema(db: Path) -> dict[tuple[str, str], object]:
    """normalised_schema maps (type, name) to its SQL, blind to layout and constraint order.

    Columns keep their order; table constraints compare as a set.
    """
    out: dict[tuple[str, str], object] = {}
    for typ, name, sql in rows(db, "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"):
        text = re.sub(r"\s+", " ", str(sql)).strip()
        if typ == "table":
            head, _, rest = text.partition("(")
            body, _, tail = rest.rpartition(")")
            items = _split_top_level(body)
            columns = [i for i in items if not i.upper().startswith("CONSTRAINT")]
            constraints = frozenset(i for i in items if i.upper().startswith("CONSTRAINT"))
            out[(str(typ), str(name))] = (head.strip(), tuple(columns), constraints, tail.strip())
        else:
            out[(str(typ), str(name))] = text.replace("( ", "(").replace(" )", ")")
    return out


Dump = dict[str, tuple[tuple[str, ...], list[tuple[object, ...]]]]


def dump(db: Path) -> Dump:
    """dump returns, per table but alembic_version, its column names and its rows in a stable order."""
    out: Dump = {}
    conn = sqlite3.connect(db)
    try:
        names = [str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'alembic_version' ORDER BY name")]
        for name in names:
            columns = tuple(str(r[1]) for r in conn.execute(f'PRAGMA table_info("{name}")'))
            data = conn.execute(f'SELECT * FROM "{name}"').fetchall()
            out[name] = (columns, sorted(data, key=repr))
    finally:
        conn.close()
    return out


def project(d: Dump, table: str, columns: tuple[str, ...]) -> list[tuple[object, ...]]:
    """project returns the rows of table in d, keeping only columns (in that order)."""
    have, data = d[table]
    index = [have.index(c) for c in columns]
    return sorted((tuple(row[i] for i in index) for row in data), key=repr)
