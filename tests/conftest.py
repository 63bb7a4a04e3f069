# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures: a fake clock, in-memory and file-backed states, another user."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, State
from engine.testing import FakeClock
from tests.support import pgcluster
from tests.support.ensure import EnsureRecorder
from tests.support.other_user import OtherUser, Unavailable, make_other_user


def _keep_bytecode() -> None:
    """_keep_bytecode lets the processes the tests start reuse the project's compiled modules.

    The tests start hundreds of Python processes (daemons, the overlord
    command, crash workloads), each importing the engine. Under
    PYTHONDONTWRITEBYTECODE each of them compiles the project's modules again
    (a fifth of a daemon's start); here they write and read the bytecode in
    var/pycache instead (PYTHONPYCACHEPREFIX), never beside the sources.
    """
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        prefix = Path(__file__).resolve().parents[1] / "var" / "pycache"
        with contextlib.suppress(OSError):
            prefix.mkdir(parents=True, exist_ok=True)
            del os.environ["PYTHONDONTWRITEBYTECODE"]
            os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)


_keep_bytecode()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "heavy: a test of several seconds (real processes, a soak): run first")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules holding a heavy test run first, whole, so that two workers end together.

    With xdist's worksteal (python3 dev.py test) the long tests then start
    at once and the short ones fill in around them, instead of one long test
    finishing alone at the end. A module moves whole, so its module-scoped
    fixtures are still made once. The order is the same in every worker.
    """
    heavy = {item.module for item in items if item.get_closest_marker("heavy") is not None}  # type: ignore[attr-defined]
    if heavy:
        items.sort(key=lambda item: getattr(item, "module", None) not in heavy)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """pg_cluster is a throwaway PostgreSQL server for the session (tests/support/pgcluster.py).

    Where none can be had the test is skipped, with the reason; in CI
    (CI=true) that is an error instead: the PostgreSQL tests must run there.
    """
    try:
        cluster = pgcluster.start_cluster()
    except pgcluster.Unavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PostgreSQL tests must run in CI: {e}")
        pytest.skip(str(e))
    try:
        # The template every test's database is copied from: the schema, created by the engine.
        template = cluster.new_database()
        State.open(url=cluster.url(template)).close()
        cluster.template = template  # type: ignore[attr-defined]
        cluster.template_contents = cluster.contents(template)  # type: ignore[attr-defined]
        cluster.spare = None  # type: ignore[attr-defined]
        yield cluster
    finally:
        pgcluster.remove_cluster(cluster)


@pytest.fixture
def pg_url(pg_cluster: pgcluster.Cluster) -> Iterator[str]:
    """pg_url is the URL of a fresh PostgreSQL state database: what the session's template holds.

    It is the database of the test before, emptied back to the template's
    rows, when that test left its schema alone (copying the template again
    costs a large part of a second); else a new copy of the template.
    """
    cluster: Any = pg_cluster
    name, cluster.spare = cluster.spare or cluster.new_database(template=cluster.template), None
    yield cluster.url(name)
    if cluster.reset_database(name, cluster.template_contents):
        cluster.spare = name
    else:
        cluster.drop_database(name)


#: The backends the engine's contract tests run on.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """backend is the database the State of the test runs on: SQLite (in memory) or PostgreSQL."""
    return str(request.param)


@pytest.fixture
def st(backend: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[State]:
    """st is a State on an empty database of the test's backend."""
    if backend == "postgresql":
        if request.node.get_closest_marker("sqlite_only") is not None:
            pytest.skip("about SQLite only")
        state = State.open(url=request.getfixturevalue("pg_url"), clock=clock)
    else:
        state = State.open(clock=clock)
    yield state
    state.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def file_st(db_path: Path, clock: FakeClock) -> Iterator[State]:
    state = State.open(db_path, clock=clock)
    yield state
    state.close()


@pytest.fixture
def overlord(db_path: Path) -> Iterator[Overlord]:
    """overlord is an Overlord on a fresh SQLite file, stopped at the end (a test runs it: settle, loop)."""
    o = Overlord(db_path)
    yield o
    o.stop()


@pytest.fixture
def ensures(st: State) -> EnsureRecorder:
    rec = EnsureRecorder()
    st.set_ensure_before_hook(rec)
    return rec


@pytest.fixture(scope="session")
def nobody() -> Iterator[OtherUser]:
    """nobody runs Python as uid 65534 with a readable copy of the project (see tests/support/other_user.py).

    It skips the test, with the reason, where no other user can run the
    project (not root, no setpriv, no interpreter that user can execute);
    where the checkout lives (a 0700 directory, say) does not matter.
    """
    try:
        user = make_other_user()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield user
    finally:
        shutil.rmtree(user.home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def no_services_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """no_services_left kills, once the tests are over, the snaps' services they left running under tmp_path.

    Services outlive the overlord that started them (like snapd's under
    systemd), so a test that stops or kills a daemon without --stop-services
    leaves them behind. Only processes whose $SNAP lies under this session's
    temporary directory are killed.
    """
    yield
    import signal

    base = f"SNAP={tmp_path_factory.getbasetemp()}/".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(base) for item in env):
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
