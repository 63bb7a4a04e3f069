# SPDX-License-Identifier: GPL-3.0-or-later
"""The API reference is complete, and the docs point only at what exists.

docs/reference.md is the hand-written overview; pdoc generates the full
reference from the docstrings (`python3 dev.py docs`).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import engine
import managers

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference.md"
#: INSTALLED are paths the docs name that exist only in an installed wheel, or stand for a family of files.
#: TOPS are the project's folders: a path under another one names the system the docs describe.
TOPS = re.compile(r"^(engine|managers|overlord|migrations|tests|bench|docs|examples|\.ci)/")
INSTALLED = {"engine/_migrations", "tests/fixtures/databases/NNNN_name.db"}
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: SECTIONS maps each engine class whose members the overview lists to its section's heading.
SECTIONS = {
    "State": "State",
    "Change": "Change",
    "Task": "Task and TaskSet",
    "TaskSet": "Task and TaskSet",
    "TaskRunner": "Running tasks",
    "Tomb": "Running tasks",
    "StateEngine": "Managers and the Overlord",
    "Overlord": "Managers and the Overlord",
    "StateWarning": "Warnings, notices and manager tables",
    "TableRows": "Warnings, notices and manager tables",
}


def _public(mod: ModuleType) -> list[tuple[str, Any]]:
    return [(name, getattr(mod, name)) for name in mod.__all__]


def _members(cls: type) -> list[tuple[str, Any]]:
    """_members are the public methods and properties a class defines itself (not inherited from a base)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            out.append((name, value))
    return out


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/reference.md has no section '## {heading}'"
    return match.group(1)


@pytest.mark.parametrize("mod", [engine, managers], ids=lambda m: m.__name__)
def test_every_public_name_and_member_has_a_docstring(mod: ModuleType) -> None:
    missing = []
    for name, obj in _public(mod):
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            missing += [f"{name}.{m}" for m, v in _members(obj) if not (v.__doc__ or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"


@pytest.mark.parametrize("mod", [engine, managers], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_overview(mod: ModuleType) -> None:
    text = REFERENCE.read_text()
    missing = [name for name, _ in _public(mod) if not re.search(rf"`{re.escape(name)}\b", text)]
    assert not missing, f"docs/reference.md does not name {missing}"


def test_every_member_of_the_core_classes_is_in_its_section() -> None:
    text = REFERENCE.read_text()
    missing = []
    for cls_name, heading in SECTIONS.items():
        section = _section(text, heading)
        cls = getattr(engine, cls_name)
        missing += [f"{cls_name}.{m}" for m, _ in _members(cls) if not re.search(rf"`(\w+\.)?{m}\b", section)]
    assert not missing, f"docs/reference.md does not list {missing}"


def test_the_generated_reference_has_every_public_name(tmp_path: Path) -> None:
    pdoc = pytest.importorskip("pdoc")
    pdoc.pdoc("engine", "managers", output_directory=tmp_path)
    for mod in (engine, managers):
        page = (tmp_path / f"{mod.__name__}.html").read_text()
        missing = [name for name, _ in _public(mod) if f'id="{name}"' not in page]
        assert not missing, f"the generated reference of {mod.__name__} lacks {missing}"
    page = (tmp_path / "engine.html").read_text()
    for cls_name in SECTIONS:
        cls = getattr(engine, cls_name)
        missing = [m for m, _ in _members(cls) if f'id="{cls_name}.{m}"' not in page]
        assert not missing, f"the generated reference of engine.{cls_name} lacks {missing}"


def _paths_named(text: str) -> set[str]:
    """_paths_named are the repository paths a page names in backquotes or as link targets."""
    names = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+(?:::[\w*\[\]-]+)?)`", text))
    names |= {t for t in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in t}
    return names


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_point_only_at_files_and_tests_that_exist(page: Path) -> None:
    text = page.read_text()
    assert "API.md" not in text, f"{page.name} points to API.md, which is not in the project"
    broken = []
    for name in _paths_named(text):
        path, _, test = name.partition("::")
        if path in INSTALLED or not TOPS.match(path):
            continue
        target = REPO / path
        if not target.exists():
            broken.append(name)
        elif test:
            pattern = re.escape(test.split("[")[0]).replace(r"\*", r"\w*")
            if not re.search(rf"^\s*(async )?def {pattern}\b", target.read_text(), re.M):
                broken.append(name)
    assert not broken, f"{page.name} names what does not exist: {sorted(broken)}"
