# SPDX-License-Identifier: GPL-3.0-or-later
"""A lean install: the engine needs SQLAlchemy, Alembic and tenacity only; the rest comes with extras.

The wheel is built from the checkout and installed in a fresh virtual
environment. Its dependencies are not downloaded: the requirements the
wheel's metadata declares (for no extra, or for one extra) are resolved
against the project's environment, and only the distributions so reached are
made visible to the fresh environment (links in a directory of their own). A
requirement missing from the metadata therefore shows as an import error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
EXTRAS = ("cli", "daemon", "system", "postgresql", "otel")


# wheel: the checkout's wheel, built once for the run (tests/project/conftest.py).


def _requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        headers = Parser().parsestr(z.read(meta).decode())
    return [Requirement(r) for r in headers.get_all("Requires-Dist") or []]


def _closure(requires: list[Requirement], extras: set[str]) -> set[str]:
    """_closure is every distribution the requirements reach for these extras, resolved in this environment."""
    seen: set[str] = set()
    todo: list[tuple[Requirement, set[str]]] = [(r, extras) for r in requires]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if name == "overlord-engine":  # an extra naming other extras of ours
            todo.extend((r, set(req.extras)) for r in requires)
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a platform's optional dependency that this machine does not need
        todo.extend((Requirement(r), set(req.extras)) for r in dist.requires or [])
    return {k.split("[")[0] for k in seen} - {"overlord-engine"}


def _venv(tmp_path: Path, wheel: Path, dists: set[str]) -> Path:
    """_venv is a fresh environment with the wheel and only these distributions of the project's environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    deps = tmp_path / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for name in dists:
        for top in {Path(str(f)).parts[0] for f in distribution(name).files or []} - {".."}:
            if (site / top).exists() and not (deps / top).exists():
                (deps / top).symlink_to(site / top)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    (Path(purelib) / "_deps.pth").write_text(f"{deps}\n")
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _readme_example(root: Path) -> str:
    text = (REPO / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)[:1]
    return code.replace("/var/lib/mydaemon", str(root))


def test_the_engine_needs_only_sqlalchemy_alembic_and_tenacity(wheel: Path) -> None:
    base = {canonicalize_name(r.name) for r in _requires(wheel) if r.marker is None}
    assert base == {"sqlalchemy", "alembic", "tenacity"}
    declared = {e for r in _requires(wheel) if r.marker is not None for e in EXTRAS if r.marker.evaluate({"extra": e})}
    assert declared == set(EXTRAS)


@pytest.mark.timeout(600)
def test_readme_example_runs_in_a_fresh_environment_without_extras(wheel: Path, tmp_path: Path) -> None:
    venv = _venv(tmp_path, wheel, _closure(_requires(wheel), set()))
    work = tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        import engine
        loaded = {m.split(".")[0] for m in set(sys.modules) - before}
        other = sorted(m for m in loaded if m not in sys.stdlib_module_names
                       and not m.startswith("_") and m not in ("engine", "sqlalchemy", "tenacity",
                                                                 "typing_extensions", "cython_runtime"))
        assert not other, f"import engine loaded {other}"
        """
    ) + _readme_example(work / "mydaemon") + textwrap.dedent(
        """
        with o.state:
            assert chg.status.value == "Done", chg.status
            assert chg.tasks()[0].get("path") == "/tmp/x"
        print("engine ok")
        """
    )
    run = _run(venv, str(venv / "bin" / "python"), "-I", "-c", script, cwd=work)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "engine ok" in run.stdout

    # The command is installed, and says in one line which extra it needs.
    run = _run(venv, str(venv / "bin" / "overlord"), "changes", str(work / "mydaemon" / "state.db"), cwd=work)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        f"error: cannot run this command without the [cli] extra: pip install 'overlord-engine[cli]' "
        f"({run.stderr.split('(')[-1].split(' ')[0]} is missing)"
    ]
    assert "Traceback" not in run.stderr


@pytest.mark.heavy  # a fresh environment and its processes per extra: run first (tests/conftest.py)
@pytest.mark.timeout(600)
@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_runs_its_entry_point(wheel: Path, tmp_path: Path, extra: str) -> None:
    venv = _venv(tmp_path, wheel, _closure(_requires(wheel), {extra}))
    work = tmp_path / "work"
    work.mkdir()
    python, overlord = str(venv / "bin" / "python"), str(venv / "bin" / "overlord")
    made = _run(venv, python, "-I", "-c", "from engine import State\nst = State.open('s.db')\n"
                "with st:\n    st.new_change('install', 'Install x').add_task(st.new_task('k', 'K'))\nst.close()",
                cwd=work)
    assert made.returncode == 0, made.stderr
    if extra == "cli":
        run = _run(venv, overlord, "changes", "s.db", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Install x" in run.stdout
        run = _run(venv, overlord, "create-key", "k", cwd=work)  # the snap system is another extra
        assert run.returncode == 1 and "[system] extra" in run.stderr, run.stderr
    elif extra == "daemon":
        run = _run(venv, python, "-I", "-c", "import overlord.daemon.server, overlord.daemon.upload", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
        run = _run(venv, overlord, "daemon", "--help", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
    elif extra == "system":
        run = _run(venv, overlord, "create-key", "k", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
        run = _run(venv, python, "-I", "-c", "import managers, overlord.daemon.factory", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
    elif extra == "otel":
        # The SDK and the OTLP exporter the default OTEL_TRACES_EXPORTER (otlp) names, found by its entry point.
        run = _run(venv, python, "-I", "-c", "import os\nos.environ['OTEL_TRACES_EXPORTER'] = 'otlp'\n"
                   "from engine._otel import provider_from_environment\n"
                   "provider_from_environment().shutdown()\nprint('otel ok')", cwd=work)
        assert run.returncode == 0 and "otel ok" in run.stdout, run.stdout + run.stderr
        # An overlord traced from the variables alone: the installed helper process prints the spans.
        run = _run(venv, python, "-I", "-c", "import os, tempfile\nos.environ['OTEL_TRACES_EXPORTER'] = 'console'\n"
                   "from engine import Overlord\no = Overlord(tempfile.mkdtemp() + '/state.db')\n"
                   "o.task_runner.add_handler('k', lambda task, tomb: None)\nwith o.state:\n"
                   "    o.state.new_change('install', 'x').add_task(o.state.new_task('k', 'one'))\n"
                   "o.settle(30)\no.stop()\no.state.close()\n", cwd=work)
        assert run.returncode == 0 and '"name": "k"' in run.stdout, run.stdout + run.stderr
        assert '"name": "install"' in run.stdout and "without traces" not in run.stderr, run.stdout + run.stderr
    else:
        run = _run(venv, python, "-I", "-c", "import psycopg; from engine.store import postgresql", cwd=work)
        assert run.returncode == 0, run.stdout + run.stderr
