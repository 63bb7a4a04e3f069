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
Each test gets a fresh database, copied from a template that holds the
migrated schema (``CREATE DATABASE ... TEMPLATE``, a file copy: milliseconds).
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

NOBODY = 65534


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
