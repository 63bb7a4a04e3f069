# SPDX-License-Identifier: GPL-3.0-or-later
"""Run Python as another user (nobody) with a copy of the project that user can read.

A test that needs an ordinary user (a refusal that root would not get, a
client of a daemon running as someone else) cannot point that user at the
checkout: the clone may sit in a private directory (``mktemp -d``, a 0700
home), and so may the virtual environment and the interpreter itself (pyenv
under ``/root``). :func:`make_other_user` therefore builds, once per test
session, a world-readable directory under the temporary directory holding

- ``site/``: the project's packages (``engine`` with its migrations as
  ``engine/_migrations``, as in the wheel, ``managers``, ``overlord``) and
  every distribution they need at run time (SQLAlchemy, Alembic, ...), found
  through the installed metadata and hard-linked where the files are
  world-readable already (copied otherwise), so it costs a fraction of a
  second;
- scratch directories the user can enter (:meth:`OtherUser.scratch`);

and picks an interpreter of the same Python version that the user can run
(the running one, its base interpreter, or ``pythonX.Y`` on the default
PATH), proving it by importing the copy as that user. When that is
impossible (not root, no ``setpriv``, no such interpreter, no temporary
directory others can enter) :class:`Unavailable` says why, and the
``nobody`` fixture in ``tests/conftest.py`` skips the test with that reason;
where the clone lives never makes a test fail.

Use the ``nobody`` fixture::

    def test_something(nobody: OtherUser) -> None:
        d = nobody.scratch("work")
        proc = nobody.run("-c", "import engine; print(engine.__file__)")
        assert proc.returncode == 0, proc.stderr

``nobody.command(*args)`` and ``nobody.env()`` give the argv and environment
for ``subprocess.Popen`` (a long-running client, say); run it with
``cwd=nobody.home``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement  # with pip and hatchling in the dev environment

#: The uid and gid of nobody on Debian and most Linux systems.
NOBODY = 65534
#: The top-level packages of the project, copied for the other user.
PACKAGES = ("engine", "managers", "overlord")
#: The distribution whose run-time requirements are copied with it.
DISTRIBUTION = "overlord-engine"
_TEMP_CANDIDATES = ("/tmp", "/var/tmp", "/dev/shm")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class Unavailable(Exception):
    """Unavailable says why no other user can run the project here (tests skip with it)."""


@dataclass(frozen=True)
class OtherUser:
    """OtherUser runs the project's Python code as another user, from a copy it can read."""

    uid: int
    gid: int
    #: An interpreter of the running Python version that the user can execute.
    python: str
    #: A world-readable directory owned by the test run: site/ and the scratch directories.
    home: Path

    @property
    def site(self) -> Path:
        """site is the directory on the user's PYTHONPATH: the packages and their dependencies."""
        return self.home / "site"

    def command(self, *args: str) -> list[str]:
        """command returns the argv running ``python -s *args`` as the user."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", self.python, "-s", *args]

    def env(self, **extra: str) -> dict[str, str]:
        """env returns a minimal environment for the user's process, with extra added."""
        return {"PATH": _DEFAULT_PATH, "HOME": str(self.home), "LANG": "C.UTF-8", "PYTHONPATH": str(self.site),
                "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def run(self, *args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """run runs ``python -s *args`` as the user in home and returns its text output."""
        kwargs.setdefault("cwd", self.home)
        kwargs.setdefault("env", self.env())
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, **kwargs)

    def scratch(self, name: str) -> Path:
        """scratch creates an empty directory under home that the user can enter (mode 0755)."""
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.home))
        d.chmod(0o755)
        return d


def make_other_user(uid: int = NOBODY, gid: int = NOBODY) -> OtherUser:
    """make_other_user prepares an OtherUser, or raises Unavailable naming what is missing.

    The caller removes ``home`` when done (the fixture does).
    """
    if os.geteuid() != 0:
        raise Unavailable("running as another user needs root")
    if shutil.which("setpriv") is None:
        raise Unavailable("running as another user needs setpriv (util-linux)")
    top = _reachable_temp_dir()
    home = Path(tempfile.mkdtemp(prefix="engine-other-user-", dir=top))
    try:
        home.chmod(0o755)
        _copy_project(home / "site")
        python = _find_python(uid, gid, home)
        user = OtherUser(uid, gid, python, home)
        _prove(user)
        return user
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise


def _reachable_temp_dir() -> Path:
    """_reachable_temp_dir returns a temporary directory every user can enter."""
    for candidate in (tempfile.gettempdir(), *_TEMP_CANDIDATES):
        p = Path(candidate)
        if p.is_dir() and os.access(p, os.W_OK) and _others_can_enter(p):
            return p
    raise Unavailable(f"no temporary directory that other users can enter (tried {tempfile.gettempdir()}, "
                      f"{', '.join(_TEMP_CANDIDATES)})")


def _others_can_enter(p: Path) -> bool:
    p = p.resolve()
    return all(q.stat().st_mode & stat.S_IXOTH for q in (p, *p.parents))


def _project_dirs() -> list[tuple[Path, Path]]:
    """_project_dirs returns (source, place in site/) for the project's packages and migrations."""
    out = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot find the project's package {name!r}")
        out.append((Path(next(iter(spec.submodule_search_locations))), Path(name)))
    from engine.db import migrations_dir

    engine_dir = out[0][0].resolve()
    migrations = migrations_dir().resolve()
    if engine_dir not in migrations.parents:  # a checkout: ship them as the wheel does
        out.append((migrations, Path("engine") / "_migrations"))
    return out


#: EXTRAS are the project's extras the other user runs with: all of the system (the daemon, the CLI).
EXTRAS = ("", "cli", "daemon", "system", "postgresql", "all")


def _requirements(dist: importlib.metadata.Distribution, extras: tuple[str, ...] = ("",)) -> list[str]:
    """_requirements names the distributions dist needs at run time with these extras (never itself)."""
    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.name == dist.metadata["Name"]:
            continue  # an extra naming other extras: they are in extras already
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            names.append(req.name)
    return names


def _dependency_files() -> list[tuple[Path, Path]]:
    """_dependency_files returns (source, place in site/) for every run-time dependency's files."""
    seen: set[str] = set()
    todo = _requirements(importlib.metadata.distribution(DISTRIBUTION), EXTRAS)
    out = []
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        if dist.files is None:
            raise RuntimeError(f"cannot copy {name} for another user: its installed files are not recorded")
        for f in dist.files:
            if f.parts and f.parts[0] != "..":
                out.append((Path(str(dist.locate_file(f))), Path(*f.parts)))
        todo += _requirements(dist)
    return out


def _copy_project(site: Path) -> None:
    site.mkdir(mode=0o755)
    for src_dir, rel in _project_dirs():
        for src in sorted(src_dir.rglob("*")):
            if "__pycache__" in src.parts or not src.is_file():
                continue
            _place(src, site / rel / src.relative_to(src_dir))
    for src, rel in _dependency_files():
        if src.is_file():
            _place(src, site / rel)


def _place(src: Path, dst: Path) -> None:
    """_place hard-links src at dst when others may read it already, or copies it readable."""
    for parent in reversed(dst.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
    mode = src.stat().st_mode
    if mode & stat.S_IROTH:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy
    shutil.copyfile(src, dst)
    dst.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _find_python(uid: int, gid: int, home: Path) -> str:
    """_find_python returns an interpreter of this Python version that the user can run."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [getattr(sys, "_base_executable", ""), os.path.realpath(sys.executable),
                  shutil.which(f"python{want}", path=_DEFAULT_PATH) or "", sys.executable]
    tried = []
    for python in dict.fromkeys(c for c in candidates if c):
        probe = OtherUser(uid, gid, python, home).run("-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                                                      env={"PATH": _DEFAULT_PATH}, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return python
        tried.append(f"{python} ({(probe.stdout + probe.stderr).strip() or probe.returncode})")
    raise Unavailable(f"uid {uid} can run no Python {want}: " + "; ".join(tried))


_PROOF = """
import sys
from pathlib import Path
site = Path(sys.argv[1])
import alembic, sqlalchemy, tenacity
import engine, managers, overlord
from engine.db import migrations_dir
for mod in (engine, managers, overlord, alembic, sqlalchemy, tenacity):
    assert site in Path(mod.__file__).parents, f"{mod.__name__} imported from {mod.__file__}, not from {site}"
assert site in migrations_dir().parents, migrations_dir()
print("ok")
"""


def _prove(user: OtherUser) -> None:
    """_prove imports the copy as the user: an error here is a bug in the copy, not a skip."""
    proc = user.run("-c", _PROOF, str(user.site), timeout=120)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        raise RuntimeError(f"cannot import the project as uid {user.uid} with {user.python} from {user.site}:\n"
                           f"{proc.stdout}{proc.stderr}")
