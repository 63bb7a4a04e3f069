# SPDX-License-Identifier: GPL-3.0-or-later
"""The layers hold: imports point one way, none hides a circle in a function, no module grows past 500 lines.

docs/concepts.md ("The layers") draws the rules that these tests check on the
source (read with ast, nothing is imported):

- no circle of imports among the project's modules, counting the imports
  made inside functions (an import moved into a function to break a circle
  still makes one when it runs); and none either through the imports under
  ``if TYPE_CHECKING:`` (for annotations only), but the one that docs/concepts.md
  documents ("The one typed circle"): the State and its Change and Task
  handles, whose public signatures name each other;
- an import inside a function of a project module is one of the lazy
  imports below, each with its reason (an optional extra, or a command
  line that starts light); anything else is imported at the top;
- engine imports neither managers nor overlord; managers never imports
  overlord, and takes the engine only through ``from engine import ...``;
- no module imports another module's private name (``from m import _x``);
- no module uses another object's private name (``x._y`` where x
  is not self or cls and nothing in the module defines ``_y``): a private name
  is private to its module; what another module needs it is handed (the
  State's internal handle, engine.session) or asks through a function of the
  module that owns the name (engine.task.record_of);
- a migration (migrations/versions) imports nothing of the project: it is a
  snapshot of the schema at its revision, whatever the models become;
- no module is over 500 lines, but those listed in TO_SPLIT.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "managers", "overlord", "migrations")
MAX_LINES = 500

#: LAZY are the imports a function may make, as (importing module prefix, imported module prefix): why.
LAZY = {
    ("overlord.cli", ""): "the command line starts light: a command loads the engine, the managers or the daemon "
                          "only when it runs (tests/overlord/test_cli_imports.py), and each of those may be an "
                          "extra that is not installed ([daemon], [system]: overlord/entry.py names it)",
    ("overlord.entry", "overlord.cli"): "the entry point turns a missing extra into one line (overlord/entry.py)",
    ("overlord.daemon", "managers"): "the daemon package serves any overlord with the [daemon] extra alone; the snap "
                                     "system's endpoints load the managers ([system] extra: PyYAML, cryptography) "
                                     "when they are called",
    ("overlord.daemon", "overlord.daemon.server"): "overlord.daemon's __getattr__: the server brings uvicorn",
    ("overlord.daemon", "overlord.daemon.access"): "overlord.daemon's __getattr__, beside the server",
    ("overlord.daemon", "overlord.daemon.limits"): "overlord.daemon's __getattr__, beside the server",
    ("engine", "engine.store.postgresql"): "the PostgreSQL backend loads when a PostgreSQL URL is opened "
                                           "([postgresql] extra)",
    ("overlord.changeinfo", "engine"): "the command line imports this serializer at its start, which stays "
                                       "light: the engine loads when a change is shown with its why-not reasons",
    ("engine.tracing", "engine._otel"): "OpenTelemetry loads only when tracing is asked for ([otel] extra): "
                                        "without it, `import engine` imports nothing of it",
    ("engine", "engine.store.postgresql_open"): "the PostgreSQL backend loads when a PostgreSQL URL is opened "
                                                "([postgresql] extra)",
    ("migrations.env", "engine.store.postgresql_open"): "the PostgreSQL backend loads when a PostgreSQL URL is "
                                                        "migrated ([postgresql] extra)",
}

#: TO_FIX are function-level imports in modules that other work is reshaping now (the engine's middle, the
#: PostgreSQL store); each is to be moved to the top of its module, and this list to shrink to nothing.
TO_FIX: set[tuple[str, str]] = set()

#: TYPED_CIRCLE is the one circle through `if TYPE_CHECKING:` imports that stays, by design (docs/concepts.md,
#: "The one typed circle"): the public State (one class in state.py and the two modules of its members,
#: statebooks.py and statemaking.py) hands out Change and Task handles, and the handles' public signatures name
#: their State and each other (chg.state, task.state, chg.tasks(), task.change()), as SQLAlchemy's Session and
#: Query do. At run time the imports point one way (state -> change -> task); only annotations point back, and
#: only to those three classes (TYPED_BACK).
TYPED_CIRCLE = ["engine.change", "engine.state", "engine.statebooks", "engine.statemaking", "engine.task"]
#: TYPED_BACK are the names the typed circle's `if TYPE_CHECKING:` imports may take from inside it.
TYPED_BACK = {"State", "Change", "Task"}

#: TO_SPLIT are modules over MAX_LINES that other work is reshaping now (the engine's middle); each is to be
#: split, and this list to shrink to nothing.
TO_SPLIT: set[str] = set()


@dataclass(frozen=True)
class Import:
    """Import is one import statement's edge: who imports what, where, and how."""

    importer: str
    target: str
    line: int
    in_function: bool
    names: tuple[str, ...]
    #: The statement as written.
    statement: str
    #: Whether it is under ``if TYPE_CHECKING:`` (for annotations only; it never runs).
    typing_only: bool = False


def _files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


FILES = _files()


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, tuple[str, ...]]]:
    """_targets are the project modules an import statement loads, with the names it takes from each."""
    if isinstance(node, ast.Import):
        return [(a.name, ()) for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if FILES[module].name != "__init__.py":
            parts = parts[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    out: list[tuple[str, tuple[str, ...]]] = []
    taken = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in FILES:
            out.append((sub, ()))
        else:
            taken.append(alias.name)
    if taken or not out:
        out.append((base, tuple(taken)))
    return out


def _imports() -> list[Import]:
    out = []
    for module, path in FILES.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)

        def visit(node: ast.AST, in_function: bool, module: str = module, skip: set[int] = skip) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    statement = ast.unparse(child)
                    for target, names in _targets(module, child):
                        if target.split(".")[0] in PACKAGES:
                            out.append(Import(module, target, child.lineno, in_function, names, statement,
                                              id(child) in skip))
                visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

        visit(tree, False)
    return out


IMPORTS = _imports()


def _in(module: str, prefix: str) -> bool:
    return prefix == "" or module == prefix or module.startswith(prefix + ".")


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """_circles are the strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def _edges(*, typing_too: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in FILES}
    for imp in IMPORTS:
        if imp.target in FILES and imp.target != imp.importer and (typing_too or not imp.typing_only):
            edges[imp.importer].add(imp.target)
    return edges


def test_no_circle_of_imports_even_through_imports_inside_functions() -> None:
    circles = _circles(_edges(typing_too=False))
    assert not circles, "import circles (a module of each imports the next, at the top or in a function):\n" + \
        "\n".join(" -> ".join(c) for c in circles)


def test_no_circle_even_through_type_annotations_but_the_state_and_its_handles() -> None:
    """A circle of `if TYPE_CHECKING:` imports runs never, but it is still two modules that need each other."""
    circles = [c for c in _circles(_edges(typing_too=True)) if c != TYPED_CIRCLE]
    assert not circles, "circles through type annotations (take a protocol of what is used, as " \
        "engine/session.py's StateFace or managers/snapstate/model.py's SnapManagerView):\n" + \
        "\n".join(" -> ".join(c) for c in circles)


def test_the_typed_circle_is_the_documented_one_and_names_only_the_handles() -> None:
    """The State, Change and Task name each other in annotations only, and only by those three names."""
    assert TYPED_CIRCLE in _circles(_edges(typing_too=True)), "the typed circle is gone or changed: update " \
        "TYPED_CIRCLE and docs/concepts.md (\"The one typed circle\")"
    inside = set(TYPED_CIRCLE)
    wrong = [f"{FILES[i.importer].relative_to(REPO)}:{i.line}: {i.statement}" for i in IMPORTS
             if i.typing_only and i.importer in inside and i.target in inside and not set(i.names) <= TYPED_BACK]
    assert not wrong, "annotations inside the typed circle name more than State, Change and Task:\n" + \
        "\n".join(wrong)


def test_the_circle_check_finds_a_circle_hidden_in_a_function() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(edges) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_are_only_the_documented_lazy_ones() -> None:
    wrong = []
    for imp in IMPORTS:
        if not imp.in_function or imp.typing_only:
            continue
        if any(_in(imp.importer, who) and _in(imp.target, what) for who, what in LAZY):
            continue
        if (imp.importer, imp.target) in TO_FIX:
            continue
        wrong.append(f"{FILES[imp.importer].relative_to(REPO)}:{imp.line}: {imp.statement}")
    assert not wrong, "imports inside functions (move them to the top, or document why they wait in LAZY):\n" + \
        "\n".join(wrong)


def test_to_fix_lists_only_imports_that_are_still_there() -> None:
    found = {(i.importer, i.target) for i in IMPORTS if i.in_function}
    assert found >= TO_FIX, f"done: strike {sorted(TO_FIX - found)} from TO_FIX"


@pytest.mark.parametrize(("layer", "never"), [("engine", "managers"), ("engine", "overlord"),
                                              ("managers", "overlord"), ("migrations", "managers"),
                                              ("migrations", "overlord")])
def test_lower_layers_never_import_higher_ones(layer: str, never: str) -> None:
    wrong = [f"{FILES[i.importer].relative_to(REPO)}:{i.line}: {i.statement}" for i in IMPORTS
             if _in(i.importer, layer) and _in(i.target, never)]
    assert not wrong, f"{layer} imports {never}:\n" + "\n".join(wrong)


def test_migrations_are_snapshots_that_import_no_live_code() -> None:
    wrong = [f"{FILES[i.importer].relative_to(REPO)}:{i.line}: {i.statement}" for i in IMPORTS
             if _in(i.importer, "migrations.versions")]
    assert not wrong, "a migration imports live code (copy what it needs into it):\n" + "\n".join(wrong)


def test_the_managers_take_the_engine_through_its_public_face_only() -> None:
    wrong = [f"{FILES[i.importer].relative_to(REPO)}:{i.line}: {i.statement}" for i in IMPORTS
             if _in(i.importer, "managers") and _in(i.target, "engine") and i.target != "engine"]
    assert not wrong, "managers import an engine module, not `from engine import ...`:\n" + "\n".join(wrong)


def test_no_module_takes_a_private_name_of_another() -> None:
    wrong = [f"{FILES[i.importer].relative_to(REPO)}:{i.line}: {i.statement}" for i in IMPORTS
             if i.target != i.importer and any(n.startswith("_") and not n.startswith("__") for n in i.names)]
    assert not wrong, "private names taken from another module (make them public, or keep them home):\n" + \
        "\n".join(wrong)


def _private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """_private_uses are the ``x._y`` of a module where x is not self or cls and the module defines no ``_y``."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            own.add(node.attr)
    return [(node.lineno, ast.unparse(node)) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) and node.attr not in own]


def test_no_module_uses_a_private_name_of_another_object() -> None:
    wrong = [f"{path.relative_to(REPO)}:{line}: {text}" for module, path in FILES.items()
             for line, text in _private_uses(ast.parse(path.read_text()))]
    assert not wrong, "private names of other modules' objects (hand the object what it needs, or give the owning " \
        "module a function for it):\n" + "\n".join(wrong)


def test_the_private_name_check_finds_one() -> None:
    tree = ast.parse("class A:\n    def __init__(self):\n        self._mine = 1\n"
                     "def f(a, st):\n    return a._mine + st._uow + a.__class__\n")
    assert _private_uses(tree) == [(5, "st._uow")]


def test_no_module_is_over_500_lines_but_those_to_split() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in FILES.values()}
    over = {p: n for p, n in sizes.items() if n > MAX_LINES}
    assert set(over) <= TO_SPLIT, "over 500 lines (split them): " + \
        ", ".join(f"{p} ({n})" for p, n in sorted(over.items()) if p not in TO_SPLIT)
    done = TO_SPLIT - set(over)
    assert not done, f"split already: strike {sorted(done)} from TO_SPLIT"


def test_no_manager_carries_an_empty_optional_method() -> None:
    """start_up, wait and stop are optional (engine.Manager asks only for ensure): none is written empty."""
    empty = []
    for module, path in FILES.items():
        if not _in(module, "managers"):
            continue
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name in ("start_up", "wait", "stop"):
                    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                    if all(isinstance(s, ast.Pass) for s in body):
                        empty.append(f"{path.relative_to(REPO)}:{fn.lineno}: {cls.name}.{fn.name}")
    assert not empty, "empty optional manager methods (leave them out):\n" + "\n".join(empty)
