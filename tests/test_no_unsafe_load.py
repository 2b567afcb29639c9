"""Every ``torch.load`` in the repository passes ``weights_only=True`` explicitly.

Ruff has no rule for this; unpickling with ``weights_only=False`` can run code from the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".venv", ".git", "__pycache__", "node_modules"}


def _is_torch_load(node: ast.Call, load_aliases: set[str], torch_aliases: set[str]) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "load":
        owner = func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "serialization":
            owner = owner.value  # torch.serialization.load
        return isinstance(owner, ast.Name) and owner.id in torch_aliases
    return isinstance(func, ast.Name) and func.id in load_aliases


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """``file:line`` of each ``torch.load`` call without a literal ``weights_only=True``."""
    tree = ast.parse(source, filename)
    torch_aliases, load_aliases = {"torch"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_aliases |= {a.asname or a.name for a in node.names if a.name == "torch"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            load_aliases |= {a.asname or a.name for a in node.names if a.name == "load"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_torch_load(node, load_aliases, torch_aliases):
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"{filename}:{node.lineno}")
    return found


def python_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load('a.pth')",
        "import torch\ntorch.load('a.pth', map_location='cpu')",
        "import torch\ntorch.load('a.pth', weights_only=False)",
        "import torch\nflag = True\ntorch.load('a.pth', weights_only=flag)",
        "import torch\ntorch.load('a.pth', **{'weights_only': True})",
        "import torch as th\nth.load('a.pth')",
        "from torch import load\nload('a.pth')",
        "from torch import load as tload\ntload('a.pth')",
        "import torch\ntorch.serialization.load('a.pth')",
        "import torch\ndef f():\n    return [torch.load(p) for p in ('a', 'b')]",
    ],
)
def test_checker_flags_unsafe_calls(source):
    assert len(unsafe_loads(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load('a.pth', map_location='cpu', weights_only=True)",
        "import torch as th\nth.load('a.pth', weights_only=True)",
        "from torch import load\nload('a.pth', weights_only=True)",
        "import json\njson.load(open('a.json'))",
        "import numpy as np\nnp.load('a.npy')",
    ],
)
def test_checker_accepts_safe_or_unrelated_calls(source):
    assert unsafe_loads(source) == []


def test_repository_has_no_unsafe_torch_load():
    files = python_files()
    assert ROOT / "utils" / "checkpoint.py" in files  # the walk does see the package
    assert not any(".venv" in path.parts for path in files)
    found = []
    for path in files:
        found += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == [], "torch.load without weights_only=True at: " + ", ".join(found)
