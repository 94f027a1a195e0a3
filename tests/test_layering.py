"""Imports point one way only (docs/architecture.md): a cycle, an upward import or a borrowed
private name is a design error.

Every import is read with ``ast`` (including imports inside functions, relative ones
resolved), so a lazy import cannot hide a circle.
"""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["secagg", "rfa", "dp", "membership", "protocols"]
ALLOWED = {
    "secagg": set(),
    "rfa": {"secagg"},
    "dp": {"secagg"},
    "membership": set(),
    "protocols": {"secagg", "rfa", "dp", "membership"},
}
# Layers inside protocols, lowest first: a part may import its own layer's parts and lower ones.
PROTOCOL_LAYERS = [
    {"registry", "report", "models", "data", "clients"},
    {"rules"},
    {"attacks"},
    {"simulation"},
    {"cronus"},
    {"runner"},
    {"integrations"},
    {"bench", "experiments"},
    {"cli"},
]


def _modules() -> Dict[str, Tuple[Path, bool]]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join(parts)] = (f, is_pkg)
    return mods


MODULES = _modules()


def _resolve(name: str) -> str:
    """The project module an import of ``name`` loads last (a package's ``__init__`` or a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _edges(mod: str, source: str = None, is_pkg: bool = None) -> List[Tuple[str, str]]:
    """(imported project module, imported name or '') for every import in ``mod``."""
    if source is None:
        path, is_pkg = MODULES[mod]
        source = path.read_text()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _resolve(a.name):
                    out.append((_resolve(a.name), ""))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            if full.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{full}.{a.name}"
                out.append((sub, "") if sub in MODULES else (_resolve(full), a.name))
    return [(t, n) for t, n in out if t and t != mod]


GRAPH = {m: sorted({t for t, _ in _edges(m)}) for m in MODULES}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_imports_only_lower_layers(pkg):
    bad = []
    for f in (ROOT / pkg).rglob("*.py"):
        for mod in _imports(f):
            if mod in PACKAGES and mod != pkg and mod not in ALLOWED[pkg]:
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def find_circle(graph: Dict[str, List[str]]):
    """A circle of ``graph`` as a list of nodes (first == last), or None: depth-first search
    for a back edge."""
    state: Dict[str, int] = {}        # 1: on the current path, 2: done
    path: List[str] = []

    def visit(m: str):
        state[m] = 1
        path.append(m)
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_circle():
    circle = find_circle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_module_borrows_a_private_name():
    """``from x import _name`` or an import of another package's ``_module`` reaches into
    someone else's internals: give the helper a public name where it is shared."""
    bad = []
    for mod in MODULES:
        for target, name in _edges(mod):
            private_name = name.startswith("_") and not name.startswith("__")
            owner = target.rpartition(".")[0] if not MODULES[target][1] else target
            private_module = any(p.startswith("_") and not p.startswith("__") for p in target.split("."))
            if private_name or (private_module and not mod.startswith(owner + ".")):
                bad.append(f"{mod} imports {target}{'.' + name if name else ''}")
    assert not bad, bad


def _layer(mod: str) -> int:
    part = mod.split(".")[1]
    return next(i for i, names in enumerate(PROTOCOL_LAYERS) if part in names)


def test_protocols_parts_import_downward():
    """Inside protocols: data/models/clients <- rules <- attacks <- simulation <- cronus <- runner
    <- integrations <- bench, experiments <- cli. The CLI is the only part above the experiments."""
    unknown = sorted({m.split(".")[1] for m in MODULES if m.startswith("protocols.")}
                     - set().union(*PROTOCOL_LAYERS))
    assert not unknown, f"protocols parts without a layer in this test: {unknown}"
    bad = [f"{m} imports {t}" for m in MODULES if m.startswith("protocols.") for t in GRAPH[m]
           if t.startswith("protocols.") and _layer(t) > _layer(m)]
    assert not bad, bad
    users_of_cli = [m for m in MODULES if "protocols.cli" in GRAPH[m]]
    assert not users_of_cli, users_of_cli


def test_every_package_init_says_what_it_holds():
    missing = [str(f.relative_to(ROOT)) for pkg in PACKAGES for f in (ROOT / pkg).rglob("__init__.py")
               if not (ast.get_docstring(ast.parse(f.read_text())) or "").strip()]
    assert not missing, missing


def test_modules_stay_small():
    big = {str(f.relative_to(ROOT)): n for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")
           if (n := len(f.read_text().splitlines())) > 600}
    assert not big, f"modules over 600 lines (split them by role): {big}"


def test_the_checks_see_a_planted_circle_and_a_lazy_private_import():
    assert find_circle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_circle({"a": ["b", "c"], "b": ["c"], "c": []}) is None
    # a relative import inside a function, resolved from protocols/simulation/params.py
    src = "def f():\n    from ..rules.common import _helper\n    from . import base\n"
    edges = _edges("protocols.simulation.params", src, False)
    assert ("protocols.rules.common", "_helper") in edges and ("protocols.simulation.base", "") in edges


def test_no_code_reads_shared():
    offenders = [str(f.relative_to(ROOT)) for pkg in PACKAGES + ["tests", "examples"]
                 for f in (ROOT / pkg).rglob("*.py")
                 if "../shared" in f.read_text() and f.name != "test_layering.py"]
    assert not offenders, offenders


def test_no_text_cites_the_design_file_users_do_not_have():
    offenders = [str(f.relative_to(ROOT)) for pkg in PACKAGES + ["tests", "examples", "docs"]
                 for f in list((ROOT / pkg).rglob("*.py")) + list((ROOT / pkg).rglob("*.md"))
                 if "DESIGN.md" in f.read_text() and f.name != "test_layering.py"]
    assert not offenders, offenders
