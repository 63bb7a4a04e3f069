# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway PostgreSQL cluster for the tests: started by the test set-up itself, on a Unix socket.

Where the server comes from, first found first:

1. the system's ``initdb`` and ``pg_ctl`` (``$PG_BIN``, ``pg_config --bindir``,
   ``/usr/lib/postgresql/*/bin``, or ``PATH``);
2. the ``pgserver`` wheel of the dev extras, which ships PostgreSQL's
   binaries (``pip install -e .[dev]`` on a machine with nothing else).

The cluster lives in a temporary directory and listens only on a Unix socket
there (no TCP port), with ``fsync=off`` (a test cluster need not survive a
power cut). PostgreSQL refuses to run as root: when the tests run as root,
the server runs as ``nobody`` (``setpriv``), owning its data directory; when
``nobody`` cannot reach the binaries (the wheel inside a checkout under a
0700 directory), the cluster's directory gets a copy of them.
Each test gets a database as the template holds it, the migrated schema
and its few rows: a copy (``CREATE DATABASE ... TEMPLATE``, which copies the
catalogs too: a large part of a second on a busy machine), or the database
of a test before, emptied back to the template's rows
(:meth:`Cluster.reset_database`, milliseconds) when that test left the schema
as the template has it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOBODY = 65534

#: What makes a database's schema: every catalog row a test could change (tables, columns, indexes,
#: constraints, views, triggers, functions, sequences, privileges, settings, extensions, schemas).
_SCHEMA_QUERIES = (
    "SELECT n.nspname, c.relname, c.relkind, c.relacl::text, c.reloptions::text, c.relpersistence, "
    "  CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
    "  AND n.nspname NOT LIKE 'pg_temp%'",
    "SELECT n.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "  a.attisdropped, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attnum > 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
    "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    "SELECT n.nspname, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
    "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc) "
    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "SELECT schemaname, sequencename, start_value, increment_by, max_value, min_value, cycle "
    "FROM pg_sequences",
    "SELECT nspname, nspacl::text FROM pg_namespace",
    "SELECT extname, extversion FROM pg_extension",
    "SELECT setrole, setconfig::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
    "WHERE d.datname = current_database()",
    "SELECT rulename, definition FROM pg_rules WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    "SELECT evtname FROM pg_event_trigger",
    "SELECT pubname FROM pg_publication",
)


#: One query for the digest of every schema object (one round trip: the server is busy).
_FINGERPRINT = "SELECT md5(string_agg(t, E'\\n' ORDER BY t)) FROM (" + " UNION ALL ".join(
    f"SELECT '{i} ' || x::text AS t FROM ({q}) x" for i, q in enumerate(_SCHEMA_QUERIES)) + ") every_object"


def _schema_fingerprint(conn: Any) -> str:
    """_schema_fingerprint is a digest of every schema object of the connection's database."""
    return str(conn.execute(_FINGERPRINT).fetchone()[0])


@dataclass
class Contents:
    """Contents is what a database holds: its schema's digest, its tables' rows and its sequences' values."""

    fingerprint: str
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]  # quoted table name: (column names, rows)
    sequences: dict[str, tuple[int, bool]]  # quoted sequence name: (value, is_called), as setval takes them


class Unavailable(Exception):
    """Unavailable says why no PostgreSQL server can be had here."""


def _bindir() -> Path | None:
    candidates = [os.environ.get("PG_BIN", "")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                         timeout=10).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(os.path.realpath(which)).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _pgserver_bindir() -> Path | None:
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        return None
    for c in (Path(pgserver.__file__).parent / "pginstall" / "bin",):
        if (c / "initdb").is_file():
            return c
    return None


def _runs_as(user: int, program: Path) -> bool:
    """_runs_as says whether user can run program (every directory above it searchable, the file executable)."""
    try:
        return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", str(program),
                               "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class Cluster:
    """Cluster is one running PostgreSQL server for the test session."""

    bindir: Path
    root: Path
    user: int | None  # the uid the server runs as (None: this process's)
    durable: bool = False  # fsync and synchronous commits as a real server has them (benchmarks)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check,
                              env={**os.environ, "LC_ALL": "C", "TZ": "UTC"})

    def init(self) -> None:
        """init creates the cluster (trust authentication: only its own socket reaches it)."""
        self.data.mkdir()
        self.socket_dir.mkdir()
        if self.user is not None:
            for p in (self.root, self.data, self.socket_dir):
                os.chown(p, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions")

    def start(self) -> None:
        """start runs the server and waits until it accepts connections."""
        opts = f"-k {self.socket_dir} -c listen_addresses='' -c max_connections=200"
        if not self.durable:  # a test cluster need not survive a power cut
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """stop stops the server (mode: smart, fast or immediate)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        """url is the SQLAlchemy URL of a database of the cluster, through its socket."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def dsn(self, database: str = "postgres") -> str:
        """dsn is the libpq connection string of a database of the cluster."""
        return f"host={self.socket_dir} user=postgres dbname={database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """sql runs one statement in autocommit mode."""
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def new_database(self, template: str | None = None) -> str:
        """new_database creates an empty database (or a copy of template) and returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return name

    def contents(self, name: str) -> Contents:
        """contents reads what a database holds (of a template: what reset_database brings a copy back to)."""
        import psycopg

        with psycopg.connect(self.dsn(name), autocommit=True) as conn:
            rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
            for schema, table in conn.execute("SELECT schemaname, tablename FROM pg_tables "
                                              "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"):
                quoted = f'"{schema}"."{table}"'
                cur = conn.execute(f"SELECT * FROM {quoted}")  # type: ignore[arg-type]
                rows[quoted] = ([d.name for d in cur.description or []], cur.fetchall())
            sequences = {f'"{schema}"."{seq}"': (value, True) if value is not None else (start, False)
                         for schema, seq, value, start in conn.execute(
                             "SELECT schemaname, sequencename, last_value, start_value FROM pg_sequences")}
            return Contents(_schema_fingerprint(conn), rows, sequences)

    def reset_database(self, name: str, contents: Contents) -> bool:
        """reset_database brings a database back to contents, and says whether it could.

        The sessions still connected to it are ended first (as DROP DATABASE
        ... WITH (FORCE) does: their locks, advisory locks and LISTENs go with
        them). It cannot when the schema differs from the one contents was read
        with (a test dropped an index, declared a table): that database must go.
        """
        import psycopg
        from psycopg import sql

        script = [sql.SQL("SET LOCAL session_replication_role = replica")]  # no foreign-key triggers
        for table, (columns, rows) in contents.rows.items():
            script.append(sql.SQL("DELETE FROM {}").format(sql.SQL(table)))
            script += [sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(map(sql.Literal, row))) for row in rows]
        script += [sql.SQL("SELECT setval({}, {}, {})").format(*map(sql.Literal, (seq, value, called)))
                   for seq, (value, called) in contents.sequences.items()]
        try:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                deadline = time.monotonic() + 10
                # Outside a transaction: inside one, pg_stat_activity would show the same sessions each time.
                while conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall():
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.01)
                conn.autocommit = False  # the rest in one transaction, committed at the end of the block
                if _schema_fingerprint(conn) != contents.fingerprint:
                    return False
                conn.execute(sql.SQL("; ").join(script))
            return True
        except psycopg.Error:
            return False

    def drop_database(self, name: str) -> None:
        """drop_database drops a database, ending the sessions still connected to it."""
        with contextlib.suppress(Exception):
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_cluster(*, durable: bool = False) -> Cluster:
    """start_cluster initialises and starts a cluster in a temporary directory, or raises Unavailable.

    durable keeps PostgreSQL's default durability (fsync, synchronous commits), for benchmarks.
    """
    bindir = _bindir() or _pgserver_bindir()
    if bindir is None:
        raise Unavailable("no PostgreSQL server: neither initdb/pg_ctl on this machine nor the pgserver wheel")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed (pip install -e .[dev])") from None
    user = None
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            raise Unavailable("running as root, and PostgreSQL refuses root: setpriv is needed to run it as nobody")
        user = NOBODY
    root = Path(tempfile.mkdtemp(prefix="engine-pg-"))
    os.chmod(root, 0o755)
    if user is not None and not _runs_as(user, bindir / "initdb"):
        # The server's user cannot reach the binaries (the pgserver wheel in a checkout under a 0700
        # directory, say): it gets a copy of the installation in the cluster's own directory.
        # (The wheel's binaries find their libraries in pgserver.libs beside the package, by a relative
        # runpath: the copy keeps that layout.)
        install = bindir.parent
        copy = root / "site" / install.parent.name / install.name
        shutil.copytree(install, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy.parent.parent / libs.name, symlinks=True)
        bindir = copy / "bin"
    cluster = Cluster(bindir, root, user, durable=durable)
    try:
        cluster.init()
        cluster.start()
    except (OSError, subprocess.SubprocessError) as e:
        log = cluster.root / "server.log"
        detail = getattr(e, "stderr", "") or (log.read_text() if log.exists() else "")
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"cannot start a PostgreSQL cluster with {bindir}: {e} {detail}".strip()) from e
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    """remove_cluster stops the server and deletes its directory."""
    cluster.stop("immediate")
    deadline = time.monotonic() + 10
    while (cluster.data / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(cluster.root, ignore_errors=True)


def connect(url: str) -> Any:
    """connect opens an autocommit psycopg connection of its own to the database of url (a pg_url)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.query.get("host"), user=u.username, dbname=u.database, autocommit=True)
