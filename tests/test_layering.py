"""Imports point one way only (DESIGN.md): a cycle or an upward import is a design error."""
import ast
from pathlib import Path

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


def test_no_code_reads_shared():
    offenders = [str(f.relative_to(ROOT)) for pkg in PACKAGES + ["tests", "examples"]
                 for f in (ROOT / pkg).rglob("*.py")
                 if "../shared" in f.read_text() and f.name != "test_layering.py"]
    assert not offenders, offenders
