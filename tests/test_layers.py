"""The packages' order (README, "Where things live"): shards, pipeline, features, model, then demo; each
imports only those before it, at the top of a module or inside a function alike."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["shards", "pipeline", "features", "model", "demo"]


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", ORDER)
def test_a_package_imports_only_the_ones_below_it(package):
    allowed = set(ORDER[:ORDER.index(package) + 1])
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, name in _imports(path)
             if name.split(".")[0] in ORDER and name.split(".")[0] not in allowed]
    assert not wrong, "\n".join(wrong)


def test_no_relative_imports():
    relative = [f"{path.relative_to(ROOT)}:{node.lineno}" for package in ORDER
                for path in sorted((ROOT / package).rglob("*.py"))
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, relative
