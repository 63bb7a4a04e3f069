# SPDX-License-Identifier: GPL-3.0-or-later
"""The wheel works outside the checkout: its migrations ship inside the package.

The wheel is built from the checkout and installed in a fresh virtual
environment; the dependencies come from the project's environment through a
.pth file (no network). A script then runs from a directory outside the
checkout with the fresh environment's python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from engine.db import SCHEMA_HEAD

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import sqlite3
    import sys
    from pathlib import Path

    venv = Path(sys.argv[1]).resolve()
    checkout = Path(sys.argv[2]).resolve()
    head = sys.argv[3]

    import engine
    from engine import State, Status
    from engine.db import SCHEMA_HEAD, alembic_config, migrations_dir

    pkg = Path(engine.__file__).resolve().parent
    assert venv in pkg.parents, f"engine imported from {pkg}, not from the fresh venv {venv}"
    assert checkout not in pkg.parents, f"engine imported from the checkout: {pkg}"
    assert str(checkout) not in sys.path, sys.path
    assert SCHEMA_HEAD == head, (SCHEMA_HEAD, head)

    # The migrations are packaged data of engine; no top-level 'migrations'.
    assert (pkg / "_migrations" / "env.py").is_file(), sorted(p.name for p in pkg.iterdir())
    assert (pkg / "_migrations" / "versions").is_dir()
    assert migrations_dir().resolve() == (pkg / "_migrations").resolve(), migrations_dir()
    assert not (pkg.parent / "migrations").exists(), "a top-level migrations directory was installed"
    assert importlib.util.find_spec("migrations") is None, importlib.util.find_spec("migrations")

    # A new database is created at head.
    st = State.open("new.db")
    with st:
        chg = st.new_change("install", "Install foo")
        chg.add_task(st.new_task("download", "Download foo"))
    st.close()
    con = sqlite3.connect("new.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
    con.close()

    # An old (empty) database is upgraded by Alembic from the installed scripts.
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config("sqlite:///old.db")
    assert ScriptDirectory.from_config(cfg).get_heads() == [head]
    command.upgrade(cfg, "head")
    con = sqlite3.connect("old.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
    con.close()
    st = State.open("old.db")
    with st:
        chg = st.new_change("install", "Install bar")
        chg.add_task(st.new_task("download", "Download bar"))
    with st:
        assert [(c.id, c.status) for c in st.changes()] == [("1", Status.DO)]
    st.close()

    # The daemon's OpenAPI description is packaged data too.
    from overlord.daemon.api_system import openapi

    assert "/v2/changes" in openapi()["paths"]

    # The sample snaps ship too, executable bits and all (pack checks them).
    from overlord.samples import build_store, keys

    root_key, acme_key = keys(Path("keys"))
    sample = build_store(Path("store"), root_key, acme_key, versions=("1.0",))
    assert sample.snap_store.snap("hello").revision == "1"
    print("wheel ok")
    """
)


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=60)
    return Path(out.stdout.strip())


@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    # wheel: built from the checkout once for the run, one wheel file (tests/support/wheel.py).
    python = Path(sys.executable)

    names = zipfile.ZipFile(wheel).namelist()
    assert "engine/_migrations/env.py" in names
    assert any(n.startswith("engine/_migrations/versions/") and n.endswith(".py") for n in names), names
    assert "engine/py.typed" in names
    assert "overlord/daemon/openapi.json" in names
    assert not [n for n in names if n.startswith("migrations/")], "the wheel ships a top-level migrations package"

    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    fresh = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "--python", str(fresh), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    fresh_site = _site_packages(fresh)
    # The dependencies (SQLAlchemy, Alembic, tenacity, ...) from the project's
    # environment. A path line only: the project's editable-install .pth
    # (which points at the checkout) is not processed from there.
    (fresh_site / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"
    work.mkdir()
    assert REPO not in work.resolve().parents
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run = subprocess.run(
        [str(fresh), "-I", "-c", SCRIPT, str(venv), str(REPO), SCHEMA_HEAD],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wheel ok" in run.stdout
