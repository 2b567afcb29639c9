"""Packages import only downward, and no project import hides inside a function.

The rule (docs/layout.md): ``utils`` < ``inplace_abn`` < ``oc_module`` < ``network``;
``utils`` < ``dataset``; ``engine`` may use all of them; scripts, ``bench`` and ``tests`` on top.
The imports are read from the source with ``ast``, so the test needs no import side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each library package may import besides itself.
ALLOWED = {
    "utils": set(),
    "inplace_abn": {"utils"},
    "oc_module": {"inplace_abn", "utils"},
    "network": {"oc_module", "inplace_abn", "utils"},
    "dataset": {"utils"},
    "engine": {"network", "oc_module", "inplace_abn", "dataset", "utils"},
}
PACKAGES = set(ALLOWED)


def project_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(top-level project package, line, inside a function)`` of each import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES:
                    found.append((top, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_is_checked():
    for package in PACKAGES:
        assert package_files(package), f"{package}/ holds no Python files"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_packages_import_only_downward(package):
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in package_files(package)
        for top, line, _ in project_imports(path)
        if top != package and top not in ALLOWED[package]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_project_import_inside_a_function(package):
    hidden = [
        f"{path.relative_to(ROOT)}:{line} imports {top} inside a function"
        for path in package_files(package)
        for top, line, in_function in project_imports(path)
        if in_function
    ]
    assert not hidden, "\n".join(hidden)


def test_the_package_graph_has_no_cycle():
    graph = {
        package: {
            top
            for path in package_files(package)
            for top, _, _ in project_imports(path)
            if top != package
        }
        for package in PACKAGES
    }
    state: dict[str, str] = {}

    def visit(package: str, trail: list[str]) -> None:
        if state.get(package) == "done":
            return
        assert state.get(package) != "open", "cycle: " + " -> ".join([*trail, package])
        state[package] = "open"
        for dependency in sorted(graph[package]):
            visit(dependency, [*trail, package])
        state[package] = "done"

    for package in sorted(PACKAGES):
        visit(package, [])


def test_the_checker_sees_upward_and_hidden_imports(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import os\nfrom network import x\n\ndef f():\n    import engine.cli\n")
    assert project_imports(source) == [("network", 2, False), ("engine", 5, True)]
